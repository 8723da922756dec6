"""FDSM's frequency ops: the multi-scale decomposition (encoder) and the dual-frequency
blend (decoder), each fused forward and backward.

Decomposition: one pass reads each 7x7 neighbourhood once and writes all six outputs
(a3, a5, a7 and x - a3, x - a5, x - a7) instead of three pools, three subtractions and two
concatenations. The zero-padded, fixed-divisor box filter is self-adjoint, so the
backward is the same stencil over (grad_low - grad_high) plus the identity part of the
high-pass outputs, again one pass.

Blend: x = m * low + (1 - m) * high with m = sigmoid(logits); the backward writes the
three gradients in one pass, summing the mask's gradient over channels in registers.

Layout: the kernels take every tensor's strides and never copy inputs; outputs keep the
input's memory format (channels_last stays channels_last). Arithmetic is fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ainn_fast.ops.frequency import POOL_SIZES, frequency_blend, multiscale_decompose

from ._common import INDEX_BLOCK, STENCIL_BLOCK, eager_path, grid, is_channels_last, new_4d, result_dtype
from .squeeze import _nchw_index

assert POOL_SIZES == (3, 5, 7), "the stencils below are written for pools 3, 5 and 7"


@triton.jit
def _decompose_kernel(
    x_ptr, low_ptr, high_ptr, n, C, H, W,
    sxb, sxc, sxh, sxw, slb, slc, slh, slw, shb, shc, shh, shw,
    CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    b, c, h, w = _nchw_index(idx, C, H, W, CHANNELS_LAST)
    base = b * sxb + c * sxc
    s3 = tl.zeros([BLOCK], dtype=tl.float32)
    s5 = tl.zeros([BLOCK], dtype=tl.float32)
    s7 = tl.zeros([BLOCK], dtype=tl.float32)
    xc = tl.zeros([BLOCK], dtype=tl.float32)
    for dy in tl.static_range(-3, 4):
        hh = h + dy
        row_ok = mask & (hh >= 0) & (hh < H)
        hh = tl.where(row_ok, hh, 0)  # keep masked-off addresses in range
        for dx in tl.static_range(-3, 4):
            ww = w + dx
            ok = row_ok & (ww >= 0) & (ww < W)
            ww = tl.where(ok, ww, 0)
            v = tl.load(x_ptr + base + hh * sxh + ww * sxw, mask=ok, other=0.0).to(tl.float32)
            s7 += v
            if dy * dy <= 4:
                if dx * dx <= 4:
                    s5 += v
                    if dy * dy <= 1:
                        if dx * dx <= 1:
                            s3 += v
                            if dy == 0:
                                if dx == 0:
                                    xc = v
    # count_include_pad: the divisor is always k * k.
    a3 = s3 * (1.0 / 9.0)
    a5 = s5 * (1.0 / 25.0)
    a7 = s7 * (1.0 / 49.0)
    lo = b * slb + c * slc + h * slh + w * slw
    hi = b * shb + c * shc + h * shh + w * shw
    ty = low_ptr.dtype.element_ty
    tl.store(low_ptr + lo, a3.to(ty), mask=mask)
    tl.store(low_ptr + lo + C * slc, a5.to(ty), mask=mask)
    tl.store(low_ptr + lo + 2 * C * slc, a7.to(ty), mask=mask)
    tl.store(high_ptr + hi, (xc - a3).to(ty), mask=mask)
    tl.store(high_ptr + hi + C * shc, (xc - a5).to(ty), mask=mask)
    tl.store(high_ptr + hi + 2 * C * shc, (xc - a7).to(ty), mask=mask)


@triton.jit
def _decompose_backward_kernel(
    gl_ptr, gh_ptr, dx_ptr, n, C, H, W,
    slb, slc, slh, slw, shb, shc, shh, shw, sxb, sxc, sxh, sxw,
    CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    # dx = sum_k box_k(gl_k - gh_k) / k^2 + sum_k gh_k   (box_k zero-padded, self-adjoint)
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    b, c, h, w = _nchw_index(idx, C, H, W, CHANNELS_LAST)
    lbase = b * slb + c * slc
    hbase = b * shb + c * shc
    acc3 = tl.zeros([BLOCK], dtype=tl.float32)
    acc5 = tl.zeros([BLOCK], dtype=tl.float32)
    acc7 = tl.zeros([BLOCK], dtype=tl.float32)
    direct = tl.zeros([BLOCK], dtype=tl.float32)
    for dy in tl.static_range(-3, 4):
        hh = h + dy
        row_ok = mask & (hh >= 0) & (hh < H)
        hh = tl.where(row_ok, hh, 0)
        for dx in tl.static_range(-3, 4):
            ww = w + dx
            ok = row_ok & (ww >= 0) & (ww < W)
            ww = tl.where(ok, ww, 0)
            lo = lbase + hh * slh + ww * slw
            hi = hbase + hh * shh + ww * shw
            gl7 = tl.load(gl_ptr + lo + 2 * C * slc, mask=ok, other=0.0).to(tl.float32)
            gh7 = tl.load(gh_ptr + hi + 2 * C * shc, mask=ok, other=0.0).to(tl.float32)
            acc7 += gl7 - gh7
            if dy * dy <= 4:
                if dx * dx <= 4:
                    gl5 = tl.load(gl_ptr + lo + C * slc, mask=ok, other=0.0).to(tl.float32)
                    gh5 = tl.load(gh_ptr + hi + C * shc, mask=ok, other=0.0).to(tl.float32)
                    acc5 += gl5 - gh5
                    if dy * dy <= 1:
                        if dx * dx <= 1:
                            gl3 = tl.load(gl_ptr + lo, mask=ok, other=0.0).to(tl.float32)
                            gh3 = tl.load(gh_ptr + hi, mask=ok, other=0.0).to(tl.float32)
                            acc3 += gl3 - gh3
                            if dy == 0:
                                if dx == 0:
                                    direct = gh3 + gh5 + gh7
    dx_val = acc3 * (1.0 / 9.0) + acc5 * (1.0 / 25.0) + acc7 * (1.0 / 49.0) + direct
    out = b * sxb + c * sxc + h * sxh + w * sxw
    tl.store(dx_ptr + out, dx_val.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _pixel_index(idx, H, W):
    w = idx % W
    t = idx // W
    return t // H, t % H, w


@triton.jit
def _blend_kernel(
    l_ptr, lo_ptr, hi_ptr, out_ptr, n, C, H, W,
    slb, slc, slh, slw, sab, sac, sah, saw, sbb, sbc, sbh, sbw, sob, soc, soh, sow,
    PER_CHANNEL: tl.constexpr, BLOCK: tl.constexpr,
):
    # One lane per pixel, looping over channels: a one-channel mask is read once per pixel.
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    b, h, w = _pixel_index(idx, H, W)
    lp = b * slb + h * slh + w * slw
    ap = b * sab + h * sah + w * saw
    bp = b * sbb + h * sbh + w * sbw
    op = b * sob + h * soh + w * sow
    m = 1.0 / (1.0 + tl.exp(-tl.load(l_ptr + lp, mask=mask, other=0.0).to(tl.float32)))
    for c in range(0, C):
        if PER_CHANNEL:
            m = 1.0 / (1.0 + tl.exp(-tl.load(l_ptr + lp + c * slc, mask=mask, other=0.0).to(tl.float32)))
        low = tl.load(lo_ptr + ap + c * sac, mask=mask, other=0.0).to(tl.float32)
        high = tl.load(hi_ptr + bp + c * sbc, mask=mask, other=0.0).to(tl.float32)
        out = m * low + (1.0 - m) * high
        tl.store(out_ptr + op + c * soc, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _blend_backward_kernel(
    dy_ptr, l_ptr, lo_ptr, hi_ptr, dl_ptr, dlo_ptr, dhi_ptr, n, C, H, W,
    syb, syc, syh, syw, slb, slc, slh, slw, sab, sac, sah, saw, sbb, sbc, sbh, sbw,
    s_dl_b, s_dl_c, s_dl_h, s_dl_w, s_da_b, s_da_c, s_da_h, s_da_w, s_db_b, s_db_c, s_db_h, s_db_w,
    PER_CHANNEL: tl.constexpr, BLOCK: tl.constexpr,
):
    # d low = dy m,  d high = dy (1 - m),  d logits = sum_c dy (low - high) m (1 - m)
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    b, h, w = _pixel_index(idx, H, W)
    yp = b * syb + h * syh + w * syw
    lp = b * slb + h * slh + w * slw
    ap = b * sab + h * sah + w * saw
    bp = b * sbb + h * sbh + w * sbw
    dlp = b * s_dl_b + h * s_dl_h + w * s_dl_w
    dap = b * s_da_b + h * s_da_h + w * s_da_w
    dbp = b * s_db_b + h * s_db_h + w * s_db_w
    m = 1.0 / (1.0 + tl.exp(-tl.load(l_ptr + lp, mask=mask, other=0.0).to(tl.float32)))
    dm = tl.zeros([BLOCK], dtype=tl.float32)
    for c in range(0, C):
        if PER_CHANNEL:
            m = 1.0 / (1.0 + tl.exp(-tl.load(l_ptr + lp + c * slc, mask=mask, other=0.0).to(tl.float32)))
        dy = tl.load(dy_ptr + yp + c * syc, mask=mask, other=0.0).to(tl.float32)
        low = tl.load(lo_ptr + ap + c * sac, mask=mask, other=0.0).to(tl.float32)
        high = tl.load(hi_ptr + bp + c * sbc, mask=mask, other=0.0).to(tl.float32)
        tl.store(dlo_ptr + dap + c * s_da_c, (dy * m).to(dlo_ptr.dtype.element_ty), mask=mask)
        tl.store(dhi_ptr + dbp + c * s_db_c, (dy * (1.0 - m)).to(dhi_ptr.dtype.element_ty), mask=mask)
        if PER_CHANNEL:
            dl = dy * (low - high) * m * (1.0 - m)
            tl.store(dl_ptr + dlp + c * s_dl_c, dl.to(dl_ptr.dtype.element_ty), mask=mask)
        else:
            dm += dy * (low - high)
    if not PER_CHANNEL:
        tl.store(dl_ptr + dlp, (dm * m * (1.0 - m)).to(dl_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------
# Custom ops (real and fake allocate through new_4d, so strides agree).


def _check_4d(name: str, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} expects (B, C, H, W), got shape {tuple(x.shape)}")


def _decompose_alloc(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, c, h, w = x.shape
    return new_4d((b, 3 * c, h, w), x), new_4d((b, 3 * c, h, w), x)


def _multiscale_decompose(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cat[a3, a5, a7], cat[x - a3, x - a5, x - a7]) of zero-padded stride-1 box means."""
    _check_4d("multiscale_decompose", x)
    low, high = _decompose_alloc(x)
    n = x.numel()
    if n:
        _, c, h, w = x.shape
        block = STENCIL_BLOCK
        _decompose_kernel[grid(n, block)](
            x, low, high, n, c, h, w, *x.stride(), *low.stride(), *high.stride(),
            CHANNELS_LAST=is_channels_last(x), BLOCK=block,
        )
    return low, high


