"""Entropy coding of A-INN's latents with CompressAI's rANS coder.

z is coded with the factorized entropy bottleneck; y with the Gaussian conditional whose
(scale index, mean) at each latent position come from the hyperprior and the masked 5x5
context of already decoded positions, computed in fixed point (:mod:`.fixed_point`) so that
they are identical on every device and batch.

Formats 2 to 4 (docs/format.md) decode in wavefronts: with a 5x5 causal context,
position (i, j) depends only on positions of earlier fronts t = 3i + j, so all positions of
a front (of every image of a batch) are computed together: one context evaluation and one
decoding step per front instead of per position. The y stream holds the symbols in that
order (fronts by t, positions by row, channels), so the serial reference decoder,
:func:`decode_latents_serial`, which visits the positions one at a time in integer
arithmetic, reads the same stream. A model with the checkerboard context codes in two
steps instead (anchors without context, then the rest; :func:`coding_steps`), through the
same batched loop. Format 3 adds a scale shift per image (or per channel of an image),
which the encoder picks to make the file smallest (:func:`choose_scale_shift`). Format 4
deals y's rows to several streams (:mod:`.row_streams`), so that a front's symbols decode
at once, on the device that computed their parameters. Version 1 files (float
parameters, raster order) still decode with :func:`decode_latents_v1`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyModel

from . import row_streams
from .container import delta_bits, pack_deltas
from .errors import FormatError, OptionError
from .fixed_point import ACT_MAX, CONTEXT_KERNEL, UNIT, FixedPointEntropy, fixed_point
from .front_steps import PaddedEncodeFronts, PaddedFronts
from .row_streams import guard, host_tables
from .models import AINN

KERNEL = CONTEXT_KERNEL
PAD = KERNEL // 2


# How the context steps get their symbols (decode) and parameters (decode and encode),
# each path writing and reading the same bytes:
# - "compressai": CompressAI's rANS coder on the host (the reference), torch ops;
# - "host": the native rANS kernels on the host, torch ops on the tensors' device (on a
#   GPU a round trip per coding step: the table rows over, the symbols back);
# - "device": the native rANS kernels on the tensors' device, torch ops;
# - "fused": "device" with the fused parameter kernels (CUDA; on a CPU as "device").
# AINN_ENTROPY_PATH or use_entropy_path picks one; else a CPU takes "device" (2x the
# CompressAI path on 2 cores, benchmarks/results/decode_cpu.md) and a GPU
# GPU_ENTROPY_PATH, "host": the structure of the fastest path of the only GPU run (H200,
# benchmarks/results/h200_2026-12-04b.md: paper latents 55-89 ms with CompressAI's coder,
# against 237 ms on "fused" with the first fused kernel, since rewritten; "device" was not
# timed) with the native coder in CompressAI's place (bit-exact, and 2x its decoding and
# 7x its encoding on a CPU). `ainn bench` and benchmarks/profile_decode.py time every path.
ENTROPY_PATHS = ("compressai", "host", "device", "fused")
GPU_ENTROPY_PATH = "host"


_path_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("ainn_entropy_path", default=None)


def _check_path(name: str, what: str) -> str:
    if name not in ("auto",) + ENTROPY_PATHS:
        raise OptionError(f"{what}: use one of auto, {', '.join(ENTROPY_PATHS)}")
    return name


@contextlib.contextmanager
def use_entropy_path(name: str) -> Iterator[None]:
    """Code with ``name`` (ENTROPY_PATHS or "auto") inside the block, over AINN_ENTROPY_PATH."""
    token = _path_override.set(_check_path(name, f"unknown entropy path {name!r}"))
    try:
        yield
    finally:
        _path_override.reset(token)


def entropy_path(device: torch.device | str) -> str:
    """The path (ENTROPY_PATHS) coding on ``device`` takes when the caller does not say:
    the one chosen, or the device's default, less what cannot run here ("device" and
    "fused" fall back to "host" without the device's native kernels, "host" to
    "compressai" without the host's)."""
    device = torch.device(device)
    name = _path_override.get()
    if name is None:
        env = os.environ.get("AINN_ENTROPY_PATH", "auto")
        name = _check_path(env, f"AINN_ENTROPY_PATH={env!r}")
    if name == "auto":
        name = GPU_ENTROPY_PATH if device.type == "cuda" else "device"
    if name in ("device", "fused") and not row_streams.native_available(device):
        name = "host"
    if name == "host" and not row_streams.native_available(torch.device("cpu")):
        name = "compressai"
    return name


