"""Fused elementwise tail of the affine coupling, forward and inverse, with fused backward.

    forward:  y = x * exp(s(g)) + h          s(g) = clamp * (2 sigmoid(g) - 1)
    inverse:  x = (y - h) * exp(-s(g))

Each direction is one read of (x, g, h) and one write. The backward passes recompute
sigmoid and exp from the saved inputs instead of storing the scale (one tensor less
kept alive per coupling for training) and produce every input gradient in one pass.
Arithmetic is fp32 whatever the storage dtype (fp16/bf16 in, same dtype out).

Layout: flat over storage; the output copies x's strides (see ``_common``), so
channels_last inputs run without copies and non-dense views are copied once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ainn_fast.ops.coupling import affine_coupling, affine_coupling_inverse

from ._common import ELEMENTWISE_BLOCK, eager_path, grid, result_dtype, with_strides_of


@triton.jit
def _scale(g, clamp):
    """(sigmoid(g), s(g)) in fp32; sigmoid written with tl.exp (no libdevice), from
    exp(-|g|) so that it never overflows for saturated logits."""
    e = tl.exp(-tl.abs(g))
    sig = tl.where(g >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return sig, clamp * (2.0 * sig - 1.0)


@triton.jit
def _coupling_kernel(a_ptr, g_ptr, h_ptr, out_ptr, n, clamp, INVERSE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    h = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    _, s = _scale(g, clamp)
    if INVERSE:
        out = (a - h) * tl.exp(-s)
    else:
        out = a * tl.exp(s) + h
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _coupling_backward_kernel(dy_ptr, x_ptr, g_ptr, dx_ptr, dg_ptr, n, clamp, BLOCK: tl.constexpr):
    # y = x e + h, e = exp(s):  dx = dy e,  dg = dy x e s'(g),  s' = 2 clamp sig (1 - sig)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig, s = _scale(g, clamp)
    dx = dy * tl.exp(s)
    dg = dx * x * (2.0 * clamp) * sig * (1.0 - sig)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dg_ptr + offs, dg.to(dg_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _coupling_inverse_backward_kernel(
    dx_ptr, x_ptr, g_ptr, dy_ptr, dg_ptr, dh_ptr, n, clamp, BLOCK: tl.constexpr
):
    # x = (y - h) e', e' = exp(-s):  dy = dx e',  dh = -dy,  dg = -dx x s'(g)
    # (x is the saved output, so y - h is never re-read.)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dx = tl.load(dx_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig, s = _scale(g, clamp)
    dy = dx * tl.exp(-s)
    dg = -dx * x * (2.0 * clamp) * sig * (1.0 - sig)
    tl.store(dy_ptr + offs, dy.to(dy_ptr.dtype.element_ty), mask=mask)
    tl.store(dg_ptr + offs, dg.to(dg_ptr.dtype.element_ty), mask=mask)
    tl.store(dh_ptr + offs, (-dy).to(dh_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------
# Custom ops, each defined by a plain function that eager_path also calls directly. Real
# and fake implementations allocate through the same empty_like calls so their strides
# agree (torch.compile and opcheck compare them).


def _forward(a: torch.Tensor, g: torch.Tensor, h: torch.Tensor, clamp: float, inverse: bool) -> torch.Tensor:
    out = torch.empty_like(a, dtype=result_dtype(a, g, h))
    n = out.numel()
    if n:
        a, g, h = (with_strides_of(t, out) for t in (a, g, h))
        block = ELEMENTWISE_BLOCK
        _coupling_kernel[grid(n, block)](a, g, h, out, n, clamp, INVERSE=inverse, BLOCK=block)
    return out


def _affine_coupling(x: torch.Tensor, g: torch.Tensor, h: torch.Tensor, clamp: float) -> torch.Tensor:
    """y = x * exp(clamp * (2 sigmoid(g) - 1)) + h; x, g, h of one shape."""
    return _forward(x, g, h, clamp, inverse=False)


def _affine_coupling_inverse(y: torch.Tensor, g: torch.Tensor, h: torch.Tensor, clamp: float) -> torch.Tensor:
    """x = (y - h) * exp(-clamp * (2 sigmoid(g) - 1)); y, g, h of one shape."""
    return _forward(y, g, h, clamp, inverse=True)


def _affine_coupling_backward(
    dy: torch.Tensor, x: torch.Tensor, g: torch.Tensor, clamp: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dx, dL/dg) of affine_coupling, recomputing the scale from g."""
    dx = torch.empty_like(x)
    dg = torch.empty_like(x, dtype=g.dtype)
    n = dx.numel()
    if n:
        dy, x, g = (with_strides_of(t, dx) for t in (dy, x, g))
        block = ELEMENTWISE_BLOCK
        _coupling_backward_kernel[grid(n, block)](dy, x, g, dx, dg, n, clamp, BLOCK=block)
    return dx, dg


