"""Context models of the entropy model beyond CompressAI's serial masked convolution."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def anchors(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Checkerboard anchors (h, w) bool: positions with i + j even, decoded first without context."""
    i = torch.arange(height, device=device)[:, None]
    j = torch.arange(width, device=device)[None, :]
    return (i + j) % 2 == 0


class CheckerboardContext(nn.Conv2d):
    """Two-pass checkerboard context (He et al., CVPR 2021) with a 5x5 kernel.

    Anchors get no context (output 0); every other position sees the anchors among its
    5x5 neighbours, the taps at odd offsets, which are all anchors. The ``mask`` buffer
    holds those taps, as CompressAI's ``MaskedConv2d`` holds its causal ones, so the
    fixed-point coder reads either module the same way.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 5) -> None:
        super().__init__(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        odd = anchors(kernel_size, kernel_size).logical_not().to(torch.float32)
        self.register_buffer("mask", odd.expand_as(self.weight).clone())

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        ctx = F.conv2d(y_hat, self.weight * self.mask, self.bias, padding=self.padding)
        return ctx * (~anchors(*y_hat.shape[-2:], y_hat.device)).to(ctx.dtype)
