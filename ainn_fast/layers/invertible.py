"""The invertible network: squeeze, invertible 1x1 convolution, two-stream affine coupling.

Every module here has ``forward`` and an exact ``inverse`` (the one inverse convention of
the package). Both streams (low- and high-frequency) pass through the same modules: the
1x1 convolution's weight is shared between them, as in the authors' model.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..backend import get_backend

Streams = tuple[torch.Tensor, torch.Tensor]


class Squeeze2x2(nn.Module):
    """Space-to-depth by 2 in A-INN's channel order (see ``ops.squeeze``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.squeeze2x2(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return ops.unsqueeze2x2(y)


def _cache_key(*weights: torch.Tensor) -> tuple:
    """What a value derived from ``weights`` stays valid for (see InvConv1x1._cached_inverse)."""
    return tuple((w._version, w.data_ptr(), w.device, w.dtype) for w in weights) + (torch.is_inference_mode_enabled(),)


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution, initialised orthogonal (Q of a QR of a Gaussian)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))
        self.weight = nn.Parameter(q.to(torch.float32))
        # (key, W, W^-1): a plain attribute, so never in the state_dict. See inverse_weight.
        self._inverse_cache: tuple | None = None

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Apply W to one tensor, or to several (the streams) sharing the weight."""
        return _apply_1x1(self.weight, xs)

    def inverse_weight(self) -> torch.Tensor:
        # float64 keeps the round trip exact to float32 precision even for
        # ill-conditioned trained matrices.
        w = self.weight
        if torch.is_grad_enabled() and w.requires_grad:
            # Training: fresh and differentiable. inv_ex without its error check, because
            # linalg.inv reads the LAPACK status back to the host, a device sync in the
            # middle of every step on a GPU (four a step, one per level); a singular W,
            # which training from an orthogonal start does not reach, would show as a NaN loss.
            return torch.linalg.inv_ex(w.double()).inverse
        return self._cached_inverse(w)

    @torch.compiler.disable  # data_ptr/_version are not traceable; a graph break is cheap here
    def _cached_inverse(self, w: torch.Tensor) -> torch.Tensor:
        # Valid while the weight is unchanged: in-place updates bump _version; replacing,
        # moving or casting it changes data_ptr/device/dtype. The cache keeps the weight's
        # old storage alive, so a new weight can never reuse its address. An inverse made
        # in inference mode is not reused outside it (it could not be saved for backward).
        # (In-place writes through ``w.data`` bypass _version and are not seen.)
        key = _cache_key(w)
        cache = getattr(self, "_inverse_cache", None)
        if cache is None or cache[0] != key:
            w = w.detach()
            cache = self._inverse_cache = (key, w, torch.linalg.inv(w.double()))
        return cache[2]

    def inverse(self, *ys: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Apply W^-1 (computed once for all the tensors given)."""
        return _apply_1x1(self.inverse_weight(), ys)


def _apply_1x1(weight: torch.Tensor, xs: tuple[torch.Tensor, ...]):
    c = weight.shape[0]
    out = tuple(F.conv2d(x, weight.to(x.dtype).view(c, c, 1, 1)) for x in xs)
    return out[0] if len(out) == 1 else out


