"""Space-to-depth squeeze in A-INN's channel order, its inverse, and the channel group mean.

All three are pure index maps (plus a sum for the group mean), so the kernels take every
tensor's strides and never copy their inputs: non-contiguous and channels_last tensors
are read in place. Outputs take the input's memory format and are walked in their own
memory order, so stores are coalesced; in channels_last the squeeze's output pixel is
four contiguous C-vectors of the input, a plain gather of runs.

Squeeze: out[b, (i * 2 + j) * C + c, y, x] = in[b, c, 2y + i, 2x + j]
Group mean: out[b, c] = mean over g of cat([x1, x2])[b, g * M + c], read from both streams
without materialising the concatenation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ainn_fast.ops.squeeze import (
    conv1x1_unsqueeze,
    conv1x1_unsqueeze_folded,
    group_mean,
    squeeze2x2,
    squeeze_conv1x1,
    squeeze_conv1x1_folded,
    unsqueeze2x2,
)

from ._common import INDEX_BLOCK, eager_path, grid, is_channels_last, new_4d


@triton.jit
def _nchw_index(idx, C, H, W, CHANNELS_LAST: tl.constexpr):
    """(b, c, h, w) of position ``idx`` when walking a (B, C, H, W) tensor in memory order."""
    if CHANNELS_LAST:
        c = idx % C
        t = idx // C
        w = t % W
        t = t // W
        h = t % H
        b = t // H
    else:
        w = idx % W
        t = idx // W
        h = t % H
        t = t // H
        c = t % C
        b = t // C
    return b, c, h, w


@triton.jit
def _squeeze_kernel(
    src_ptr, dst_ptr, n, C, OC, OH, OW,
    ssb, ssc, ssh, ssw, sdb, sdc, sdh, sdw,
    UNSQUEEZE: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    # C is the channel count of the unsqueezed side; (OC, OH, OW) the output's sizes.
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    b, oc, oh, ow = _nchw_index(idx, OC, OH, OW, CHANNELS_LAST)
    if UNSQUEEZE:
        q = (oh % 2) * 2 + ow % 2
        src = b * ssb + (q * C + oc) * ssc + (oh // 2) * ssh + (ow // 2) * ssw
    else:
        q = oc // C
        src = b * ssb + (oc % C) * ssc + (oh * 2 + q // 2) * ssh + (ow * 2 + q % 2) * ssw
    v = tl.load(src_ptr + src, mask=mask)
    tl.store(dst_ptr + b * sdb + oc * sdc + oh * sdh + ow * sdw, v, mask=mask)


@triton.jit
def _group_mean_kernel(
    x1_ptr, x2_ptr, out_ptr, n, M, H, W, C1, G, inv_g,
    s1b, s1c, s1h, s1w, s2b, s2c, s2h, s2w, sob, soc, soh, sow,
    CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    b, c, h, w = _nchw_index(idx, M, H, W, CHANNELS_LAST)
    base1 = b * s1b + h * s1h + w * s1w
    base2 = b * s2b + h * s2h + w * s2w
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for g in range(0, G):
        k = g * M + c  # channel of cat([x1, x2])
        in1 = k < C1
        k1 = tl.where(in1, k, 0)  # keep masked-off addresses in range
        k2 = tl.where(in1, 0, k - C1)
        v1 = tl.load(x1_ptr + base1 + k1 * s1c, mask=mask & in1, other=0.0).to(tl.float32)
        v2 = tl.load(x2_ptr + base2 + k2 * s2c, mask=mask & (k >= C1), other=0.0).to(tl.float32)
        acc += v1 + v2
    out = acc * inv_g
    tl.store(out_ptr + b * sob + c * soc + h * soh + w * sow, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _group_mean_backward_kernel(
    dy_ptr, dx_ptr, n, C, H, W, M, offset, inv_g,
    syb, syc, syh, syw, sxb, sxc, sxh, sxw,
    CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    # Every input channel k (offset by the first stream's width for x2) feeds exactly one
    # output channel (k mod M) with weight 1/G.
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    b, k, h, w = _nchw_index(idx, C, H, W, CHANNELS_LAST)
    c = (k + offset) % M
    v = tl.load(dy_ptr + b * syb + c * syc + h * syh + w * syw, mask=mask, other=0.0).to(tl.float32) * inv_g
    tl.store(dx_ptr + b * sxb + k * sxc + h * sxh + w * sxw, v.to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------
# Custom ops (real and fake allocate through new_4d, so strides agree).


def _squeeze_shape(x: torch.Tensor) -> tuple[int, int, int, int]:
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze2x2 needs even height and width, got {h}x{w}")
    return b, 4 * c, h // 2, w // 2


def _unsqueeze_shape(y: torch.Tensor) -> tuple[int, int, int, int]:
    b, c4, h, w = y.shape
    if c4 % 4:
        raise ValueError(f"unsqueeze2x2 needs a multiple of 4 channels, got {c4}")
    return b, c4 // 4, 2 * h, 2 * w


def _launch_squeeze(src: torch.Tensor, out: torch.Tensor, c: int, unsqueeze: bool) -> torch.Tensor:
    n = out.numel()
    if n:
        _, oc, oh, ow = out.shape
        block = INDEX_BLOCK
        _squeeze_kernel[grid(n, block)](
            src, out, n, c, oc, oh, ow, *src.stride(), *out.stride(),
            UNSQUEEZE=unsqueeze, CHANNELS_LAST=is_channels_last(out), BLOCK=block,
        )
    return out


def _squeeze2x2(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2), channel (i * 2 + j) * C + c."""
    return _launch_squeeze(x, new_4d(_squeeze_shape(x), x), x.shape[1], unsqueeze=False)


