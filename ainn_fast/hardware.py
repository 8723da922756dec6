"""What this machine runs fast: reduced-precision convolutions on the CPU."""

from __future__ import annotations

import torch

_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def slow_low_precision(dtype: torch.dtype, device: torch.device | str) -> str | None:
    """Why ``dtype`` convolutions would be slower than float32 on ``device``, or None.

    oneDNN has fast bf16/fp16 convolutions only on CPUs with AVX-512 (its own check,
    asked through torch); elsewhere it converts around float32 kernels. Measured on an AMD
    EPYC (AVX2): a lite training step with bf16 autocast took 140 s against 13.5 s in
    float32, and a bf16 synthesis of a 512x512 photo 11.0 s against 1.8 s.
    """
    if torch.device(device).type != "cpu" or dtype not in _NAMES or _onednn_fast(dtype) is not False:
        return None
    name = _NAMES[dtype]
    return (
        f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no fast {name} convolutions "
        f"(oneDNN says so): {name} runs several times slower than float32 here"
    )


def _onednn_fast(dtype: torch.dtype) -> bool | None:
    """oneDNN's answer for this CPU; None where this torch cannot say."""
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return None
