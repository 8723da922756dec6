"""Helpers shared by the kernel modules: layouts, block sizes, grids.

Layout policy (one for all ops):
- Elementwise ops (coupling) run over flat storage. Their output is ``torch.empty_like``
  of the first input, which keeps that input's strides when it is dense (contiguous,
  channels_last or any dense permutation); other inputs are copied into the same strides
  only when theirs differ. So channels_last in means channels_last out with no copy, and a
  non-dense view is copied once into a dense buffer.
- Indexing ops (squeeze, group mean, pools, blend) take every tensor's strides as kernel
  arguments and never copy their inputs; they write outputs in the input's memory format
  (channels_last stays channels_last) and walk the output in its memory order so that
  stores are coalesced.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

# Read once: triton.jit decides at decoration time whether a kernel is interpreted.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

# The interpreter costs about 0.7 ms per program instance whatever its size, so it gets
# big blocks; on a GPU, blocks that give each warp a few vectorised loads.
ELEMENTWISE_BLOCK = 16384 if INTERPRETED else 1024
INDEX_BLOCK = 8192 if INTERPRETED else 512
STENCIL_BLOCK = 4096 if INTERPRETED else 256


def grid(n: int, block: int) -> tuple[int]:
    # Plain integer arithmetic: triton.cdiv costs about 2 us per call in Python.
    return ((n + block - 1) // block,)


def is_channels_last(t: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out NHWC (and not also plain contiguous)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """The format outputs of indexing ops take: channels_last stays channels_last."""
    return torch.channels_last if is_channels_last(t) else torch.contiguous_format


def new_4d(shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An output of ``shape`` in ``like``'s memory format (used by real and fake kernels alike)."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=memory_format(like))


def with_strides_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` (same shape as ``like``) in ``like``'s strides; a copy only if they differ.

    Strides of size-1 dimensions never matter, so a batch-1 channel slice of a wider
    tensor (the g and h halves of merged coupling sub-networks) is used in place."""
    strides = like.stride()
    if t.stride() == strides or all(a == b for a, b, n in zip(t.stride(), strides, like.shape) if n > 1):
        return t
    out = torch.empty_strided(like.shape, like.stride(), dtype=t.dtype, device=t.device)
    out.copy_(t)
    return out


def result_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    if all(t.dtype == dtype for t in tensors[1:]):
        return dtype  # the model's case, without promote_types calls
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def strides4(t: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(t.stride())  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# How the model calls a custom op.


def eager_path(
    op: Callable,
    fn: Callable,
    backward: Callable | None = None,
    setup_context: Callable | None = None,
) -> Callable:
    """The callable the registry uses for custom op ``op`` defined by Python function ``fn``,
    with its autograd formula (registered on ``op`` here, once for both paths).

    torch.library's dispatch of a Python custom op costs about 9 us a call without
    gradients and 19 us with them on the 2-core development CPU, more than the kernels take
    at the model's decoding shapes on a GPU, where every op waits on the host. So eagerly,
    on plain tensors, ``fn`` runs directly, inside an autograd.Function made of the same
    ``setup_context`` / ``backward`` when gradients are needed. While torch.compile or
    export traces, under a dispatch mode (FakeTensorMode, ...) or when any tensor subclass
    comes in (fake and functional tensors), ``op`` runs, so graphs hold one opaque op with
    its fake kernel, as before.
    """
    function = None
    if backward is not None:
        op.register_autograd(backward, setup_context=setup_context)
        function = _autograd_function(fn, backward, setup_context)

    def call(*args):
        if _traced(args):
            return op(*args)
        if function is not None and torch.is_grad_enabled():
            if any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
                return function.apply(*args)
        return fn(*args)

    call.__doc__ = fn.__doc__
    return call


def _traced(args: tuple) -> bool:
    """Whether a call must go through the custom op (see eager_path): about 0.5 us."""
    return (
        torch.compiler.is_compiling()
        or _get_current_dispatch_mode() is not None
        or any(type(a) is not torch.Tensor for a in args if isinstance(a, torch.Tensor))
    )


def _autograd_function(fn: Callable, backward: Callable, setup_context: Callable | None) -> type:
    # The ctx-in-forward form: a Function with a separate setup_context staticmethod cost
    # 13 us more per call (measured, torch 2.14, 2-core CPU).
    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            out = fn(*args)
            if setup_context is not None:
                setup_context(ctx, args, out)
            return out

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, *grads)

    Function.__name__ = Function.__qualname__ = f"{fn.__name__.lstrip('_')}_function"
    return Function
