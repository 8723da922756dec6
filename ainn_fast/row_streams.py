"""The y payload of format 4: several rANS streams, so that a front's symbols decode in parallel.

One rANS stream is a chain: each symbol's decoding needs the state the previous symbol
left, so a decoder holding one stream decodes a wavefront's positions one after another,
on the host. Format 4 (docs/format.md) deals the latent rows to K streams, row i to
stream i mod K, each stream holding its rows' positions in coding order. With K at least
the number of rows a front spans (ceil(w / 3) for the 5x5 context's fronts t = 3i + j),
every stream holds at most one position of a front, so all positions of a front decode
at once, one thread per stream, on the CPU or on the GPU (``native_rans_decode``).

The streams are CompressAI's rANS coder's. They are written by ``native_rans_encode``
(all streams at once, on the symbols' device) or by CompressAI's encoder, and read by
``native_rans_decode(_step)`` or by CompressAI's decoder; CompressAI's side is the
reference and the path when the native extension is missing, and the native kernels
(csrc/ops/rans_encode.h, rans_decode.h) must give its bytes and symbols exactly
(tests/test_row_streams.py). K = 1 is format 3's single stream.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from compressai.ans import BufferedRansEncoder, RansDecoder

from .errors import FormatError
from .fixed_point import ACT_MAX, UNIT
from .models import AINN

MAX_STREAMS = 255
MIN_STREAM_BYTES = 8  # the coder's flush: the final 64-bit state
# A stream without symbols: the coder's initial state 2^31, flushed as two words. Written
# here because CompressAI's encoder flushes past its buffer when given no symbols.
EMPTY_STREAM = (2**31).to_bytes(8, "little")


def default_streams(height: int, width: int) -> int:
    """The encoder's default K for a latent of ``height`` x ``width``: the most rows a
    front of the serial context spans, ceil(w / 3), at most the rows there are. (A
    checkerboard pass spans every row; it gets the same count, which keeps the rate cost
    alike and still gives each stream few positions a pass.)"""
    return max(1, min(height, math.ceil(width / 3), MAX_STREAMS))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def pack(streams: Sequence[bytes]) -> bytes:
    """The payload: K (one byte), the word counts minus two of streams 0..K-2 (LEB128),
    then the streams; the last one's length is what remains."""
    if not 1 <= len(streams) <= MAX_STREAMS:
        raise ValueError(f"{len(streams)} streams; a file holds 1..{MAX_STREAMS}")
    for s in streams:
        if len(s) % 4 or len(s) < MIN_STREAM_BYTES:
            raise ValueError(f"a rANS stream of {len(s)} bytes is not whole 32-bit words of at least 2")
    head = bytes([len(streams)]) + b"".join(_varint(len(s) // 4 - 2) for s in streams[:-1])
    return head + b"".join(streams)


def unpack(payload: bytes) -> list[bytes]:
    """Invert :func:`pack`, validating every length against the payload's size."""
    if not payload or not 1 <= payload[0] <= MAX_STREAMS:
        raise FormatError("y payload has no valid stream count")
    count, pos, lengths = payload[0], 1, []
    for _ in range(count - 1):
        value, shift = 0, 0
        while True:
            if pos >= len(payload) or shift > 28:
                raise FormatError("y payload's stream lengths are malformed")
            byte = payload[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        lengths.append(4 * (value + 2))
    last = len(payload) - pos - sum(lengths)
    if last < MIN_STREAM_BYTES or last % 4:
        raise FormatError(f"y payload's stream lengths disagree with its size ({len(payload)} bytes)")
    lengths.append(last)
    streams = []
    for n in lengths:
        streams.append(payload[pos : pos + n])
        pos += n
    return streams


def host_tables(model: AINN) -> tuple[list, list, list]:
    """The model's CDF tables as CompressAI's coder takes them: Python lists, each row
    trimmed to its used length (the coder reads no further, and the bindings convert
    every row passed on every call)."""
    gc = model.gaussian_conditional
    lengths = gc.cdf_length.tolist()
    cdfs = [row[:n] for row, n in zip(gc.quantized_cdf.tolist(), lengths)]
    return cdfs, lengths, gc.offset.tolist()


def split_by_stream(rows: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Positions (indexes into the coding order) of each stream, in order, given the
    latent row of every position in coding order."""
    owner = rows % count
    return [torch.nonzero(owner == s).flatten() for s in range(count)]


def encode(
    model: AINN, q: torch.Tensor, index: torch.Tensor, rows: torch.Tensor, count: int, native: bool | None = None
) -> list[bytes]:
    """K streams of symbols ``q`` with table rows ``index`` (both (positions, M), in coding
    order), position p going to stream rows[p] mod K: all at once by ``native_rans_encode``
    on the symbols' device where it runs (``native=None``), else one by one by CompressAI's
    encoder; the same bytes."""
    if native is None:
        native = native_available(q.device)
    if native:
        return _encode_native(model, q, index, rows, count)
    q, index = q.to("cpu", torch.int64), index.to("cpu", torch.int64)
    tables = host_tables(model)
    out = []
    for positions in split_by_stream(rows.cpu(), count):
        if not len(positions):
            out.append(EMPTY_STREAM)
            continue
        # Only the CDF rows used cross into the coder (its bindings convert every row passed).
        used, inverse = np.unique(index[positions].numpy(), return_inverse=True)
        encoder = BufferedRansEncoder()
        encoder.encode_with_indexes(
            q[positions].flatten().tolist(), inverse.ravel().tolist(), *([t[r] for r in used.tolist()] for t in tables)
        )
        out.append(encoder.flush())
    return out


def _encode_native(model, q: torch.Tensor, index: torch.Tensor, rows: torch.Tensor, count: int) -> list[bytes]:
    t = device_tables(model, q.device)
    q, index = q.to(torch.int32).contiguous(), index.to(torch.int64).contiguous()
    stream = (rows.to(q.device) % count).contiguous()
    # Each stream's words, exactly bounded: one per symbol, nine more per bypass-coded
    # symbol (its value and count nibbles), two for the flush.
    value = q - t.offset[index]
    bypass = ((value < 0) | (value >= t.cdf_length[index] - 2)).sum(1)
    words_per_position = q.shape[1] + 9 * bypass
    size = torch.zeros(count, dtype=torch.int64, device=q.device).index_add_(0, stream, words_per_position) + 2
    end = torch.cumsum(size, 0)
    regions = torch.stack((end - size, end), 1).contiguous()
    total = int(end[-1])
    words, begin = torch.ops.ainn_fast.native_rans_encode(q, index, stream, regions, t.cdf, t.cdf_length, t.offset, total)
    begin, end = begin.tolist(), end.tolist()
    if min(begin) < 0:
        raise RuntimeError("native_rans_encode: a stream outgrew its bound (a bug)")
    data = words.cpu().numpy()
    return [data[b:e].astype("<u4", copy=False).tobytes() for b, e in zip(begin, end)]


def guard(payload: bytes, symbols: int) -> bytes:
    """The payload followed by zeros: CompressAI's rANS decoder does not bounds-check its
    input, so a forged payload could make it read past the end; each decoded symbol reads
    at most 4 bytes outside of bypass codes, so this keeps such reads inside our buffer."""
    return payload + bytes(4 * symbols + 64)


def decode_front(decoder: RansDecoder, index: np.ndarray, tables: tuple[list, list, list]) -> list[int]:
    """Decode the symbols of ``index`` handing CompressAI's coder only the CDF rows they
    use: the bindings convert every row passed on every call, which would cost more than
    the decoding itself (0.4 ms per call for the lite model's whole table)."""
    used, inverse = np.unique(index, return_inverse=True)
    sub = tuple([table[r] for r in used.tolist()] for table in tables)
    return decoder.decode_stream(inverse.ravel().tolist(), *sub)


class CompressAIDecoders:
    """The reference: one CompressAI ``RansDecoder`` per stream, rows decoded on the host
    (the tables cross from Python on every call, 0.4 ms for the lite model: slow with
    many streams, used when the native extension is missing)."""

    def __init__(self, streams: Sequence[bytes], symbols: Sequence[int], tables: tuple[list, list, list]) -> None:
        self.tables = tables
        self.decoders = []
        for s, n in zip(streams, symbols):
            self.decoders.append(RansDecoder())
            self.decoders[-1].set_stream(guard(s, n))

    def decode(self, index: torch.Tensor, row_stream: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Symbols (rows, M) of the rows of a step (``row_stream``: each row's stream, -1
        for none) from their table rows ``index`` (rows, M), on ``index``'s device."""
        ids = row_stream.cpu().numpy()
        flat = index.cpu().numpy()
        out = np.zeros(flat.shape, dtype=np.float64)
        for s in np.unique(ids[ids >= 0]).tolist():
            rows = np.flatnonzero(ids == s)
            symbols = decode_front(self.decoders[s], flat[rows], self.tables)
            out[rows] = np.asarray(symbols, dtype=np.float64).reshape(len(rows), -1)
        return torch.from_numpy(out).to(index.device, dtype)


class NativeDecoders:
    """The same streams decoded by ``torch.ops.ainn_fast.native_rans_decode`` on the
    tensors' device: words and states stay there, so a GPU decoder never waits for the host.

    :meth:`load` refills the same buffers where they are large enough, so that a CUDA
    graph recorded over them (front_steps.PaddedFronts.decode_all) replays for the next file."""

    def __init__(self, streams: Sequence[bytes], tables: "DeviceTables") -> None:
        self.tables = tables
        self.words = torch.zeros(0, dtype=torch.int32, device=tables.cdf.device)
        self.state = torch.zeros(0, 3, dtype=torch.int64, device=tables.cdf.device)
        self.load(streams)

    def load(self, streams: Sequence[bytes]) -> bool:
        """Point the decoders at new streams (each stream's end bounds its reads, so older
        words left past them are never read); True when the buffers had to be replaced
        (larger, or another stream count)."""
        words = np.frombuffer(b"".join(streams), dtype="<u4")
        starts = np.cumsum([0] + [len(s) // 4 for s in streams])
        first = words.astype(np.uint64)
        x = first[starts[:-1]] | (first[starts[:-1] + 1] << np.uint64(32))
        state = torch.from_numpy(np.stack([x.view(np.int64), starts[:-1] + 2, starts[1:]], axis=1).astype(np.int64))
        words = torch.from_numpy(words.view(np.int32).copy())
        moved = len(words) > len(self.words) or state.shape != self.state.shape
        if moved:
            device = self.tables.cdf.device
            self.words = torch.zeros(max(len(words), 2 * len(self.words)), dtype=torch.int32, device=device)
            self.state = torch.zeros(state.shape, dtype=torch.int64, device=device)
        self.words[: len(words)].copy_(words)
        self.state.copy_(state)
        return moved

    def decode(self, index: torch.Tensor, row_stream: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        t = self.tables
        out_dtype = torch.int64 if dtype == torch.int64 else torch.float64
        q = torch.ops.ainn_fast.native_rans_decode(
            self.state, self.words, row_stream, index.contiguous(), t.cdf, t.cdf_length, t.offset, out_dtype
        )
        return q if q.dtype == dtype else q.to(dtype)


    def decode_step(
        self, gaussian: torch.Tensor, thresholds: torch.Tensor, row_stream: torch.Tensor, y_rows: torch.Tensor,
        write: torch.Tensor,
    ) -> None:
        """A whole step in one kernel: the table rows from the scales of ``gaussian`` (P,
        2M: scales, then means) and the channels' ``thresholds`` (M, n), the symbols, and
        each position's y_hat integer clamp(q * UNIT + mean) into ``y_rows[write]``."""
        t = self.tables
        torch.ops.ainn_fast.native_rans_decode_step(
            self.state, self.words, row_stream, gaussian, thresholds, t.cdf, t.cdf_length, t.offset, y_rows, write,
            float(UNIT), float(ACT_MAX),
        )


class HostDecoders(NativeDecoders):
    """The native decoder on the host for a step whose table rows were computed on another
    device (a GPU): the rows cross to the host, the symbols back, one round trip a step
    (what CompressAIDecoders costs too, with a faster decoder between)."""

    def __init__(self, model, streams: Sequence[bytes]) -> None:
        super().__init__(streams, device_tables(model, torch.device("cpu")))

    def decode(self, index: torch.Tensor, row_stream: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return super().decode(index.cpu(), row_stream.cpu(), dtype).to(index.device)


class DeviceTables:
    """A model's CDF tables as tensors on one device, for :class:`NativeDecoders`."""

    def __init__(self, model, device: torch.device) -> None:
        gc = model.gaussian_conditional
        self.cdf = gc.quantized_cdf.to(device, torch.int32).contiguous()
        self.cdf_length = gc.cdf_length.to(device, torch.int32).contiguous()
        self.offset = gc.offset.to(device, torch.int32).contiguous()


def native_available(device: torch.device) -> bool:
    """Whether ``native_rans_decode`` runs on ``device`` (the extension loads, with CUDA
    kernels for a GPU)."""
    from . import native

    return native.probe(device.type) is None and hasattr(torch.ops.ainn_fast, "native_rans_decode")


def device_tables(model: AINN, device: torch.device) -> DeviceTables:
    """The model's :class:`DeviceTables` on ``device``, converted once per model and device."""
    cache = model.__dict__.setdefault("_ainn_device_tables", {})
    key = (getattr(model, "_ainn_hash", None), str(device))
    if key not in cache or key[0] is None:
        cache.clear()
        cache[key] = DeviceTables(model, device)
    return cache[key]


def device_decoders(model: AINN, streams: Sequence[bytes], device: torch.device) -> NativeDecoders:
    """:class:`NativeDecoders` of ``streams`` (all images' streams, numbered in order) on
    ``device``, with the model's tables there."""
    return NativeDecoders(streams, device_tables(model, device))