triton_multiscale_decompose = torch.library.custom_op("ainn_fast::triton_multiscale_decompose", mutates_args=())(
    _multiscale_decompose
)


@triton_multiscale_decompose.register_fake
def _(x):
    _check_4d("multiscale_decompose", x)
    return _decompose_alloc(x)


def _decompose_grad_alloc(grad_low, dtype, channels_last):
    b, c3, h, w = grad_low.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((b, c3 // 3, h, w), dtype=dtype, device=grad_low.device, memory_format=fmt)


def _multiscale_decompose_backward(
    grad_low: torch.Tensor, grad_high: torch.Tensor, dtype: torch.dtype, channels_last: bool
) -> torch.Tensor:
    """dL/dx of triton_multiscale_decompose (needs no saved tensor: the op is linear)."""
    dx = _decompose_grad_alloc(grad_low, dtype, channels_last)
    n = dx.numel()
    if n:
        _, c, h, w = dx.shape
        block = STENCIL_BLOCK
        _decompose_backward_kernel[grid(n, block)](
            grad_low, grad_high, dx, n, c, h, w, *grad_low.stride(), *grad_high.stride(), *dx.stride(),
            CHANNELS_LAST=channels_last, BLOCK=block,
        )
    return dx


triton_multiscale_decompose_backward = torch.library.custom_op(
    "ainn_fast::triton_multiscale_decompose_backward", mutates_args=()
)(_multiscale_decompose_backward)
decompose_backward = eager_path(triton_multiscale_decompose_backward, _multiscale_decompose_backward)


@triton_multiscale_decompose_backward.register_fake
def _(grad_low, grad_high, dtype, channels_last):
    return _decompose_grad_alloc(grad_low, dtype, channels_last)


def _setup_decompose(ctx, inputs, output):
    (x,) = inputs
    ctx.meta = (x.dtype, is_channels_last(x))


def _backward_decompose(ctx, grad_low, grad_high):
    return decompose_backward(grad_low, grad_high, *ctx.meta)


decompose = eager_path(triton_multiscale_decompose, _multiscale_decompose, _backward_decompose, _setup_decompose)


def _check_blend(logits: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
    ok = (
        low.dim() == 4
        and low.shape == high.shape
        and logits.dim() == 4
        and logits.shape[0] == low.shape[0]
        and logits.shape[2:] == low.shape[2:]
        and logits.shape[1] in (1, low.shape[1])
    )
    if not ok:
        raise ValueError(
            "frequency_blend expects low and high of one (B, C, H, W) shape and logits of (B, 1 or C, H, W); "
            f"got {tuple(logits.shape)}, {tuple(low.shape)}, {tuple(high.shape)}"
        )


def _launch_blend(logits, low, high, out) -> None:
    b, c, h, w = low.shape
    n = b * h * w
    if n and c:
        block = INDEX_BLOCK
        _blend_kernel[grid(n, block)](
            logits, low, high, out, n, c, h, w,
            *logits.stride(), *low.stride(), *high.stride(), *out.stride(),
            PER_CHANNEL=logits.shape[1] != 1, BLOCK=block,
        )


def _frequency_blend(logits: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """m * low + (1 - m) * high with m = sigmoid(logits) (one channel or one per channel)."""
    _check_blend(logits, low, high)
    out = new_4d(tuple(low.shape), low, result_dtype(logits, low, high))
    _launch_blend(logits, low, high, out)
    return out


triton_frequency_blend = torch.library.custom_op("ainn_fast::triton_frequency_blend", mutates_args=())(
    _frequency_blend
)


@triton_frequency_blend.register_fake
def _(logits, low, high):
    _check_blend(logits, low, high)
    return new_4d(tuple(low.shape), low, result_dtype(logits, low, high))


def _blend_grad_alloc(logits, low, high):
    return (
        new_4d(tuple(logits.shape), logits),
        new_4d(tuple(low.shape), low),
        new_4d(tuple(high.shape), high),
    )


def _frequency_blend_backward(
    grad: torch.Tensor, logits: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dlogits, dL/dlow, dL/dhigh) of triton_frequency_blend, recomputing the mask."""
    dl, dlo, dhi = _blend_grad_alloc(logits, low, high)
    b, c, h, w = low.shape
    n = b * h * w
    if n and c:
        block = INDEX_BLOCK
        _blend_backward_kernel[grid(n, block)](
            grad, logits, low, high, dl, dlo, dhi, n, c, h, w,
            *grad.stride(), *logits.stride(), *low.stride(), *high.stride(),
            *dl.stride(), *dlo.stride(), *dhi.stride(),
            PER_CHANNEL=logits.shape[1] != 1, BLOCK=block,
        )
    elif n:
        dl.zero_()
    return dl, dlo, dhi


triton_frequency_blend_backward = torch.library.custom_op(
    "ainn_fast::triton_frequency_blend_backward", mutates_args=()
)(_frequency_blend_backward)
blend_backward = eager_path(triton_frequency_blend_backward, _frequency_blend_backward)


@triton_frequency_blend_backward.register_fake
def _(grad, logits, low, high):
    return _blend_grad_alloc(logits, low, high)


def _setup_blend(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward_blend(ctx, grad):
    return blend_backward(grad, *ctx.saved_tensors)


blend = eager_path(triton_frequency_blend, _frequency_blend, _backward_blend, _setup_blend)


# ---------------------------------------------------------------------------------------
# Registry entries: same signatures as the reference ops.


@multiscale_decompose.register("triton")
def multiscale_decompose_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return decompose(x)


@frequency_blend.register("triton")
def frequency_blend_triton(logits: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    try:
        _check_blend(logits, low, high)
    except ValueError:
        # Any other broadcastable combination: expand to one shape outside the custom op
        # (stride-0 views, read in place; autograd sums the gradients of the expansion).
        shape = torch.broadcast_shapes(logits.shape, low.shape, high.shape)
        if len(shape) > 4:
            raise
        shape = (1,) * (4 - len(shape)) + tuple(shape)
        out = blend(*(t.expand(shape) for t in (logits, low, high)))
        return out.reshape(torch.broadcast_shapes(logits.shape, low.shape, high.shape))
    return blend(logits, low, high)
