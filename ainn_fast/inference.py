"""Faster transforms for coding (inference only): ``g_s`` for decoding, and ``g_a``,
which shares the invertible network with it, for encoding.

:func:`prepare_for_decoding` rewrites an eval-mode model in place: BatchNorm folded into
the convolution before it, the inverse 1x1 matrices cached (see
``InvConv1x1.inverse_weight``), both transforms channels_last on a CPU, and optionally
``g_s`` compiled and/or replayed from CUDA graphs. The training model and its modules'
code are left as they are.
"""

from __future__ import annotations

import copy
import warnings
from typing import Callable

import torch
import torch.nn as nn

from .hardware import slow_low_precision
from .models import AINN


# Decoded-image tolerance of a reduced-precision synthesis, measured on the shipped lite q3
# weights (tests/test_decode_fast.py): PSNR within 0.1 dB of float32, pixels within a few levels.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# The modules AINN.g_s runs, and those only AINN.g_a runs (the invertible network is both's).
SYNTHESIS_MODULES = ("cfrm", "inn", "pdm", "ms_cfrm", "fdsm_s")
ANALYSIS_MODULES = ("fdsm_d",)


def prepare_for_decoding(
    model: AINN,
    *,
    compile: bool = False,
    cuda_graphs: bool = False,
    precision: str = "fp32",
    channels_last: bool | None = None,
) -> AINN:
    """Make ``model.g_s`` fast for decoding; returns the same (modified) model.

    BatchNorm is folded into the preceding convolution (exact up to float32 rounding) and
    each level's inverse 1x1 matrix is computed once. ``channels_last`` (default: on when
    the model is on the CPU) runs the synthesis in NHWC end to end: oneDNN's convolutions
    are faster in it and the native kernels keep it without copies (768x512 lite, one
    thread: 1.15 s instead of 1.49 s); the analysis g_a too, since it shares the
    invertible network (fed NCHW, that network's NHWC weights made it slower than
    unprepared); on CUDA it is off by default: on an H200 the
    unprepared paper g_s ran 8 % faster in NHWC on the native backend but 9 % slower on
    the reference one (benchmarks/results/h200_2026-12-04.md); prepared, not measured yet.
    ``compile`` wraps ``g_s`` with
    ``torch.compile``; ``cuda_graphs`` replays it from one CUDA graph per input shape
    (CUDA inputs under ``no_grad`` only; otherwise eager), and the context steps of the
    latent decode and encode from two graphs (``padded_fronts=True``). The model must be in eval mode,
    and its weights must not change afterwards: folded and captured copies would go stale.
    The folded model's state_dict differs, so save checkpoints before preparing.
    """
    if model.training:
        raise ValueError("prepare_for_decoding needs an eval-mode model (BatchNorm folding uses running statistics)")
    if getattr(model, "_ainn_hash", None) is None:
        from .codec import weights_hash

        # The file header identifies the trained weights; folding rewrites the state_dict.
        model._ainn_hash = weights_hash(model)
    fold_batchnorm(model)
    with torch.no_grad():
        for level in model.inn.levels:  # fill the inverse caches now, not on the first decode
            level.conv1x1.inverse_weight()

    for name in ("g_s", "g_a"):  # drop earlier wrappers: preparing twice does not stack
        model.__dict__.pop(name, None)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    device = next(model.parameters()).device
    slow = slow_low_precision(PRECISIONS[precision], device)
    if slow:
        warnings.warn(f"precision {precision}: {slow}", RuntimeWarning, stacklevel=2)
    if channels_last is None:
        channels_last = device.type == "cpu"
    if channels_last:  # before the low-precision copies, which keep the format
        for name in SYNTHESIS_MODULES + ANALYSIS_MODULES:
            if getattr(model, name) is not None:
                getattr(model, name).to(memory_format=torch.channels_last)
    if precision != "fp32":
        _set_transform(model, "g_s", _LowPrecisionSynthesis(model, PRECISIONS[precision]))
    if channels_last:
        _set_transform(model, "g_s", _ChannelsLast(model.g_s))
        _set_transform(model, "g_a", _ChannelsLast(model.g_a))
    if cuda_graphs and not torch.cuda.is_available():
        warnings.warn("cuda_graphs=True but CUDA is not available: g_s stays eager", stacklevel=2)
        cuda_graphs = False
    # The context steps of decoding (and of encoding with this model) too, at one padded
    # shape (front_steps.py).
    model._ainn_front_graphs = cuda_graphs
    if compile or cuda_graphs:
        g_s: Callable = model.g_s  # the eager method (or the low-precision one)
        if compile:
            g_s = torch.compile(g_s)
        if cuda_graphs:
            g_s = _GraphedSynthesis(g_s, next(model.parameters()))
        _set_transform(model, "g_s", g_s)
    return model