SHIFT_SEARCH = 32  # the encoder tries scale shifts -32..32 (table scales x/÷ 2.1)
BYPASS_BITS = 16  # about what CompressAI's bypass code spends on an out-of-range symbol


def _symbol_bits(fp: FixedPointEntropy, model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bits of each (table row, symbol) under the quantized CDFs, with the rows' offsets
    and the index of their overflow symbol; cached on ``fp``."""
    if "_symbol_bits" not in fp.__dict__:
        gc = model.gaussian_conditional
        cdf = gc.quantized_cdf.to("cpu", torch.float64)
        pmf = (cdf[:, 1:] - cdf[:, :-1]).clamp(min=1)  # beyond a row's length: never indexed
        fp._symbol_bits = tuple(
            t.to(fp.device) for t in (16 - torch.log2(pmf), gc.offset.long().cpu(), gc.cdf_length.long().cpu() - 2)
        )
    return fp._symbol_bits


def shift_costs(
    fp: FixedPointEntropy, model: AINN, q: torch.Tensor, scale: torch.Tensor, shifts: Sequence[int], per_channel: bool = False
) -> torch.Tensor:
    """Estimated bits of the y stream (within the coder's few bytes of flush) for each
    scale shift of ``shifts``, of symbols ``q`` with integer scales ``scale`` (flat, in
    stream order: position-major, channel-minor); (S,), or (S, M) by channel.

    The symbols are counted once into (scale bin, symbol[, channel]) pairs, with bins
    between consecutive thresholds of all the shifts, where every shift gives one index;
    each shift then costs one pass over the distinct pairs rather than over all symbols."""
    bits, offset, overflow = _symbol_bits(fp, model)
    thresholds = torch.stack([fp.shifted_thresholds(s) for s in shifts])  # (S, 63)
    edges = torch.unique(thresholds)
    span = int(q.abs().max()) if q.numel() else 0
    width = 2 * span + 1
    key = torch.searchsorted(edges, scale.contiguous()) * width + (q.long() + span)
    channels = fp.M if per_channel else 1
    if per_channel:
        key = key * channels + torch.arange(len(q), device=q.device) % channels
    pairs, counts = torch.unique(key, return_counts=True)
    channel, pairs = pairs % channels, pairs // channels
    b, value = pairs // width, pairs % width - span
    # A scale in bin b (edges[b - 1] < scale <= edges[b]) exceeds exactly the thresholds <= edges[b - 1].
    low = torch.cat((edges.new_full((1,), -1.0), edges))[b]
    index = torch.searchsorted(thresholds, low.expand(len(shifts), -1).contiguous(), right=True)  # (S, pairs)
    symbol = value - offset[index]
    top = overflow[index]
    out = (symbol < 0) | (symbol >= top)
    cost = (bits[index, torch.where(out, top, symbol)] + BYPASS_BITS * out) * counts
    by_channel = cost.new_zeros(len(shifts), channels).index_add_(1, channel, cost)
    return by_channel if per_channel else by_channel[:, 0]


def choose_scale_shift(
    fp: FixedPointEntropy, model: AINN, q: torch.Tensor, scale: torch.Tensor, per_channel: bool = True
) -> int | tuple[int, ...]:
    """The encoder's pick of a file's scale shift: the one of -SHIFT_SEARCH..SHIFT_SEARCH
    with the smallest estimated stream (ties to the smaller), or, when that with the side
    information is smaller still, one shift per channel, each trading its channel's bits
    against its code length. Any pick decodes; this one only has to be good."""
    shifts = list(range(-SHIFT_SEARCH, SHIFT_SEARCH + 1))
    cost = shift_costs(fp, model, q, scale, shifts, per_channel=True).double()
    total = cost.sum(1).tolist()
    best = min(shifts, key=lambda s: (total[s + SHIFT_SEARCH], abs(s)))
    if not per_channel:
        return best
    side = torch.tensor([delta_bits(s - best) for s in shifts], dtype=cost.dtype, device=cost.device)
    pick = (cost + side[:, None]).argmin(0)
    chosen = tuple(shifts[k] for k in pick.tolist())
    spent = float(cost.gather(0, pick[None])[0].sum()) + 8 * shift_payload_bytes(chosen)
    return chosen if spent < total[best + SHIFT_SEARCH] else best


def shift_payload_bytes(shift: int | tuple[int, ...]) -> int:
    """Bytes a file spends on per-channel shifts beyond y and z: payload and length field."""
    deltas = split_shift(shift)[1]
    return 0 if deltas is None else len(pack_deltas(deltas)) + 4


def split_shift(shift: int | tuple[int, ...]) -> tuple[int, tuple[int, ...] | None]:
    """A file's (scale shift byte, per-channel deltas or None) for a shift: the byte is the
    most common channel shift (ties: nearest 0, then the smaller), so most deltas are 0."""
    if isinstance(shift, int):
        return shift, None
    base = max(set(shift), key=lambda v: (shift.count(v), -abs(v), -v))
    return base, tuple(s - base for s in shift)


def _indexes(fp: FixedPointEntropy, scale: torch.Tensor, slices, shifts: Sequence[int | tuple[int, ...]]) -> torch.Tensor:
    """Scale indexes of one step's positions, each image's with its own shift."""
    if len(set(shifts[b] for b, _, _ in slices)) == 1:
        return fp.scale_index(scale, shifts[slices[0][0]])
    return torch.cat([fp.scale_index(scale[lo:hi], shifts[b]) for b, lo, hi in slices])


def fronts(height: int, width: int) -> list[tuple[int, int]]:
    """Positions (i, j) in coding order: by front t = 3i + j, then by row i."""
    return sorted(((i, j) for i in range(height) for j in range(width)), key=lambda p: (3 * p[0] + p[1], p[0]))


def coding_steps(height: int, width: int, context: str = "serial") -> list[tuple[list[tuple[int, int]], bool]]:
    """The positions of each step of the coding order and whether the step has context:
    the wavefronts of the serial context, or the checkerboard's two passes (anchors
    without context, then the rest), each pass in raster order."""
    if context == "checkerboard":
        grid = [(i, j) for i in range(height) for j in range(width)]
        return [([p for p in grid if (p[0] + p[1]) % 2 == 0], False), ([p for p in grid if (p[0] + p[1]) % 2], True)]
    by_front: dict[int, list[tuple[int, int]]] = {}
    for i, j in fronts(height, width):
        by_front.setdefault(3 * i + j, []).append((i, j))
    return [(by_front[t], True) for t in sorted(by_front)]


class _Schedule:
    """A batch's coding order: for each step, the flat rows of its positions in the y_hat
    buffer (B, H + 4, W + 4, M) and the hyper parameters (B, H, W, 2M), the rows of their
    context windows (None for a step without context), and each image's slice of the
    step (images of any sizes: a smaller one leaves its part of the buffer zero, as its
    own padding would be)."""

    def __init__(self, fp: FixedPointEntropy, sizes: Sequence[tuple[int, int]], context: str = "serial") -> None:
        self.height, self.width = max(s[0] for s in sizes), max(s[1] for s in sizes)
        padded = (self.height + 2 * PAD, self.width + 2 * PAD)
        per_image = [coding_steps(h, w, context) for h, w in sizes]
        self.steps = []
        for k in range(max(len(steps) for steps in per_image)):
            pos, slices = [], []
            for image, steps in enumerate(per_image):
                if k < len(steps) and steps[k][0]:
                    slices.append((image, len(pos), len(pos) + len(steps[k][0])))
                    pos += [(image, i, j) for i, j in steps[k][0]]
            b, i, j = torch.tensor(pos, device=fp.device).t()
            at = (b * self.height + i) * self.width + j
            write = (b * padded[0] + i + PAD) * padded[1] + j + PAD
            window = fp.window_index(b, i, j, padded) if per_image[slices[0][0]][k][1] else None
            self.steps.append((window, at, write, b, i, j, slices))

    def rows_in_order(self, image: int) -> torch.Tensor:
        """The latent row i of each of an image's positions, in its coding order (CPU)."""
        return torch.cat([i[lo:hi] for _, _, _, _, i, _, slices in self.steps for b, lo, hi in slices if b == image]).cpu()

    def row_streams(self, counts: Sequence[int]) -> list[torch.Tensor]:
        """For each step, the stream of each of its positions when image b's rows are dealt
        to counts[b] streams (row i to stream i mod counts[b], numbered across the batch):
        format 4's order (row_streams.py). Kept per ``counts``."""
        cache = self.__dict__.setdefault("_row_streams", {})
        key = tuple(counts)
        if key not in cache:
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            k = torch.tensor(key, device=self.steps[0][4].device)
            base = torch.cumsum(k, 0) - k
            cache[key] = [base[b] + i % k[b] for _, _, _, b, i, _, _ in self.steps]
        return cache[key]

    def padded_row_streams(self, counts: Sequence[int], rows: int) -> torch.Tensor:
        """:meth:`row_streams` of the steps with context, padded to ``rows`` with -1 (no
        stream): (steps, rows), for PaddedFronts.decode_all. Kept per (counts, rows)."""
        cache = self.__dict__.setdefault("_padded_row_streams", {})
        key = (tuple(counts), rows)
        if key not in cache:
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            ids = [s for s, step in zip(self.row_streams(counts), self.steps) if step[0] is not None]
            out = torch.full((len(ids), rows), -1, dtype=torch.long, device=ids[0].device)
            for n, s in enumerate(ids):
                out[n, : len(s)] = s
            cache[key] = out
        return cache[key]

    def allocate(self, fp: FixedPointEntropy, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Zero buffers for ``batch`` images: y_hat (B, h + 4, w + 4, M), the same as rows
        with one scratch row after them (front_steps.py's padding rows write there), and
        the hyper parameters flattened to rows (B * h * w, 2M)."""
        shape = (batch, self.height + 2 * PAD, self.width + 2 * PAD, fp.M)
        rows = torch.zeros(shape[0] * shape[1] * shape[2] + 1, fp.M, device=fp.device, dtype=fp.dtype)
        params = torch.zeros(batch * self.height * self.width, 2 * fp.M, device=fp.device, dtype=fp.dtype)
        return rows[:-1].view(shape), rows, params

    def buffers(self, fp: FixedPointEntropy, params_list: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero y_hat buffer (B, h + 4, w + 4, M) and the batch's hyper parameters as rows."""
        y_pad, _, params = self.allocate(fp, len(params_list))
        self.fill_params(params, params_list)
        return y_pad, params

    def fill_params(self, params: torch.Tensor, params_list: list[torch.Tensor]) -> None:
        """Each image's hyper parameters (1, h, w, 2M) into the rows (B * h * w, 2M)."""
        grid = params.view(len(params_list), self.height, self.width, -1)
        grid.zero_()
        for b, p in enumerate(params_list):
            grid[b, : p.shape[1], : p.shape[2]] = p[0]

    def padded(
        self, fp: FixedPointEntropy, batch: int, shift: int | tuple[int, ...] | None, fused: bool = True
    ) -> PaddedFronts:
        """The padded context steps with their own buffers (replayed from CUDA graphs on a
        GPU), kept for the next call of the same batch size, shift and ``fused``: capture
        is paid once. ``shift=None``: the encoder's (:class:`PaddedEncodeFronts`)."""
        cache = self.__dict__.setdefault("_padded", {})
        key = (batch, shift, fused)
        if key not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            y_pad, rows, params = self.allocate(fp, batch)
            if shift is None:
                fixed = PaddedEncodeFronts(fp, self.steps, y_pad, rows, params, batch, fused)
            else:
                fixed = PaddedFronts(fp, self.steps, y_pad, rows, params, shift, fused)
            cache[key] = fixed  # its graphs are recorded by the path that replays them
        return cache[key]


def _schedule(fp: FixedPointEntropy, sizes: list[tuple[int, int]], context: str) -> _Schedule:
    """The schedule of these sizes, built once per FixedPointEntropy (6 ms for a 768x512
    image, 50 ms at 4K: worth keeping when many images share a size)."""
    cache = fp.__dict__.setdefault("_schedules", {})
    key = (tuple(sizes), context)
    if key not in cache:
        if len(cache) >= 16:
            cache.pop(next(iter(cache)))
        cache[key] = _Schedule(fp, sizes, context)
    return cache[key]


def _z_symbols(model, z_strings: list[bytes], size: tuple[int, int]) -> torch.Tensor:
    """z's integer symbols (the entropy bottleneck's decode without adding the medians)."""
    eb = model.entropy_bottleneck
    indexes = eb._build_indexes((len(z_strings), eb._quantized_cdf.size(0), *size)).to(eb._quantized_cdf.device)
    return EntropyModel.decompress(eb, z_strings, indexes, torch.float32, None)


def _decode_z(model, z_string: bytes, latent_size: tuple[int, int]) -> torch.Tensor:
    zh, zw = latent_size[0] // 4, latent_size[1] // 4
    try:
        return _z_symbols(model, [guard(z_string, model.N * zh * zw)], (zh, zw))
    except Exception as e:  # the rANS bindings raise bare RuntimeErrors on garbage
        raise FormatError(f"hyperprior payload does not decode: {e}") from None


def _latent(y_pad: torch.Tensor, sizes) -> list[torch.Tensor]:
    """Float y_hat (1, M, h, w) of each image from the integer buffer."""
    return [
        (y_pad[b, PAD : PAD + h, PAD : PAD + w] / UNIT).permute(2, 0, 1)[None].to(torch.float32).contiguous()
        for b, (h, w) in enumerate(sizes)
    ]


@torch.no_grad()
def quantize_latents(
    model: AINN,
    y: torch.Tensor,
    progress: Callable | None = None,
    padded_fronts: bool = False,
    fused: bool | None = None,
    z: torch.Tensor | None = None,
) -> tuple[list[bytes], torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The encoder's pass over a batch of latents y (B, M, h, w) in coding order: z's
    strings, y_hat, and for each image its symbols and integer scales in stream order.
    ``padded_fronts``: the wavefronts at one padded shape, all of them one CUDA graph on a
    GPU (front_steps.py; the serial context only; ``progress`` is not called), the same
    symbols. ``fused``: the fused parameter kernels where they run (None: when
    :func:`entropy_path` is "fused"); the same symbols. ``z``: the hyper-latents to code
    (default h_a(y); the encoder's refinement moves them too)."""
    fp = fixed_point(model, y.device)
    if fused is None:
        fused = entropy_path(y.device) == "fused"
    batch, _, height, width = y.shape
    sizes = [(height, width)] * batch
    z_strings = model.entropy_bottleneck.compress(model.h_a(y) if z is None else z)
    z_sym = _z_symbols(model, z_strings, (height // 4, width // 4))
    schedule = _schedule(fp, sizes, model.config.context)
    params_list = [fp.hyper_params(z_sym[b : b + 1]) for b in range(batch)]
    if padded_fronts and all(s[0] is not None for s in schedule.steps):
        fixed = schedule.padded(fp, batch, None, fused)
        schedule.fill_params(fixed.params, params_list)
        fixed.source.view(batch, height, width, fp.M).copy_(y.permute(0, 2, 3, 1))  # one copy, to float64
        y_pad, _ = fixed.reset()
        fixed.encode_all()  # progress is not called: on a GPU the steps are one graph
        return z_strings, torch.cat(_latent(y_pad, sizes)), fixed.streams()
    y_pad, params = schedule.buffers(fp, params_list)
    y_flat, y_cl = y_pad.view(-1, fp.M), y.permute(0, 2, 3, 1).to(fp.dtype)
    symbols: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    scales: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    for window, at, write, b_idx, i, j, slices in progress(schedule.steps) if progress else schedule.steps:
        scale, mean = fp.position_params(y_flat, params, window, at, fused)
        q = torch.round(y_cl[b_idx, i, j] - mean / UNIT)
        y_flat[write] = (q * UNIT + mean).clamp_(-ACT_MAX, ACT_MAX)
        for b, lo, hi in slices:
            symbols[b].append(q[lo:hi].flatten())
            scales[b].append(scale[lo:hi].flatten())
    coded = [(torch.cat(symbols[b]), torch.cat(scales[b])) for b in range(batch)]
    return z_strings, torch.cat(_latent(y_pad, sizes)), coded


def rans_encode(model: AINN, q: torch.Tensor, index: torch.Tensor, native: bool | None = None) -> bytes:
    """One y stream (formats 2 and 3) of symbols ``q`` with table rows ``index``, in stream
    order: format 4's coder with a single stream (``native`` as row_streams.encode's)."""
    q, index = q.reshape(-1, model.M), index.reshape(-1, model.M)
    return row_streams.encode(model, q, index, torch.zeros(len(q), dtype=torch.long), 1, native)[0]


def encode_latents(
    model: AINN, y: torch.Tensor, progress: Callable | None = None, scale_shift: int | None = None,
    padded_fronts: bool = False, streams: int | None = 0, z: torch.Tensor | None = None,
) -> tuple[list[bytes], list[bytes], torch.Tensor, list[int | tuple[int, ...]]]:
    """Code a batch of latents y (B, M, h, w). Returns (y_strings, z_strings, y_hat,
    scale_shifts): each image with the scale shift (one, or one per channel) that makes
    its file smallest, or every image with ``scale_shift`` when given (0: format 2).
    ``streams``: 0, one rANS stream per image (formats 2 and 3); K >= 1, format 4's y
    payload of K row streams (row_streams.py); None, format 4 with the default K.
    ``padded_fronts`` and ``z``: see :func:`quantize_latents`."""
    fp = fixed_point(model, y.device)
    path = entropy_path(y.device)  # which rANS coder, where; the parameters fused or not
    z_strings, y_hat, coded = quantize_latents(model, y, progress, padded_fronts, path == "fused", z)
    native = path != "compressai"

    def coder_side(t: torch.Tensor) -> torch.Tensor:  # "host": the native coder on the CPU
        return t.cpu() if path == "host" else t

    height, width = y.shape[-2:]
    schedule = _schedule(fp, [(height, width)] * len(coded), model.config.context)
    count = streams if streams else row_streams.default_streams(height, width)
    y_strings, shifts = [], []
    for b, (q, scale) in enumerate(coded):
        shifts.append(choose_scale_shift(fp, model, q, scale) if scale_shift is None else scale_shift)
        q, index = coder_side(q), coder_side(fp.scale_index(scale, shifts[-1]))
        if streams == 0:
            y_strings.append(rans_encode(model, q, index, native))
        else:
            split = row_streams.encode(
                model, q.view(-1, fp.M), index.view(-1, fp.M), schedule.rows_in_order(b), count, native
            )
            y_strings.append(row_streams.pack(split))
    return y_strings, z_strings, y_hat, shifts


@torch.no_grad()
def decode_latents(
    model: AINN,
    y_strings: Sequence[bytes | Sequence[bytes]],
    z_strings: Sequence[bytes],
    latent_sizes: Sequence[tuple[int, int]],
    device: torch.device | str | None = None,
    progress: Callable | None = None,
    scale_shifts: Sequence[int | tuple[int, ...]] | None = None,
    padded_fronts: bool = False,
    native: bool | None = None,
    fused: bool | None = None,
) -> list[torch.Tensor]:
    """Invert :func:`encode_latents` for a batch of files, each of its own latent size and
    scale shift (format 2: 0): a list of y_hat (1, M, h, w), step by step of the coding
    order (wavefronts, or the checkerboard's two passes). Each image's y is one stream
    (bytes, formats 2 and 3) or its list of row streams (format 4,
    :func:`row_streams.unpack`). ``padded_fronts`` runs the context steps at one padded
    shape, from CUDA graphs on a GPU (front_steps.py): the same symbols, fewer launches;
    with the serial context and the native decoder, every front in one loop on the device,
    on a GPU one CUDA graph (``progress`` is then not called). ``native``: decode the rANS
    streams with the native kernel on the device (False: CompressAI's decoder on the
    host); ``fused``: the context steps' parameters from the fused CUDA kernels (False: the
    torch ops; None: as ``native``). Both None: :func:`entropy_path`, which can also put
    the native decoder on the host. The same symbols every way."""
    shifts = list(scale_shifts) if scale_shifts is not None else [0] * len(y_strings)
    fp = fixed_point(model, device)
    if native is None:
        path = entropy_path(fp.device)
        coder = "device" if path == "fused" else path
        fused = (path == "fused") if fused is None else fused
    else:
        coder = "device" if native else "compressai"
        fused = native if fused is None else fused
    native = coder == "device"
    sizes = [tuple(s) for s in latent_sizes]
    z_syms = [_decode_z(model, z, s) for z, s in zip(z_strings, sizes)]
    schedule = _schedule(fp, sizes, model.config.context)
    params_list = [fp.hyper_params(z) for z in z_syms]
    fixed = None  # the context steps at one shape (front_steps.py): one shift for the batch only
    if padded_fronts and len(set(shifts)) == 1 and any(s[0] is not None for s in schedule.steps):
        fixed = schedule.padded(fp, len(sizes), shifts[0], fused=fused)
        schedule.fill_params(fixed.params, params_list)
        (y_pad, y_flat), params = fixed.reset(), fixed.params
    else:
        y_pad, params = schedule.buffers(fp, params_list)
        y_flat = y_pad.view(-1, fp.M)
    per_image = [[y] if isinstance(y, (bytes, bytearray)) else list(y) for y in y_strings]
    streams = [s for image_streams in per_image for s in image_streams]
    counts = [len(s) for s in per_image]
    if native:
        if fixed is not None and all(s[0] is not None for s in schedule.steps):
            # Every front on the device, on a GPU one graph over buffers kept with the steps.
            if "decoders" in fixed.__dict__:
                fixed.decoders.load(streams)
            else:
                fixed.decoders = row_streams.device_decoders(model, streams, fp.device)
            fixed.decode_all(fixed.decoders, schedule.padded_row_streams(counts, fixed.rows))
            return _latent(y_pad, sizes)
        decoders = row_streams.device_decoders(model, streams, fp.device)
    elif coder == "host":
        decoders = row_streams.HostDecoders(model, streams)
    else:
        symbols = []  # how many each stream holds: CompressAI's decoder needs its input padded
        for b, k in enumerate(counts):
            symbols += (torch.bincount(schedule.rows_in_order(b) % k, minlength=k) * model.M).tolist()
        decoders = row_streams.CompressAIDecoders(streams, symbols, host_tables(model))
    stream_of = schedule.row_streams(counts)
    # One shift for the whole batch and the native decoder: a step is its parameters and
    # one decoding kernel that also picks the table rows and writes y_hat.
    one_step = native and fixed is None and len(set(shifts)) == 1
    if one_step:
        thresholds = fp.channel_thresholds(shifts[0] if isinstance(shifts[0], tuple) else (shifts[0],) * fp.M)
    for k, (window, at, write, _, _, _, slices) in enumerate(progress(schedule.steps) if progress else schedule.steps):
        if one_step:
            gaussian = fp.position_gaussian(y_flat, params, window, at, fused)
            decoders.decode_step(gaussian, thresholds, stream_of[k], y_flat, write)
            continue
        if fixed is not None and window is not None:
            index = fixed.parameters(k, len(at))
        else:
            scale, mean = fp.position_params(y_flat, params, window, at, fused)
            index = _indexes(fp, scale, slices, shifts)
        q = decoders.decode(index, stream_of[k], fp.dtype)
        if fixed is not None and window is not None:
            fixed.write_symbols(q)
        else:
            y_flat[write] = (q * UNIT + mean).clamp_(-ACT_MAX, ACT_MAX)
    return _latent(y_pad, sizes)


@torch.no_grad()
def decode_latents_serial(
    model: AINN, y_string: bytes | Sequence[bytes], z_string: bytes, latent_size: tuple[int, int],
    scale_shift: int | tuple[int, ...] = 0,
) -> torch.Tensor:
    """The reference decoder of formats 2 to 4: one position at a time in coding order,
    int64 arithmetic and CompressAI's decoder on the CPU (CompressAI's loop structure);
    position (i, j) reads stream i mod K of format 4's K row streams. Slow; for tests and
    benchmarks."""
    if model.config.context != "serial":
        raise ValueError("the serial reference decoder is for the serial context")
    fp = FixedPointEntropy(model, "cpu", torch.int64)
    height, width = latent_size
    padded = (height + 2 * PAD, width + 2 * PAD)
    params = fp.hyper_params(_decode_z(model, z_string, latent_size).cpu().to(torch.int64)).view(-1, 2 * fp.M)
    y_pad = torch.zeros(1, *padded, fp.M, dtype=torch.int64)
    tables = host_tables(model)
    streams = [y_string] if isinstance(y_string, (bytes, bytearray)) else list(y_string)
    decoders = []
    for stream in streams:
        decoders.append(RansDecoder())
        decoders[-1].set_stream(guard(stream, model.M * height * width))
    zero = torch.zeros(1, dtype=torch.int64)
    for i, j in fronts(height, width):
        at_i, at_j = torch.tensor([i]), torch.tensor([j])
        window = fp.window_index(zero, at_i, at_j, padded)
        scale, mean = fp.position_params(y_pad.view(-1, fp.M), params, window, at_i * width + at_j)
        index = fp.scale_index(scale, scale_shift)[0].tolist()
        q = torch.tensor(decoders[i % len(streams)].decode_stream(index, *tables), dtype=torch.int64)
        y_pad[0, i + PAD, j + PAD] = (q * UNIT + mean[0]).clamp(-ACT_MAX, ACT_MAX)
    return _latent(y_pad, [latent_size])[0]


# Format version 1: float parameters, serial raster order. Kept so that old files decode
# (on the device and software that made them: floats are not portable) and as the
# baseline for the rate cost of the fixed-point path.


def _position_params_v1(model, y_pad, params, masked_weight, h: int, w: int):
    crop = y_pad[:, :, h : h + KERNEL, w : w + KERNEL]
    ctx = F.conv2d(crop, masked_weight, bias=model.context_prediction.bias)
    gaussian = model.entropy_parameters(torch.cat((params[:, :, h : h + 1, w : w + 1], ctx), dim=1))
    scales, means = gaussian.chunk(2, 1)
    return scales.flatten(), means.flatten()


def _masked_weight(model) -> torch.Tensor:
    cp = model.context_prediction
    return cp.weight * cp.mask


@torch.no_grad()
def encode_latents_v1(model: AINN, y: torch.Tensor) -> tuple[bytes, bytes, torch.Tensor]:
    """Format 1: code one latent y (1, M, h, w). Returns (y_string, z_string, y_hat)."""
    z = model.h_a(y)
    z_string = model.entropy_bottleneck.compress(z)[0]
    params = model.h_s(model.entropy_bottleneck.decompress([z_string], z.shape[-2:]))
    height, width = y.shape[-2:]
    y_pad = torch.zeros(1, model.M, height + 2 * PAD, width + 2 * PAD, device=y.device, dtype=y.dtype)
    weight, gc = _masked_weight(model), model.gaussian_conditional
    symbols: list[int] = []
    indexes: list[int] = []
    for h in range(height):
        for w in range(width):
            scales, means = _position_params_v1(model, y_pad, params, weight, h, w)
            q = torch.round(y[0, :, h, w] - means)
            y_pad[0, :, h + PAD, w + PAD] = q + means
            symbols.extend(q.to(torch.int32).tolist())
            indexes.extend(gc.build_indexes(scales).tolist())
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(symbols, indexes, *host_tables(model))
    return encoder.flush(), z_string, y_pad[:, :, PAD:-PAD, PAD:-PAD]


@torch.no_grad()
def decode_latents_v1(model: AINN, y_string: bytes, z_string: bytes, latent_size: tuple[int, int]) -> torch.Tensor:
    """Invert :func:`encode_latents_v1`: y_hat (1, M, h, w)."""
    height, width = latent_size
    device = next(model.parameters()).device
    try:
        z_hat = model.entropy_bottleneck.decompress(
            [guard(z_string, model.N * (height // 4) * (width // 4))], (height // 4, width // 4)
        )
    except Exception as e:  # the rANS bindings raise bare RuntimeErrors on garbage
        raise FormatError(f"hyperprior payload does not decode: {e}") from None
    params = model.h_s(z_hat.to(device))
    y_pad = torch.zeros(1, model.M, height + 2 * PAD, width + 2 * PAD, device=device)
    weight, gc = _masked_weight(model), model.gaussian_conditional
    tables = host_tables(model)
    decoder = RansDecoder()
    decoder.set_stream(guard(y_string, model.M * height * width))
    for h in range(height):
        for w in range(width):
            scales, means = _position_params_v1(model, y_pad, params, weight, h, w)
            q = decoder.decode_stream(gc.build_indexes(scales).tolist(), *tables)
            y_pad[0, :, h + PAD, w + PAD] = torch.tensor(q, dtype=torch.float32, device=device) + means
    return y_pad[:, :, PAD:-PAD, PAD:-PAD]
