"""Fixed-point entropy parameters: the same values on every device, batch and grouping.

The rANS coder needs, at every latent position, the index of a scale and a mean. Computed
in floating point they can differ in the last bit between the encoder's device and the
decoder's (another GPU, the CPU, another batch size or BLAS), and one differing index
desyncs the whole decode (CompressAI issues #279, #309, #340). Here the three networks
that produce them (hyper-synthesis ``h_s``, the masked 5x5 context convolution and the
1x1 entropy-parameter convolutions) run in integer arithmetic, defined in docs/format.md:

- an activation is an integer ``a = value * 2**ACT_BITS``, clamped to ``|a| <= ACT_MAX``;
- a layer's weights are integers ``round(weight * 2**s)`` with the layer's own shift ``s``,
  the largest (<= MAX_SHIFT) for which every output row has ``sum |w| <= ROW_L1_MAX``;
  its bias is ``round(bias * 2**(s + ACT_BITS))``;
- a convolution returns ``floor((sum w * a + bias) / 2**s)`` clamped to ``ACT_MAX``;
- LeakyReLU keeps ``a >= 0`` and maps ``a < 0`` to ``floor(a * round(slope * 2**16) / 2**16)``.

With these bounds every partial sum is an integer below 2**53, so float64 evaluates it
exactly in any order (any BLAS, GPU, thread count or batching): float64 is the fast path,
and the same code on int64 tensors (CPU) is the reference that proves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ACT_BITS = 12  # activations in units of 1/4096
UNIT = 2**ACT_BITS  # the integer of value 1.0
ACT_MAX = 2**27 - 1  # |value| < 32768
ROW_L1_MAX = 2**25  # ACT_MAX * ROW_L1_MAX < 2**52: sums stay exact in float64
MAX_SHIFT = 30
LEAKY_BITS = 16
CONTEXT_KERNEL = 5
CONTEXT_PAD = CONTEXT_KERNEL // 2
SHIFT_STEPS = 4  # a file's scale shift moves the scale thresholds in quarters of the table's step


@dataclass
class IntConv:
    """A stride-1 'same' convolution over the taps where the (masked) kernel is non-zero."""

    weight: torch.Tensor  # (taps, C_in, C_out), integer-valued
    bias: torch.Tensor  # (C_out,), integer-valued, already scaled by 2**(shift + ACT_BITS)
    shift: int
    taps: tuple[tuple[int, int], ...]  # (dy, dx) offsets into the zero-padded input
    kernel: int

    def to(self, dtype: torch.dtype, device: torch.device) -> "IntConv":
        return IntConv(self.weight.to(device, dtype), self.bias.to(device, dtype), self.shift, self.taps, self.kernel)


def quantize_conv(conv: nn.Conv2d, mask: torch.Tensor | None = None) -> IntConv:
    """Integer weights of ``conv`` (stride 1, 'same' padding) by the rules of the module docstring."""
    k = conv.kernel_size[0]
    if conv.stride != (1, 1) or conv.kernel_size != (k, k) or conv.padding != (k // 2, k // 2) or conv.groups != 1:
        raise ValueError(f"fixed-point path supports stride-1 'same' convolutions only, got {conv}")
    w = conv.weight.detach().to("cpu", torch.float64)
    if mask is not None:
        w = w * mask.to("cpu", torch.float64)
    taps = tuple((dy, dx) for dy in range(k) for dx in range(k) if w[:, :, dy, dx].abs().sum() > 0 or mask is None)
    # (C_out, C_in, k, k) -> (taps, C_in, C_out)
    stacked = torch.stack([w[:, :, dy, dx].t() for dy, dx in taps])
    row_l1 = stacked.abs().sum(dim=(0, 1)).max().item()
    shift = MAX_SHIFT if row_l1 == 0 else min(MAX_SHIFT, math.floor(math.log2(ROW_L1_MAX / row_l1)))
    while torch.round(stacked * 2.0**shift).abs().sum(dim=(0, 1)).max() > ROW_L1_MAX:
        shift -= 1
    if shift < 0:
        raise ValueError(f"weights of {conv} too large for the fixed-point path (sum |w| over {row_l1:.3g})")
    bias = conv.bias.detach().to("cpu", torch.float64) if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    bias_int = torch.round(bias * 2.0 ** (shift + ACT_BITS))
    if bias_int.abs().max() >= 2**52:
        raise ValueError(f"bias of {conv} too large for the fixed-point path")
    return IntConv(torch.round(stacked * 2.0**shift), bias_int, shift, taps, k)


def _floor_shift(a: torch.Tensor, shift: int) -> torch.Tensor:
    """floor(a / 2**shift): an arithmetic shift on integers; on float64, scaling by a power
    of two and flooring are both exact."""
    return a >> shift if not a.is_floating_point() else torch.floor(a * 2.0**-shift)


def _requantize(acc: torch.Tensor, shift: int) -> torch.Tensor:
    return _floor_shift(acc, shift).clamp_(-ACT_MAX, ACT_MAX)


def leaky_relu(a: torch.Tensor, slope_num: int) -> torch.Tensor:
    # For 0 < slope < 1: a >= 0 gives a >= floor(a * slope), a < 0 gives a <= floor(a * slope).
    return torch.maximum(a, _floor_shift(a * slope_num, LEAKY_BITS))


def conv(x: torch.Tensor, layer: IntConv) -> torch.Tensor:
    """``layer`` on channels-last x (B, H, W, C): one matmul per tap on the padded input."""
    _, height, width, _ = x.shape
    p = layer.kernel // 2
    xp = F.pad(x, (0, 0, p, p, p, p)) if p else x
    acc = layer.bias
    for t, (dy, dx) in enumerate(layer.taps):
        acc = acc + xp[:, dy : dy + height, dx : dx + width, :] @ layer.weight[t]
    return _requantize(acc, layer.shift)


def dense(x: torch.Tensor, layer: IntConv) -> torch.Tensor:
    """A 1x1 ``layer`` on (..., C)."""
    flat = torch.addmm(layer.bias, x.reshape(-1, x.shape[-1]), layer.weight[0])
    return _requantize(flat.view(*x.shape[:-1], -1), layer.shift)


def pixel_shuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    """nn.PixelShuffle on channels-last x: out[b, h*r+i, w*r+j, c] = x[b, h, w, (c*r+i)*r+j]."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, c // (r * r), r, r).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * r, w * r, c // (r * r))


