"""What this machine runs fast: reduced-precision convolutions on the CPU."""

from __future__ import annotations

import functools
import time

import torch

_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}
# Warn only past this slowdown, so that timing noise around "as fast" never warns.
SLOWER = 1.1
# The probe: one 3x3 convolution of the lite config's width, channels_last, at a
# decode-like size. A few milliseconds per dtype on a CPU core.
_PROBE_CHANNELS, _PROBE_SIZE, _PROBE_REPEATS = 96, 64, 5


def slow_low_precision(dtype: torch.dtype, device: torch.device | str) -> str | None:
    """Why ``dtype`` convolutions would be slower than float32 on ``device``, or None.

    Asked of torch and then measured, never guessed from the CPU's name or flags:
    - oneDNN has no bf16/fp16 convolution kernels (CPUs without AVX-512): it converts
      around float32 ones. Measured on an AMD EPYC (AVX2): a lite training step with
      bf16 autocast took 140 s against 13.5 s in float32.
    - oneDNN has kernels, but they lose to its float32 ones on this CPU. Whether they
      do is not in the flags: with AVX-512 bf16 and no AMX in both VMs, bf16 ran 1.3-2x
      slower on an Intel Xeon (family 6 model 207) and 2x faster on an AMD EPYC
      (family 26, Zen 5). So one convolution is timed both ways, once per process.
    """
    if torch.device(device).type != "cpu" or dtype not in _NAMES:
        return None
    name, isa = _NAMES[dtype], torch.backends.cpu.get_cpu_capability()
    if _onednn_fast(dtype) is False:
        return (
            f"this CPU ({isa}) has no fast {name} convolutions "
            f"(oneDNN says so): {name} runs several times slower than float32 here"
        )
    fp32_s, low_s = _conv_seconds(dtype, torch.get_num_threads())
    if low_s > SLOWER * fp32_s:
        return (
            f"{name} convolutions run {low_s / fp32_s:.1f}x slower than float32 on this CPU ({isa}; "
            f"measured: a {_PROBE_CHANNELS}-channel 3x3 convolution, {low_s * 1e3:.2f} ms against "
            f"{fp32_s * 1e3:.2f} ms)"
        )
    return None


def _onednn_fast(dtype: torch.dtype) -> bool | None:
    """oneDNN's answer for this CPU; None where this torch cannot say."""
    bf16 = dtype == torch.bfloat16
    try:  # private torch probes that move between releases: missing means "cannot say"
        return bool(
            torch.ops.mkldnn._is_mkldnn_bf16_supported() if bf16 else torch.ops.mkldnn._is_mkldnn_fp16_supported()
        )
    except (AttributeError, RuntimeError):
        return None


@functools.lru_cache(maxsize=None)
def _conv_seconds(dtype: torch.dtype, threads: int) -> tuple[float, float]:
    """Best-of-N seconds of the probe convolution in float32 and in ``dtype`` on this CPU
    with ``threads`` threads (the key of the cache: the answer can change with it)."""
    return _best_seconds(torch.float32), _best_seconds(dtype)


def _best_seconds(dtype: torch.dtype) -> float:
    c, s = _PROBE_CHANNELS, _PROBE_SIZE
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(c, c, 3, padding=1).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(1, c, s, s, generator=gen).to(dtype=dtype, memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        conv(x)  # the first call picks and builds oneDNN's kernel
        for _ in range(_PROBE_REPEATS):
            start = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - start)
    return best
