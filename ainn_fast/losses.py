"""Rate-distortion loss J = R + lambda * D and the lambda ladder."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from pytorch_msssim import ms_ssim

METRICS = ("mse", "ms-ssim")
MS_SSIM_MIN_SIDE = 161  # pytorch_msssim asserts min(H, W) > (11 - 1) * 2**4

# CompressAI's ladder, which the authors follow; index quality - 1.
LAMBDAS = {
    "mse": (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800),
    "ms-ssim": (2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.00),
}


def lambda_for(quality: int, metric: str = "mse") -> float:
    if metric not in LAMBDAS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if not 1 <= quality <= 8:
        raise ValueError(f"quality must be in 1..8, got {quality}")
    return LAMBDAS[metric][quality - 1]


def bpp(likelihoods: dict[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    """Rate in bits per pixel: sum of -log2 likelihoods over the number of pixels."""
    return sum(torch.log(lk).sum() for lk in likelihoods.values()) / (-math.log(2) * num_pixels)


class RateDistortionLoss(nn.Module):
    """MSE: lambda * 255^2 * MSE + bpp.  MS-SSIM: lambda * (1 - MS-SSIM) + bpp.

    Returns a dict with ``loss``, ``bpp_loss`` and ``mse_loss`` or ``ms_ssim_loss``
    (CompressAI's key names).
    """

    def __init__(self, lmbda: float, metric: str = "mse") -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        self.lmbda = lmbda
        self.metric = metric

    def forward(self, output: dict, target: torch.Tensor) -> dict[str, torch.Tensor]:
        n, _, h, w = target.shape
        return self.with_rate(bpp(output["likelihoods"], n * h * w), output["x_hat"], target)

    def with_rate(self, rate: torch.Tensor | float, x_hat: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The same loss for a rate known otherwise (bits per pixel of a real file)."""
        out = {"bpp_loss": rate if torch.is_tensor(rate) else torch.tensor(rate)}
        if self.metric == "mse":
            out["mse_loss"] = nn.functional.mse_loss(x_hat, target)
            out["loss"] = self.lmbda * 255**2 * out["mse_loss"] + out["bpp_loss"]
        else:
            out["ms_ssim_loss"] = ms_ssim(x_hat, target, data_range=1.0)
            out["loss"] = self.lmbda * (1 - out["ms_ssim_loss"]) + out["bpp_loss"]
        return out


def aux_loss(model: nn.Module) -> torch.Tensor:
    """The entropy bottleneck's quantile loss, for its own optimizer."""
    return model.aux_loss()