def _compile_sequential(seq: nn.Module) -> list:
    """h_s / entropy_parameters as a flat list of ('conv', IntConv) | ('leaky', num) | ('shuffle', r)."""
    steps: list = []
    for m in seq.children() if isinstance(seq, nn.Sequential) else [seq]:
        if isinstance(m, nn.Sequential):
            steps += _compile_sequential(m)
        elif isinstance(m, nn.Conv2d):
            steps.append(("conv", quantize_conv(m)))
        elif isinstance(m, nn.LeakyReLU):
            steps.append(("leaky", round(m.negative_slope * 2**LEAKY_BITS)))
        elif isinstance(m, nn.PixelShuffle):
            steps.append(("shuffle", m.upscale_factor))
        else:
            raise ValueError(f"fixed-point path has no integer form of {type(m).__name__}")
    return steps


def _run(steps: list, x: torch.Tensor, pointwise: bool) -> torch.Tensor:
    for kind, arg in steps:
        if kind == "conv":
            x = dense(x, arg) if pointwise else conv(x, arg)
        elif kind == "leaky":
            x = leaky_relu(x, arg)
        else:
            x = pixel_shuffle(x, arg)
    return x


class FixedPointEntropy:
    """The integer form of a model's entropy-parameter networks, on one device and dtype.

    ``dtype=torch.float64`` is the fast path (exact, see the module docstring);
    ``torch.int64`` (CPU) is the reference.
    """

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.M = model.M
        put = lambda steps: [(k, a.to(dtype, self.device) if k == "conv" else a) for k, a in steps]  # noqa: E731
        self.hyper = put(_compile_sequential(model.h_s))
        self.params = put(_compile_sequential(model.entropy_parameters))
        if any(k == "conv" and a.kernel != 1 for k, a in self.params):
            raise ValueError("entropy_parameters must be 1x1 convolutions")
        cp = model.context_prediction
        self.context = quantize_conv(cp, cp.mask).to(dtype, self.device)
        # The context as one matmul over the gathered window (taps x M inputs).
        self._ctx_weight = self.context.weight.reshape(-1, self.context.weight.shape[-1])
        self._dy = torch.tensor([t[0] for t in self.context.taps], device=self.device)
        self._dx = torch.tensor([t[1] for t in self.context.taps], device=self.device)
        # Threshold k: floor(scale_table[k] * 2**ACT_BITS); the index of a scale is the number
        # of thresholds below it, which equals compressai's build_indexes on scale / 2**ACT_BITS.
        table = model.gaussian_conditional.scale_table.detach().to("cpu", torch.float64)
        self._table, self._thresholds = table[:-1] * 2**ACT_BITS, {}
        self._log_step = math.log(float(table[-1]) / float(table[0])) / (len(table) - 1)
        self.thresholds = self.shifted_thresholds(0)
        self._fused = self._fused_layers()
        self.z_medians = torch.round(
            model.entropy_bottleneck.quantiles.detach()[:, 0, 1].to("cpu", torch.float64) * 2**ACT_BITS
        ).to(self.device, dtype)

    def _fused_layers(self) -> tuple | None:
        """The arguments of ``native_entropy_params`` (one CUDA kernel per layer instead of
        the torch path's ~35 small ones per coding step), or None where it cannot run:
        not float64 on a GPU, no native CUDA kernels, or entropy_parameters not of the
        form conv, LeakyReLU, conv, ..., conv with one slope."""
        if self.device.type != "cuda" or self.dtype != torch.float64:
            return None
        kinds = [k for k, _ in self.params]
        slopes = {a for k, a in self.params if k == "leaky"}
        if kinds[::2] != ["conv"] * len(kinds[::2]) or kinds[1::2] != ["leaky"] * len(kinds[1::2]) or len(slopes) > 1:
            return None
        from . import native

        if native.probe("cuda") is not None or not torch._C._dispatch_has_kernel_for_dispatch_key(
            "ainn_fast::native_entropy_params", "CUDA"
        ):
            return None
        return self.fused_arguments()

    def fused_arguments(self) -> tuple:
        """``native_entropy_params``'s arguments after (y_rows, params, window, positions)."""
        convs = [a for k, a in self.params if k == "conv"]
        slopes = [a for k, a in self.params if k == "leaky"]
        return (  # weights as (outputs, inputs): a warp's lanes read one output's row together
            self._ctx_weight.t().contiguous(), self.context.bias.contiguous(), self.context.shift,
            [c.weight[0].t().contiguous() for c in convs], [c.bias.contiguous() for c in convs], [c.shift for c in convs],
            slopes[0] if slopes else 0, float(ACT_MAX),
        )

    @property
    def fused(self) -> bool:
        """Whether :meth:`position_params` can take the fused CUDA kernels."""
        return self._fused is not None

    def hyper_params(self, z_symbols: torch.Tensor) -> torch.Tensor:
        """Integer hyperprior output (B, h, w, 2M) from z's symbols (B, N, h/4, w/4)."""
        z = z_symbols.to(self.device, self.dtype).permute(0, 2, 3, 1) * 2**ACT_BITS + self.z_medians
        return _run(self.hyper, z.clamp(-ACT_MAX, ACT_MAX), pointwise=False)

    def window_index(self, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor, padded: tuple[int, int]) -> torch.Tensor:
        """Rows (P, taps) of the flattened y_hat buffer (B * (h + 4) * (w + 4), M) that the
        context of positions (b, i, j) reads; ``padded`` is the buffer's (h + 4, w + 4)."""
        rows = (b[:, None] * padded[0] + i[:, None] + self._dy) * padded[1]
        return rows + j[:, None] + self._dx

    def position_params(
        self, y_flat: torch.Tensor, params_flat: torch.Tensor, window: torch.Tensor | None, at: torch.Tensor,
        fused: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, mean) integers (P, M) of P positions.

        ``y_flat`` (B * (h + 4) * (w + 4), M) holds the decoded y_hat integers, zero where
        not decoded yet, ``window`` the rows of each position's context
        (:meth:`window_index`); ``params_flat`` (B * h * w, 2M) is :meth:`hyper_params`'s
        output and ``at`` the positions' rows in it. ``window=None``: no context (zero), as
        for the checkerboard's anchors. ``fused``: take ``native_entropy_params`` where
        it runs (:attr:`fused`); the same integers.
        """
        out = self.position_gaussian(y_flat, params_flat, window, at, fused)
        return out[:, : self.M], out[:, self.M :]

    def position_gaussian(
        self, y_flat: torch.Tensor, params_flat: torch.Tensor, window: torch.Tensor | None, at: torch.Tensor,
        fused: bool = True,
    ) -> torch.Tensor:
        """:meth:`position_params` as one contiguous (P, 2M) tensor: scales, then means."""
        if fused and window is not None and self._fused is not None:
            return torch.ops.ainn_fast.native_entropy_params(y_flat, params_flat, window, at, *self._fused)
        params = params_flat.index_select(0, at)
        if window is None:
            ctx = torch.zeros_like(params)
        else:
            ctx = y_flat.index_select(0, window.flatten()).view(len(at), -1)
            ctx = _requantize(torch.addmm(self.context.bias, ctx, self._ctx_weight), self.context.shift)
        return _run(self.params, torch.cat((params, ctx), dim=-1), pointwise=True).contiguous()

    def shifted_thresholds(self, shift: int) -> torch.Tensor:
        """Thresholds of a file's scale shift (format 3): ``floor(T[k] * 2**ACT_BITS *
        exp(shift * log_step / SHIFT_STEPS))``, evaluated on the CPU in float64 (shift 0:
        factor 1.0, so format 2's thresholds exactly). A positive shift raises every
        threshold, so a scale gets a smaller table scale: it corrects, per image, a model
        whose scales run too wide (or, negative, too narrow) on that image."""
        if shift not in self._thresholds:
            factor = math.exp(shift * self._log_step / SHIFT_STEPS)
            self._thresholds[shift] = torch.floor(self._table * factor).to(self.device, self.dtype).contiguous()
        return self._thresholds[shift]

    def channel_thresholds(self, shifts: tuple[int, ...]) -> torch.Tensor:
        """(M, 63) thresholds of per-channel shifts; the last few sets are cached."""
        cache = self.__dict__.setdefault("_channel_thresholds", {})
        if shifts not in cache:
            if len(shifts) != self.M:
                raise ValueError(f"{len(shifts)} channel shifts for {self.M} channels")
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[shifts] = torch.stack([self.shifted_thresholds(s) for s in shifts])
        return cache[shifts]

    def scale_index(self, scale: torch.Tensor, shift: int | tuple[int, ...] = 0) -> torch.Tensor:
        """Table rows of integer scales (..., M), or of any shape for one shift; ``shift``
        is one shift for all channels or a tuple of M, one per channel."""
        if isinstance(shift, int):
            return torch.searchsorted(self.shifted_thresholds(shift), scale.contiguous())
        by_channel = scale.reshape(-1, self.M).t().contiguous()
        return torch.searchsorted(self.channel_thresholds(shift), by_channel).t().reshape(scale.shape)


def fixed_point(model: nn.Module, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> FixedPointEntropy:
    """The model's :class:`FixedPointEntropy`, built once per (weights, device, dtype) and cached."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    key = (getattr(model, "_ainn_hash", None), str(device), dtype)
    cache = model.__dict__.setdefault("_ainn_fixed_point", {})
    if key not in cache or key[0] is None:
        cache[key] = FixedPointEntropy(model, device, dtype)
    return cache[key]
