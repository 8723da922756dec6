"""Encoder-side latent refinement: spend encoding time, not bits or decoder changes.

The analysis transform g_a gives a good latent for the average image, not the best one
for this image (the amortization gap). ``refine_latent`` moves y, and the hyper-latent z
(h_a(y) at the start), by gradient descent on the model's own rate-distortion loss for
this image, J = R + lambda * D, with the proxies the weights were trained with
(``quantization="mixed"``: noise for the rates, rounding straight through for the
context, the synthesis and h_s). The decoder is untouched: a refined file is an ordinary
file, decoded bit-exactly by any decoder.

The steps' synthesis, forward and backward, is most of their time. Where bf16
convolutions are fast (``precision="auto"``: a GPU with bf16, or a CPU that
hardware.slow_low_precision times as fast) it runs under bf16 autocast, the entropy
model staying in float32: on the Zen 4 VM, 30 steps took 37-40 s instead of 58-63 s and
lowered the files' J as much (README). The gradient only steers y; which latent is kept
is decided on real files in float32, so precision never makes a file worse.

``rd_cost`` measures J on the real file (its bytes and the 8-bit image a decoder
reconstructs). The proxies are not the file: on some photos J of the files falls for a
while and then rises again. So the codec takes snapshots of y along the way and keeps,
of them and the unrefined y, the one whose file costs least: refinement never makes a
file worse by the model's own measure.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .hardware import slow_low_precision
from .losses import RateDistortionLoss, bpp, lambda_for
from .models import AINN

# Adam's first learning rate on y and z (cosine decay to 0 over the steps), by quality.
# Measured on scikit-image's photos, 30 steps (docs/training-history.md): at q1 0.02 beat
# 0.01 and 0.04, at q3 0.01, 0.03 and 0.04; at q6 0.1 beat 0.02, 0.04 and 0.06 and was level
# with 0.15. Linear between q3 and q6, held at 0.1 above (not measured).
LEARNING_RATES = {1: 0.02, 2: 0.02, 3: 0.02, 4: 0.047, 5: 0.073, 6: 0.1, 7: 0.1, 8: 0.1}
# As in the shipped weights' training: y_hat's means near a file's. Against 4 passes, 8 %
# more time a step; on rocket (q1) the files' J fell 3.0 % instead of 1.6 % (30 steps).
CONTEXT_PASSES = 16
LIKELIHOOD_FLOOR = 1e-9  # CompressAI's likelihood bound
PRECISIONS = ("auto", "fp32", "bf16")  # of the steps' synthesis


def synthesis_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of the refinement's synthesis (None: float32). ``auto``: bf16
    on a GPU that has it and on a CPU whose bf16 convolutions are not slower than float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"refinement precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp32" or (device.type == "cuda" and not torch.cuda.is_bf16_supported()):
        return None
    if precision == "bf16" or slow_low_precision(torch.bfloat16, device) is None:
        return torch.bfloat16
    return None


def rd_loss(model: AINN) -> RateDistortionLoss:
    """The loss the model was trained for (its quality and metric)."""
    return RateDistortionLoss(lambda_for(int(model.quality), model.metric), model.metric)


def refine_latent(
    model: AINN,
    x: torch.Tensor,
    y: torch.Tensor,
    size: tuple[int, int],
    steps: int,
    lr: float | None = None,
    seed: int = 0,
    progress: Callable | None = None,
    snapshots: int = 1,
    precision: str = "auto",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` Adam steps on y (1, M, h, w), and on z from h_a(y), for the padded image
    x (1, 3, H, W) whose top-left ``size`` = (height, width) is the real image.
    Deterministic for a seed (the rate's noise comes from a generator of its own). Returns
    up to ``snapshots`` distinct (y, z) pairs, detached: after each of as many equal parts
    of the steps, the last after all of them (or, where a loss turned non-finite, the last
    pair before it). ``lr``: the first step's (default: :data:`LEARNING_RATES` of the
    model's quality). ``precision``: the synthesis's (:func:`synthesis_dtype`)."""
    if steps < 0 or snapshots < 1:
        raise ValueError(f"refinement needs steps >= 0 and snapshots >= 1, got {steps} and {snapshots}")
    dtype = synthesis_dtype(precision, x.device)
    autocast = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    marks = {round(steps * k / snapshots) for k in range(1, snapshots + 1)} - {0}
    taken: list[tuple[torch.Tensor, torch.Tensor]] = []
    done = 0  # steps taken
    height, width = size
    target = x[..., :height, :width]
    criterion = rd_loss(model)
    with torch.no_grad():
        z = model.h_a(y)
    y = y.detach().clone().requires_grad_(True)
    z = z.requires_grad_(True)
    if lr is None:
        lr = LEARNING_RATES[int(model.quality)]
    optimizer = torch.optim.Adam([y, z], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    frozen = [p for p in model.parameters() if p.requires_grad]
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        for p in frozen:
            p.requires_grad_(False)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for _ in progress(range(steps)) if progress else range(steps):
                # forward_latent in two halves: the rate in float32, the synthesis at ``dtype``
                y_hat, likelihoods = model.entropy_latent(y, "mixed", CONTEXT_PASSES, training=True, z=z)
                with autocast:
                    x_hat = model.g_s(y_hat)
                x_hat = x_hat.float()[..., :height, :width].clamp(0, 1)  # what a decoder shows
                # The shipped fp16 weights hold the likelihood bound 1e-9 as 0 (checkpoint.
                # restore_bounds); a zero likelihood would make the rate infinite.
                likelihoods = {k: v.clamp_min(LIKELIHOOD_FLOOR) for k, v in likelihoods.items()}
                loss = criterion.with_rate(bpp(likelihoods, height * width), x_hat, target)["loss"]
                if not torch.isfinite(loss):  # keep the last good latent, never a NaN one
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                done += 1
                if done in marks:
                    taken.append((y.detach().clone(), z.detach().clone()))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    if done not in marks:  # stopped early (or no steps): the last good latents
        taken.append((y.detach(), z.detach()))
    return taken


def rd_cost(model: AINN, payload_bytes: int, x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """J of a real file: its payload's bits per pixel and the distortion of the 8-bit
    reconstruction ``x_hat`` against ``x`` (both (1, 3, height, width) in [0, 1])."""
    n, _, height, width = x.shape
    x8 = torch.round(x_hat.clamp(0, 1) * 255) / 255
    return float(rd_loss(model).with_rate(8 * payload_bytes / (n * height * width), x8, x)["loss"])
