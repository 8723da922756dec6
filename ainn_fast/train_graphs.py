"""A training step replayed from one CUDA graph (``ainn train --cuda-graphs``).

An eager training step of the paper configuration dispatches 2,500 (fused backends) to
3,200 (reference) ops in its forward and backward alone, each costing the host 5-20 us of
Python, dispatch and launch, so on a fast GPU the host can set the pace: on the H200 (2026-12-04) bf16
steps ran slower than fp32 ones, and the fused backends, which launch fewer but costlier
ops, were slower than the reference. Captured once, a step is one graph launch.

What a capture needs, and where it comes from:

- Static addresses: each batch is copied into one input buffer, and the losses are
  tensors every replay rewrites.
- No host syncs in the step: Adam with ``capturable=True`` (its step counts live on the
  device), ``clip_grad_norm_`` without its finiteness check, the 1x1 inverses by
  ``inv_ex`` (invertible.py), and losses read only after the replay.
- Kernels compiled and library workspaces (cuBLAS, cuDNN, cuSOLVER) created before the
  capture: the first ``WARMUP_STEPS`` steps run eagerly on the stream that then captures.
  cuSOLVER is asked for the 1x1 inverses throughout, since MAGMA's LU syncs with the host.
- Random numbers: ``torch.manual_seed`` before a replay reseeds the captured noise
  kernels as it reseeds eager ones (a replay reads the generator's seed and offset).
- Autocast without its cache of cast weights: a capture must not keep casts made outside it.
- The learning rate is a constant of the captured Adam kernels, so a changed rate (a
  milestone) captures the step again.

A capture that fails (an op that syncs, an unsupported library call) does not stop the
run: a warning gives the reason and the steps go on eagerly.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator, Sequence

import torch

WARMUP_STEPS = 3


@contextlib.contextmanager
def _cusolver_linalg() -> Iterator[None]:
    previous = torch.backends.cuda.preferred_linalg_library()
    torch.backends.cuda.preferred_linalg_library("cusolver")
    try:
        yield
    finally:
        torch.backends.cuda.preferred_linalg_library(previous)


class GraphedStep:
    """Call ``update(x)`` (forward, backward and optimizer steps on the batch ``x``,
    returning a dict of detached tensors) once per training step: eagerly for the first
    ``WARMUP_STEPS`` calls, then from a CUDA graph. ``optimizers`` are those ``update``
    steps (their learning rates decide when to capture again); Adam needs ``capturable=True``.
    The returned tensors are rewritten by the next call."""

    def __init__(self, update: Callable[[torch.Tensor], dict], optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.update, self.optimizers = update, list(optimizers)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_x: torch.Tensor | None = None
        self.out: dict | None = None
        self.captured_lrs: tuple | None = None
        self.eager_steps = 0
        self.failed: str | None = None  # why capturing failed; the steps then stay eager
        self.stream: torch.cuda.Stream | None = None

    def _lrs(self) -> tuple:
        return tuple(float(group["lr"]) for opt in self.optimizers for group in opt.param_groups)

    def __call__(self, x: torch.Tensor) -> dict:
        if x.device.type != "cuda":
            raise ValueError("GraphedStep needs a CUDA batch")
        if self.failed is not None:
            return self.update(x)
        with _cusolver_linalg():
            if self.stream is None:
                self.stream = torch.cuda.Stream(x.device)
            if self.graph is not None and (self._lrs() != self.captured_lrs or x.shape != self.static_x.shape):
                self.graph = None  # capture again with the new rate (or shape)
            if self.graph is None and self.eager_steps >= WARMUP_STEPS:
                self._capture(x)
                if self.failed is not None:  # eager from now on, off the stream that failed to capture
                    return self.update(x)
            if self.graph is not None:
                self.static_x.copy_(x)
                self.graph.replay()
                return self.out
            current = torch.cuda.current_stream(x.device)
            self.stream.wait_stream(current)
            with torch.cuda.stream(self.stream):
                out = self.update(x)
            current.wait_stream(self.stream)
            self.eager_steps += 1
            return out

    def _capture(self, x: torch.Tensor) -> None:
        self.static_x = x.clone()  # keeps x's memory format
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                out = self.update(self.static_x)
        except Exception as e:  # whatever it was, an eager step raises it again if it is a real error
            # Nothing ran during the failed capture, so weights and optimizer states are
            # untouched; the next eager step starts by setting the gradients to None.
            self.failed = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.static_x = None
            warnings.warn(
                f"--cuda-graphs: the training step could not be captured ({self.failed}); training goes on eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self.graph, self.out, self.captured_lrs = graph, out, self._lrs()
