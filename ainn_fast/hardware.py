"""What this machine runs fast: reduced-precision convolutions on the CPU."""

from __future__ import annotations

import torch

_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def slow_low_precision(dtype: torch.dtype, device: torch.device | str) -> str | None:
    """Why ``dtype`` convolutions would be slower than float32 on ``device``, or None.

    Two CPU cases, both asked of torch rather than guessed from the CPU's name:
    - oneDNN has no bf16/fp16 convolution kernels (CPUs without AVX-512): it converts
      around float32 ones. Measured on an AMD EPYC (AVX2): a lite training step with
      bf16 autocast took 140 s against 13.5 s in float32, a bf16 synthesis of a 512x512
      photo 11.0 s against 1.8 s.
    - oneDNN has AVX-512 bf16/fp16 kernels but the CPU exposes no AMX tiles: those
      kernels lose to its float32 ones. Measured on an Intel Xeon (family 6 model 207,
      AVX-512 with bf16 and fp16, no AMX flags in the VM), one thread: a 96-channel 3x3
      convolution 1.3-2.0x slower in bf16 and 1.4-1.6x in fp16, a lite training step
      with bf16 autocast 7.8 s against 5.4 s, the synthesis of a 512x512 photo 2.0 s
      against 1.2 s. bf16 paid on an earlier Xeon VM (1.76x faster training, 3x faster
      synthesis), presumably one that exposed AMX: oneDNN's bf16 speed-up is AMX's.
    """
    if torch.device(device).type != "cpu" or dtype not in _NAMES:
        return None
    name, isa = _NAMES[dtype], torch.backends.cpu.get_cpu_capability()
    if _onednn_fast(dtype) is False:
        return (
            f"this CPU ({isa}) has no fast {name} convolutions "
            f"(oneDNN says so): {name} runs several times slower than float32 here"
        )
    if _has_amx(dtype) is False:
        return (
            f"this CPU ({isa}) has no AMX {name} tiles: its AVX-512 {name} convolutions "
            f"run 1.3-2x slower than float32 here"
        )
    return None


def _onednn_fast(dtype: torch.dtype) -> bool | None:
    """oneDNN's answer for this CPU; None where this torch cannot say."""
    bf16 = dtype == torch.bfloat16
    return _ask(
        lambda: torch.ops.mkldnn._is_mkldnn_bf16_supported() if bf16 else torch.ops.mkldnn._is_mkldnn_fp16_supported()
    )


def _has_amx(dtype: torch.dtype) -> bool | None:
    """Whether the CPU exposes the AMX tiles oneDNN's fast ``dtype`` kernels need; None
    where this torch cannot say."""
    bf16 = dtype == torch.bfloat16
    return _ask(lambda: torch.cpu._is_amx_tile_supported() if bf16 else torch.cpu._is_amx_fp16_supported())


def _ask(query) -> bool | None:
    # These private torch probes move between releases: a missing one means "cannot say".
    try:
        return bool(query())
    except (AttributeError, RuntimeError):
        return None