def _affine_coupling_inverse_backward(
    dx: torch.Tensor, x: torch.Tensor, g: torch.Tensor, y_dtype: torch.dtype, h_dtype: torch.dtype, clamp: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dy, dL/dg, dL/dh) of affine_coupling_inverse from its output x."""
    dy = torch.empty_like(x, dtype=y_dtype)
    dg = torch.empty_like(x, dtype=g.dtype)
    dh = torch.empty_like(x, dtype=h_dtype)
    n = dy.numel()
    if n:
        dx, x, g = (with_strides_of(t, dy) for t in (dx, x, g))
        block = ELEMENTWISE_BLOCK
        _coupling_inverse_backward_kernel[grid(n, block)](dx, x, g, dy, dg, dh, n, clamp, BLOCK=block)
    return dy, dg, dh


triton_affine_coupling = torch.library.custom_op("ainn_fast::triton_affine_coupling", mutates_args=())(
    _affine_coupling
)
triton_affine_coupling_inverse = torch.library.custom_op(
    "ainn_fast::triton_affine_coupling_inverse", mutates_args=()
)(_affine_coupling_inverse)
triton_affine_coupling_backward = torch.library.custom_op(
    "ainn_fast::triton_affine_coupling_backward", mutates_args=()
)(_affine_coupling_backward)
triton_affine_coupling_inverse_backward = torch.library.custom_op(
    "ainn_fast::triton_affine_coupling_inverse_backward", mutates_args=()
)(_affine_coupling_inverse_backward)


@triton_affine_coupling.register_fake
def _(x, g, h, clamp):
    return torch.empty_like(x, dtype=result_dtype(x, g, h))


@triton_affine_coupling_inverse.register_fake
def _(y, g, h, clamp):
    return torch.empty_like(y, dtype=result_dtype(y, g, h))


@triton_affine_coupling_backward.register_fake
def _(dy, x, g, clamp):
    return torch.empty_like(x), torch.empty_like(x, dtype=g.dtype)


@triton_affine_coupling_inverse_backward.register_fake
def _(dx, x, g, y_dtype, h_dtype, clamp):
    return torch.empty_like(x, dtype=y_dtype), torch.empty_like(x, dtype=g.dtype), torch.empty_like(x, dtype=h_dtype)


coupling_backward = eager_path(triton_affine_coupling_backward, _affine_coupling_backward)
coupling_inverse_backward = eager_path(triton_affine_coupling_inverse_backward, _affine_coupling_inverse_backward)


def _setup_forward(ctx, inputs, output):
    x, g, h, clamp = inputs
    ctx.save_for_backward(x, g)
    ctx.clamp, ctx.h_dtype = clamp, h.dtype


def _backward_forward(ctx, dy):
    x, g = ctx.saved_tensors
    dx, dg = coupling_backward(dy, x, g, ctx.clamp)
    # dy/dh is the identity: the incoming gradient is dh, no kernel or memory needed.
    return dx, dg, dy.to(ctx.h_dtype), None


def _setup_inverse(ctx, inputs, output):
    y, g, h, clamp = inputs
    ctx.save_for_backward(output, g)  # the output x replaces y - h in the backward
    ctx.clamp, ctx.y_dtype, ctx.h_dtype = clamp, y.dtype, h.dtype


def _backward_inverse(ctx, dx):
    x, g = ctx.saved_tensors
    dy, dg, dh = coupling_inverse_backward(dx, x, g, ctx.y_dtype, ctx.h_dtype, ctx.clamp)
    return dy, dg, dh, None


coupling = eager_path(triton_affine_coupling, _affine_coupling, _backward_forward, _setup_forward)
coupling_inverse = eager_path(triton_affine_coupling_inverse, _affine_coupling_inverse, _backward_inverse, _setup_inverse)


# ---------------------------------------------------------------------------------------
# Registry entries: same signatures as the reference ops.


def _same_shape(x: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # The kernels need one shape; broadcasting happens outside the custom op so that
    # autograd reduces the gradients of broadcast inputs.
    if x.shape == g.shape == h.shape:
        return x, g, h
    return torch.broadcast_tensors(x, g, h)


@affine_coupling.register("triton")
def affine_coupling_triton(x: torch.Tensor, g: torch.Tensor, h: torch.Tensor, clamp: float = 1.0) -> torch.Tensor:
    x, g, h = _same_shape(x, g, h)
    return coupling(x, g, h, float(clamp))


@affine_coupling_inverse.register("triton")
def affine_coupling_inverse_triton(
    y: torch.Tensor, g: torch.Tensor, h: torch.Tensor, clamp: float = 1.0
) -> torch.Tensor:
    y, g, h = _same_shape(y, g, h)
    return coupling_inverse(y, g, h, float(clamp))
