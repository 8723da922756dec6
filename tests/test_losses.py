import math

import pytest
import torch

from ainn_fast.losses import LAMBDAS, RateDistortionLoss, bpp, lambda_for


def test_lambda_ladder():
    assert lambda_for(1, "mse") == 0.0018 and lambda_for(8, "mse") == 0.18
    assert lambda_for(1, "ms-ssim") == 2.40 and lambda_for(8, "ms-ssim") == 220.0
    assert all(len(v) == 8 and list(v) == sorted(v) for v in LAMBDAS.values())
    with pytest.raises(ValueError, match="quality"):
        lambda_for(0)
    with pytest.raises(ValueError, match="unknown metric"):
        lambda_for(1, "l1")


def test_bpp_counts_bits_over_pixels():
    # Likelihood 1/2 is one bit, 1/4 two bits: 4 * 1 + 2 * 2 = 8 bits over 4 pixels.
    lk = {"y": torch.full((1, 1, 2, 2), 0.5), "z": torch.full((1, 2, 1, 1), 0.25)}
    assert bpp(lk, 4).item() == pytest.approx(2.0)


def test_mse_loss_is_the_lagrangian():
    x = torch.rand(2, 3, 8, 8)
    x_hat = x + 0.1
    lk = {"y": torch.full((2, 4, 2, 2), 0.5), "z": torch.full((2, 4, 1, 1), 0.5)}
    out = RateDistortionLoss(0.0130, "mse")({"x_hat": x_hat, "likelihoods": lk}, x)
    rate = (2 * 4 * 4 + 2 * 4) / (2 * 8 * 8)
    assert out["bpp_loss"].item() == pytest.approx(rate)
    assert out["mse_loss"].item() == pytest.approx(0.01, rel=1e-4)
    assert out["loss"].item() == pytest.approx(0.0130 * 255**2 * 0.01 + rate, rel=1e-4)


def test_ms_ssim_loss_is_the_lagrangian(astronaut):
    x = astronaut[:, :, :256, :256]
    lk = {"y": torch.full((1, 1, 4, 4), 0.5)}
    loss = RateDistortionLoss(8.73, "ms-ssim")
    same = loss({"x_hat": x, "likelihoods": lk}, x)
    assert same["ms_ssim_loss"].item() == pytest.approx(1.0, abs=1e-5)
    assert same["loss"].item() == pytest.approx(16 / (256 * 256), abs=1e-4)
    noisy = loss({"x_hat": (x + 0.05 * torch.randn_like(x)).clamp(0, 1), "likelihoods": lk}, x)
    assert noisy["ms_ssim_loss"].item() < 0.99
    expected = 8.73 * (1 - noisy["ms_ssim_loss"].item()) + 16 / (256 * 256)
    assert noisy["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert not math.isnan(noisy["loss"].item())
