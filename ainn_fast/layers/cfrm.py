"""CFRM: cascaded feature recovery from the quantized latent back to a 768-channel stream."""

from __future__ import annotations

import torch
import torch.nn as nn

from .. import ops


class DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, growth, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.relu(self.conv(x))], dim=1)


class CFRM(nn.Module):
    """Dense cascade: layer i maps M * (1 + i) channels to M (conv3x3 + ReLU) and appends
    them; out = skip(y) + lff(dense stack), both 1x1 convolutions to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int = 768, num_layers: int | None = None) -> None:
        super().__init__()
        num_layers = out_ch // in_ch - 1 if num_layers is None else num_layers
        self.layers = nn.Sequential(*(DenseLayer(in_ch * (1 + i), in_ch) for i in range(num_layers)))
        self.lff = nn.Conv2d(in_ch * (num_layers + 1), out_ch, 1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.skip(y) + self.lff(self.layers(y))


class MultiScaleCFRM(nn.Module):
    """MS-CFRM (optional): a second recovery from y_hat at the level-3 scale.

    A CFRM per stream produces 4C channels at H/16, unsqueezed (A-INN order) to C
    channels at H/8 and added to the stream entering the level-3 inverse. Its output
    convolutions start at zero, so enabling it starts as the identity.
    """

    def __init__(self, in_ch: int, channels: int = 192, num_layers: int = 2) -> None:
        super().__init__()
        self.recover = nn.ModuleList(CFRM(in_ch, 4 * channels, num_layers) for _ in range(2))
        for cfrm in self.recover:
            for conv in (cfrm.lff, cfrm.skip):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, y_hat: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r1, r2 = (ops.unsqueeze2x2(m(y_hat)) for m in self.recover)
        return x1 + r1, x2 + r2