def _unsqueeze2x2(y: torch.Tensor) -> torch.Tensor:
    """(B, 4C, H, W) -> (B, C, 2H, 2W), the exact inverse of triton_squeeze2x2."""
    shape = _unsqueeze_shape(y)
    return _launch_squeeze(y, new_4d(shape, y), shape[1], unsqueeze=True)


triton_squeeze2x2 = torch.library.custom_op("ainn_fast::triton_squeeze2x2", mutates_args=())(_squeeze2x2)
triton_unsqueeze2x2 = torch.library.custom_op("ainn_fast::triton_unsqueeze2x2", mutates_args=())(_unsqueeze2x2)


@triton_squeeze2x2.register_fake
def _(x):
    return new_4d(_squeeze_shape(x), x)


@triton_unsqueeze2x2.register_fake
def _(y):
    return new_4d(_unsqueeze_shape(y), y)


# A permutation's gradient is the inverse permutation of the incoming gradient.
squeeze = eager_path(triton_squeeze2x2, _squeeze2x2, lambda ctx, dy: unsqueeze(dy))
unsqueeze = eager_path(triton_unsqueeze2x2, _unsqueeze2x2, lambda ctx, dx: squeeze(dx))


def _group_mean_shape(x1: torch.Tensor, x2: torch.Tensor, m: int) -> tuple[int, int, int, int]:
    if x1.dim() != 4 or x1.shape[0] != x2.shape[0] or x1.shape[2:] != x2.shape[2:]:
        raise ValueError(f"group_mean: streams of shapes {tuple(x1.shape)} and {tuple(x2.shape)} do not concatenate")
    c = x1.shape[1] + x2.shape[1]
    if c % m:
        raise ValueError(f"group_mean: {c} channels do not split into groups of {m}")
    return x1.shape[0], m, x1.shape[2], x1.shape[3]


