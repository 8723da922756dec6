"""FDSM: frequency decomposition at the encoder's front, dual-frequency attention
synthesis at the decoder's end."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..ops.frequency import POOL_SIZES


class ResidualBlock(nn.Module):
    """u + LReLU(conv3x3(LReLU(conv3x3(u)))), slope 0.01."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.act(self.conv2(self.act(self.conv1(u))))


class FrequencyDecomposition(nn.Module):
    """FDSM-D: split x into a low- and a high-frequency stream of the same shape.

        xL = x + R_L(LReLU_0.2(conv1x1_L(cat[a3, a5, a7])))
        xH = x + R_H(LReLU_0.2(conv1x1_H(cat[x - a3, x - a5, x - a7])))
    """

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        n = len(POOL_SIZES) * channels
        self.conv1x1_l = nn.Conv2d(n, channels, 1)
        self.conv1x1_h = nn.Conv2d(n, channels, 1)
        self.resblock_l = ResidualBlock(channels)
        self.resblock_h = ResidualBlock(channels)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = ops.multiscale_decompose(x)
        x_low = x + self.resblock_l(self.act(self.conv1x1_l(low)))
        x_high = x + self.resblock_h(self.act(self.conv1x1_h(high)))
        return x_low, x_high


class MaskUNet(nn.Module):
    """The attention mask's small U-Net; returns one channel of logits (the sigmoid is
    applied by the fused blend op).

    conv5x5 in->ch (skip1), pool; conv5x5 ch->2ch (skip2), pool; conv3x3 2ch->4ch
    (skip3), pool; conv3x3 4ch->4ch; then three times bilinear x2, cat[up, skip], conv;
    finally conv1x1 ch->1. Every conv but the last is followed by ReLU.
    """

    def __init__(self, in_ch: int = 6, ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 5, padding=2)
        self.conv2 = nn.Conv2d(ch, 2 * ch, 5, padding=2)
        self.conv3 = nn.Conv2d(2 * ch, 4 * ch, 3, padding=1)
        self.bottleneck = nn.Conv2d(4 * ch, 4 * ch, 3, padding=1)
        self.deconv1 = nn.Conv2d(8 * ch, 4 * ch, 3, padding=1)
        self.deconv2 = nn.Conv2d(6 * ch, 2 * ch, 5, padding=2)
        self.deconv3 = nn.Conv2d(3 * ch, ch, 5, padding=2)
        self.conv4 = nn.Conv2d(ch, 1, 1)

    @staticmethod
    def _up_cat(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([up, skip], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = F.relu(self.conv1(x))
        s2 = F.relu(self.conv2(F.max_pool2d(s1, 2)))
        s3 = F.relu(self.conv3(F.max_pool2d(s2, 2)))
        b = F.relu(self.bottleneck(F.max_pool2d(s3, 2)))
        d = F.relu(self.deconv1(self._up_cat(b, s3)))
        d = F.relu(self.deconv2(self._up_cat(d, s2)))
        d = F.relu(self.deconv3(self._up_cat(d, s1)))
        return self.conv4(d)


class FrequencySynthesis(nn.Module):
    """FDSM-S: x_hat = m * xL_hat + (1 - m) * xH_hat with m = sigmoid(MaskUNet(cat[xL, xH]))."""

    def __init__(self, channels: int = 3, ch: int = 32) -> None:
        super().__init__()
        self.masknet = MaskUNet(2 * channels, ch)

    def forward(self, x_low: torch.Tensor, x_high: torch.Tensor) -> torch.Tensor:
        logits = self.masknet(torch.cat([x_low, x_high], dim=1))
        return ops.frequency_blend(logits, x_low, x_high)