def uses_front_graphs(model: AINN) -> bool:
    """Whether ``prepare_for_decoding(cuda_graphs=True)`` asked for the padded, graphed
    context steps (codec's encode and decode pass it on as ``padded_fronts``)."""
    return getattr(model, "_ainn_front_graphs", False)


def _set_transform(model: AINN, name: str, fn: Callable) -> None:
    # An instance attribute shadows the method; object.__setattr__ because nn.Module's
    # would file a module under _modules, where lookup never reaches past the method.
    object.__setattr__(model, name, fn)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d in an ``nn.Sequential`` into
    that convolution (float64 math, then a conv with bias) and replace it by Identity.
    Returns the number folded."""
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(seq)):
            conv, bn = seq[i - 1], seq[i]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                if bn.training or bn.running_mean is None:
                    raise ValueError(f"cannot fold {bn}: it uses batch statistics (training mode or no running stats)")
                _fold(conv, bn)
                seq[i] = nn.Identity()
                folded += 1
    return folded


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    # bn(conv(x)) = gamma * (W x + b - mean) / sqrt(var + eps) + beta = (s W) x + (beta + s (b - mean))
    w = conv.weight.double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    conv.weight.copy_(w * scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter((beta + scale * (b - mean)).to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)


class _ChannelsLast:
    """``fn`` (g_s or g_a) fed channels_last; its output comes back contiguous."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x.contiguous(memory_format=torch.channels_last)).contiguous()


class _LowPrecisionSynthesis(nn.Module):
    """``AINN.g_s`` run on copies of the synthesis modules cast to ``dtype``, returning
    float32. Copies, because the invertible network is shared with ``g_a`` and the
    entropy model must stay float32: its weights define the fixed-point coder. Made on
    the model's device (prepare after moving the model)."""

    def __init__(self, model: AINN, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        for name in SYNTHESIS_MODULES:
            module = getattr(model, name)
            setattr(self, name, copy.deepcopy(module).to(dtype) if module is not None else None)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return AINN.g_s(self, y_hat.to(self.dtype)).float()  # self has g_s's modules


class _GraphedSynthesis:
    """``fn`` replayed from one CUDA graph per (shape, dtype, device) of its input.

    Graphs read the weights by address: they are dropped when ``anchor`` (a parameter)
    moves, e.g. after ``model.to(...)``. Each graph keeps its own memory pool.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], anchor: torch.Tensor) -> None:
        self.fn, self.anchor, self.anchor_ptr = fn, anchor, anchor.data_ptr()
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, y_hat: torch.Tensor) -> torch.Tensor:
        if y_hat.device.type != "cuda":
            warnings.warn("CUDA-graphed g_s called on a non-CUDA tensor: running eager", stacklevel=2)
            return self.fn(y_hat)
        if torch.is_grad_enabled():  # a replay records no autograd graph
            return self.fn(y_hat)
        if self.anchor.data_ptr() != self.anchor_ptr:  # the model moved: recapture
            self.graphs.clear()
            self.anchor_ptr = self.anchor.data_ptr()
        # Normal (non-inference) tensors, so that static buffers captured under
        # inference_mode can still be written to outside it.
        with torch.inference_mode(False), torch.no_grad():
            key = (tuple(y_hat.shape), y_hat.dtype, y_hat.device)
            if key not in self.graphs:
                self.graphs[key] = self._capture(y_hat)
            graph, static_in, static_out = self.graphs[key]
            static_in.copy_(y_hat)
            graph.replay()
            return static_out.clone()  # the next replay overwrites static_out

    def _capture(self, y_hat: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_in = y_hat.clone()
        # Warm up on a side stream (lazy init, cuDNN autotuning, the inverse caches) so
        # that nothing inside the capture allocates outside the graph's pool or syncs.
        stream = torch.cuda.Stream(y_hat.device)
        stream.wait_stream(torch.cuda.current_stream(y_hat.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.fn(static_in)
        torch.cuda.current_stream(y_hat.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_in)
        return graph, static_in, static_out
