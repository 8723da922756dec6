"""PDM: progressive denoising U-Nets applied between the decoder's inverse levels."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class DoubleConv(nn.Module):
    """[conv3x3 (no bias) -> BatchNorm -> ReLU] x 2."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None) -> None:
        super().__init__()
        mid_ch = mid_ch or out_ch
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_ch, mid_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Up(nn.Module):
    """Bilinear x2 (align_corners=True), pad to the skip's size, cat[skip, up], DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_ch, out_ch, in_ch // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        if dy or dx:
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class DenoiseUNet(nn.Module):
    """U-Net body with widths w0..wn: inc -> w0, n downs (maxpool + DoubleConv), n ups.

    The deepest width repeats the one before it (w_n == w_{n-1}), as in a bilinear U-Net:
    up j maps 2 * w_{n-j} channels to w_{n-j-1}, the last one to w0 / 2.
    """

    def __init__(self, channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        w = list(widths)
        n = len(w) - 1
        if n < 1 or w[n] != w[n - 1]:
            raise ValueError(f"DenoiseUNet widths must end with a repeated width, got {w}")
        self.inc = DoubleConv(channels, w[0])
        self.downs = nn.ModuleList(DoubleConv(w[i - 1], w[i]) for i in range(1, n + 1))
        outs = [w[n - j - 1] for j in range(1, n)] + [w[0] // 2]
        self.ups = nn.ModuleList(Up(2 * w[n - j], outs[j - 1]) for j in range(1, n + 1))
        self.outc = nn.Conv2d(outs[-1], channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for up in self.ups:
            h = up(h, skips.pop())
        return self.outc(h)


class ProgressiveDenoiser(nn.Module):
    """One denoising step on one stream: x <- x + step * U(x).

    With ``unet_identity=True`` (default, the authors' behaviour) U(x) = body(x) + x, so a
    step is x <- (1 + step) x + step * body(x); with False, U(x) = body(x).
    """

    def __init__(self, channels: int, widths: Sequence[int], step: float = 0.2, unet_identity: bool = True) -> None:
        super().__init__()
        self.unet = DenoiseUNet(channels, widths)
        self.step = step
        self.unet_identity = unet_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.unet(x)
        if self.unet_identity:
            u = u + x
        return x + self.step * u