class Bottleneck(nn.Module):
    """Coupling sub-network: conv kxk -> LReLU(0.2) -> conv 1x1 -> LReLU(0.2) -> conv kxk.

    The last convolution starts at zero, so every coupling starts as the identity.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or out_ch
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_ch, hidden, kernel_size, padding=pad)
        self.conv2 = nn.Conv2d(hidden, hidden, 1)
        self.conv3 = nn.Conv2d(hidden, out_ch, kernel_size, padding=pad)
        self.act = nn.LeakyReLU(0.2)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv3.weight)
        nn.init.zeros_(self.conv3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


_CONVS = ("conv1", "conv2", "conv3")


def _pair_params(g: Bottleneck, h: Bottleneck) -> list[torch.Tensor]:
    return [getattr(getattr(net, conv), p) for conv in _CONVS for p in ("weight", "bias") for net in (g, h)]


def _merge_pair(p: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """(w1, b1, w2, b2, w3, b3) from ``_pair_params``: G's and H's weights stacked along the
    output channels, so that conv1 is one dense convolution of twice the width and conv2,
    conv3 are grouped convolutions (groups=2) whose first group is G and second is H."""
    return tuple(torch.cat(p[i : i + 2]) for i in range(0, len(p), 2))


class PairedSubnets:
    """Runs two Bottlenecks that read the same input (G2/H2 on x2, G1/H1 on y1) as one
    network of twice the width: 3 convolutions and 2 activations instead of 6 and 4, and
    a wider first GEMM. g and h come out as the two channel halves of one tensor (views,
    which the fused coupling ops read without a copy at batch size 1).

    Used on the GPU when no gradient is needed (decoding, evaluation) and the backend is
    not the reference by name (``merge_subnets_now``); equal to ``(G(x), H(x))`` up to
    float summation order. Eagerly the merged weights are cached until any of the pair's
    parameters changes (``_cache_key``, as the 1x1 inverse); under torch.compile they are
    concatenated in the graph instead.
    Training keeps the separate sub-networks: merged, every backward would concatenate
    the two gradients, and only the GPU host can show whether that pays.
    """

    def __init__(self) -> None:
        self._cache: tuple | None = None

    @torch.compiler.disable
    def _cached(self, g: Bottleneck, h: Bottleneck) -> tuple[torch.Tensor, ...]:
        params = _pair_params(g, h)
        key = _cache_key(*params)
        if self._cache is None or self._cache[0] != key:
            # The cache keeps the old parameters alive, so a new one never reuses an address.
            self._cache = (key, params, tuple(w.detach() for w in _merge_pair(params)))
        return self._cache[2]

    def __call__(self, g: Bottleneck, h: Bottleneck, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        merged = _merge_pair(_pair_params(g, h)) if torch.compiler.is_compiling() else self._cached(g, h)
        w1, b1, w2, b2, w3, b3 = merged
        t = g.act(F.conv2d(x, w1, b1, padding=g.conv1.padding))
        t = g.act(F.conv2d(t, w2, b2, groups=2))
        gh = F.conv2d(t, w3, b3, padding=g.conv3.padding, groups=2)
        return gh.chunk(2, dim=1)


# Device types where PairedSubnets runs. Not the CPU: there oneDNN's grouped convolutions
# are up to 1.8x slower than two dense ones at the large levels, and the merged dense
# conv1 gains nothing (measured at 768x512, one thread: the synthesis took 8 % longer).
MERGE_SUBNETS_ON: tuple[str, ...] = ("cuda",)


def merge_subnets_now(x: torch.Tensor) -> bool:
    """Whether couplings run their G/H pairs merged for ``x`` (see PairedSubnets)."""
    return x.device.type in MERGE_SUBNETS_ON and not torch.is_grad_enabled() and get_backend() != "reference"


class AffineCoupling(nn.Module):
    """Two-stream affine coupling (x1 low-frequency, x2 high-frequency), clamp c:

        y1 = x1 * exp(s(G2(x2))) + H2(x2)
        y2 = x2 * exp(s(G1(y1))) + H1(y1)
    """

    def __init__(self, channels: int, kernel_size: int, hidden: int | None = None, clamp: float = 1.0) -> None:
        super().__init__()
        self.clamp = clamp
        self.G1 = Bottleneck(channels, channels, kernel_size, hidden)
        self.G2 = Bottleneck(channels, channels, kernel_size, hidden)
        self.H1 = Bottleneck(channels, channels, kernel_size, hidden)
        self.H2 = Bottleneck(channels, channels, kernel_size, hidden)
        # Plain attributes (not modules): caches of merged weights, never in the state_dict.
        self._pair1, self._pair2 = PairedSubnets(), PairedSubnets()

    def _gh1(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._pair1(self.G1, self.H1, t) if merge_subnets_now(t) else (self.G1(t), self.H1(t))

    def _gh2(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._pair2(self.G2, self.H2, t) if merge_subnets_now(t) else (self.G2(t), self.H2(t))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Streams:
        y1 = ops.affine_coupling(x1, *self._gh2(x2), self.clamp)
        y2 = ops.affine_coupling(x2, *self._gh1(y1), self.clamp)
        return y1, y2

    def inverse(self, y1: torch.Tensor, y2: torch.Tensor) -> Streams:
        x2 = ops.affine_coupling_inverse(y2, *self._gh1(y1), self.clamp)
        x1 = ops.affine_coupling_inverse(y1, *self._gh2(x2), self.clamp)
        return x1, x2


class InvertibleLevel(nn.Module):
    """One level: Squeeze(2) -> InvConv1x1 -> couplings, applied to both streams.

    The squeeze and the 1x1 convolution run as one op (``ops.squeeze_conv1x1`` and, in
    inverse, ``ops.conv1x1_unsqueeze``); the modules stay for their weights and API.
    """

    def __init__(
        self, in_channels: int, kernel_size: int, hidden: int | None = None, couplings: int = 3, clamp: float = 1.0
    ) -> None:
        super().__init__()
        self.channels = 4 * in_channels
        self.squeeze = Squeeze2x2()
        self.conv1x1 = InvConv1x1(self.channels)
        self.couplings = nn.ModuleList(
            AffineCoupling(self.channels, kernel_size, hidden, clamp) for _ in range(couplings)
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Streams:
        # squeeze then 1x1 conv as one op: fused backends fold the squeeze into the conv.
        weight = self.conv1x1.weight
        x1, x2 = ops.squeeze_conv1x1(x1, weight), ops.squeeze_conv1x1(x2, weight)
        for coupling in self.couplings:
            x1, x2 = coupling(x1, x2)
        return x1, x2

    def inverse(self, y1: torch.Tensor, y2: torch.Tensor) -> Streams:
        for coupling in reversed(self.couplings):
            y1, y2 = coupling.inverse(y1, y2)
        inverse = self.conv1x1.inverse_weight()  # inverted once for both streams
        return ops.conv1x1_unsqueeze(y1, inverse), ops.conv1x1_unsqueeze(y2, inverse)


class InvertibleNetwork(nn.Module):
    """Four levels taking 3-channel streams at H x W to 768-channel streams at H/16."""

    def __init__(
        self,
        kernel_sizes: Sequence[int] = (5, 5, 3, 3),
        hidden: Sequence[int | None] = (None, None, None, None),
        couplings: int = 3,
        clamp: float = 1.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        levels = []
        c = in_channels
        for k, hid in zip(kernel_sizes, hidden):
            levels.append(InvertibleLevel(c, k, hid, couplings, clamp))
            c *= 4
        self.levels = nn.ModuleList(levels)
        self.out_channels = c

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Streams:
        for level in self.levels:
            x1, x2 = level(x1, x2)
        return x1, x2

    def inverse(self, y1: torch.Tensor, y2: torch.Tensor) -> Streams:
        for level in reversed(self.levels):
            y1, y2 = level.inverse(y1, y2)
        return y1, y2
