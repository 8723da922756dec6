"""Triton kernels of ainn_fast, installed as ``ainn_fast.kernels``: the ``"triton"`` backend.

One module per op family (``coupling``, ``squeeze``, ``frequency``), each holding its
kernels (forward and fused backward), launch wrappers, the ``torch.ops.ainn_fast.triton_*``
custom ops (autograd and fake implementations, so ``torch.compile`` can trace them) and
the registration of the ``"triton"`` implementation of the matching ``ainn_fast.ops`` entry.

Importing this package needs triton (an ImportError leaves the backend unregistered);
``ainn_fast.ops`` imports it with that guard. Kernels run on CUDA tensors, and on CPU
tensors only under ``TRITON_INTERPRET=1``, which must be set before this package is
imported because ``triton.jit`` decides at decoration time whether to interpret.
"""

from __future__ import annotations

import os

import torch
import triton  # noqa: F401  (fail here, as an ImportError, when triton is missing)

from ainn_fast.backend import register_backend

from . import coupling, frequency, squeeze  # noqa: F401  (registers the ops)
from ._common import INTERPRETED

__all__ = ["coupling", "frequency", "squeeze", "probe"]


def probe(device_type: str) -> str | None:
    """Why the triton backend cannot run on ``device_type`` now; None when it can."""
    if device_type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA device is available"
    if device_type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "Triton runs on CPU tensors only with TRITON_INTERPRET=1"
        if not INTERPRETED:
            return "TRITON_INTERPRET=1 was set after ainn_fast.kernels was imported; set it before importing ainn_fast"
        return None
    return f"Triton kernels do not run on {device_type} tensors"


register_backend("triton", probe)