def _group_mean(x1: torch.Tensor, x2: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Mean of channels c, c + M, c + 2M, ... of cat([x1, x2]) for c < M = out_channels."""
    shape = _group_mean_shape(x1, x2, out_channels)
    out = new_4d(shape, x1, torch.promote_types(x1.dtype, x2.dtype))
    n = out.numel()
    if n:
        _, m, h, w = shape
        groups = (x1.shape[1] + x2.shape[1]) // m
        block = INDEX_BLOCK
        _group_mean_kernel[grid(n, block)](
            x1, x2, out, n, m, h, w, x1.shape[1], groups, 1.0 / groups,
            *x1.stride(), *x2.stride(), *out.stride(),
            CHANNELS_LAST=is_channels_last(out), BLOCK=block,
        )
    return out


triton_group_mean = torch.library.custom_op("ainn_fast::triton_group_mean", mutates_args=())(_group_mean)


@triton_group_mean.register_fake
def _(x1, x2, out_channels):
    return new_4d(_group_mean_shape(x1, x2, out_channels), x1, torch.promote_types(x1.dtype, x2.dtype))


def _group_mean_grads_alloc(dy, c1, c2, dtype1, dtype2, channels_last1, channels_last2):
    b, _, h, w = dy.shape
    fmt = (torch.channels_last if cl else torch.contiguous_format for cl in (channels_last1, channels_last2))
    return tuple(
        torch.empty((b, c, h, w), dtype=dt, device=dy.device, memory_format=f)
        for c, dt, f in zip((c1, c2), (dtype1, dtype2), fmt)
    )


def _group_mean_backward(
    dy: torch.Tensor, c1: int, c2: int, dtype1: torch.dtype, dtype2: torch.dtype,
    channels_last1: bool, channels_last2: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of both streams of triton_group_mean from the output's gradient dy.

    Takes the streams' metadata, not the streams, so the forward saves no tensor.
    """
    dx1, dx2 = _group_mean_grads_alloc(dy, c1, c2, dtype1, dtype2, channels_last1, channels_last2)
    m = dy.shape[1]
    inv_g = m / (c1 + c2)
    block = INDEX_BLOCK
    for dx, offset in ((dx1, 0), (dx2, c1)):
        n = dx.numel()
        if n:
            _, c, h, w = dx.shape
            _group_mean_backward_kernel[grid(n, block)](
                dy, dx, n, c, h, w, m, offset, inv_g, *dy.stride(), *dx.stride(),
                CHANNELS_LAST=is_channels_last(dx), BLOCK=block,
            )
    return dx1, dx2


triton_group_mean_backward = torch.library.custom_op("ainn_fast::triton_group_mean_backward", mutates_args=())(
    _group_mean_backward
)
group_mean_backward = eager_path(triton_group_mean_backward, _group_mean_backward)


@triton_group_mean_backward.register_fake
def _(dy, c1, c2, dtype1, dtype2, channels_last1, channels_last2):
    return _group_mean_grads_alloc(dy, c1, c2, dtype1, dtype2, channels_last1, channels_last2)


def _setup_group_mean(ctx, inputs, output):
    x1, x2, _ = inputs
    ctx.meta = (x1.shape[1], x2.shape[1], x1.dtype, x2.dtype, is_channels_last(x1), is_channels_last(x2))


def _backward_group_mean(ctx, dy):
    dx1, dx2 = group_mean_backward(dy, *ctx.meta)
    return dx1, dx2, None


group_mean_fused = eager_path(triton_group_mean, _group_mean, _backward_group_mean, _setup_group_mean)


# ---------------------------------------------------------------------------------------
# Registry entries: same signatures as the reference ops.


@squeeze2x2.register("triton")
def squeeze2x2_triton(x: torch.Tensor) -> torch.Tensor:
    return squeeze(x)


@unsqueeze2x2.register("triton")
def unsqueeze2x2_triton(y: torch.Tensor) -> torch.Tensor:
    return unsqueeze(y)


@group_mean.register("triton")
def group_mean_triton(x1: torch.Tensor, x2: torch.Tensor, out_channels: int) -> torch.Tensor:
    return group_mean_fused(x1, x2, int(out_channels))


# The squeeze folded into the following invertible 1x1 convolution (one home for that
# math: ainn_fast/ops/squeeze.py); cuDNN reads channels_last input in place.
squeeze_conv1x1.register("triton")(squeeze_conv1x1_folded)
conv1x1_unsqueeze.register("triton")(conv1x1_unsqueeze_folded)
