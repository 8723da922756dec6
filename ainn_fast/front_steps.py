"""The coder's context steps at one fixed shape, so that CUDA graphs can replay them.

On a GPU the wavefront decode (and encode) is bound by launches, not arithmetic: each of
the 141 fronts of a 768x512 image ran some 35 small kernels (context gather, four integer
matmuls with their requantisation, scale indexes, the write-back) and a round trip to
the host for the rANS decoding, and the H200 took 165 ms for the latents of the paper
configuration (benchmarks/results/h200_2026-12-04.md), about 1.2 ms a front. Padding
every front to the longest one gives all steps one shape. The decoder with format 4's
row streams decoded on the device (:meth:`PaddedFronts.decode_all`) and the encoder
(:meth:`PaddedEncodeFronts.encode_all`) then run every front as one loop that never
waits for the host, recorded once as a single CUDA graph; with the native CUDA kernels a
front is five of them (four parameter layers, one decoding step). Without the native
decoder, the parameter computation and the write-back are each captured once and
replayed per front around the host's rANS decoding.

Padding rows gather their context from row 0 of the y_hat buffer (always in its zero
border) and their hyper parameters from row 0, and write to a scratch row after the
buffer (or, decoding, nowhere: they belong to no stream). The arithmetic is exact
integer arithmetic in float64 (fixed_point.py), so a real row's result does not depend
on which other rows share the matmul: the padded steps give the same symbols bit for
bit, with or without graphs (tests/test_wavefront.py).
"""

from __future__ import annotations

import torch

from .fixed_point import ACT_MAX, UNIT, FixedPointEntropy
from .row_streams import NativeDecoders


class PaddedFronts:
    """The context steps of a schedule padded to P rows, with buffers of their own, so
    that :meth:`capture` can record them once as two CUDA graphs (parameters, write-back)
    replayed per step, call after call.

    ``steps`` are the schedule's (window, at, write, b, i, j, slices) tuples; ``y_pad`` and
    ``y_rows`` the y_hat buffer and the same as rows with a scratch row last; ``params``
    the flat hyper parameters (filled by the caller before each use); ``shift`` the scale
    shift of the batch's files (None: no scale indexes, the encoder's case, which chooses
    its shift afterwards); ``fused``: the parameters from ``native_entropy_params`` where
    it runs (FixedPointEntropy.position_params).
    """

    def __init__(
        self, fp: FixedPointEntropy, steps: list, y_pad: torch.Tensor, y_rows: torch.Tensor, params: torch.Tensor,
        shift: int | tuple[int, ...] | None, fused: bool = True,
    ) -> None:
        self.fp, self.y_pad, self.y_rows, self.params, self.shift = fp, y_pad, y_rows, params, shift
        self.fused = fused  # the fused CUDA kernels for the parameters, where they run
        with_context = [s for s in steps if s[0] is not None]
        rows = max(len(s[1]) for s in with_context)
        self.scratch = y_rows.shape[0] - 1
        self.rows = rows
        self.padded = {
            k: (self._pad(s[0], 0), self._pad(s[1], 0), self._pad(s[2], self.scratch))
            for k, s in enumerate(steps) if s[0] is not None
        }
        device = fp.device
        self.window = torch.zeros(rows, with_context[0][0].shape[1], dtype=torch.long, device=device)
        self.at = torch.zeros(rows, dtype=torch.long, device=device)
        self.write = torch.full((rows,), self.scratch, dtype=torch.long, device=device)
        self.q = torch.zeros(rows, fp.M, dtype=fp.dtype, device=device)
        self._graphs: list[torch.cuda.CUDAGraph] | None = None

    def reset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero the y_hat buffer for a new batch; returns it (B, h + 4, w + 4, M) and as rows
        without the scratch row."""
        self.y_rows.zero_()
        return self.y_pad, self.y_rows[:-1]

    def _pad(self, t: torch.Tensor, fill: int) -> torch.Tensor:
        out = torch.full((self.rows, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)
        out[: len(t)] = t
        return out

    def _parameters(self) -> None:
        self.scale, self.mean = self.fp.position_params(self.y_rows, self.params, self.window, self.at, self.fused)
        if self.shift is not None:
            self.index = self.fp.scale_index(self.scale, self.shift)

    def _write_back(self) -> None:
        self.y_rows.index_copy_(0, self.write, (self.q * UNIT + self.mean).clamp_(-ACT_MAX, ACT_MAX))

    def capture(self) -> "PaddedFronts":
        """Record the two stages as CUDA graphs. Only the per-step path replays them (the
        host's rANS decoding between), so :meth:`parameters` records them at its first call;
        the static buffers are pointed at the scratch row first, so that the warm-up writes
        nothing real."""
        self.window.zero_()
        self.at.zero_()
        self.write.fill_(self.scratch)
        stages = (self._parameters, self._write_back)
        side = torch.cuda.Stream()  # warm up on a side stream first, as capture requires
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for stage in stages:
                stage()
        torch.cuda.current_stream().wait_stream(side)
        self._graphs, pool = [], None
        for stage in stages:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                stage()
            self._graphs.append(graph)
            pool = graph.pool()
        if isinstance(self.shift, tuple):  # the graphs read these thresholds: keep them alive
            self._graph_inputs = self.fp.channel_thresholds(self.shift)
        return self

    def _run(self, stage: int) -> None:
        if self._graphs:
            self._graphs[stage].replay()
        else:
            (self._parameters, self._write_back)[stage]()

    def _load(self, k: int) -> None:
        window, at, write = self.padded[k]
        self.window.copy_(window)
        self.at.copy_(at)
        self.write.copy_(write)

    def parameters(self, k: int, n: int) -> torch.Tensor:
        """Scale indexes (n, M) of the n positions of step ``k`` (on the device)."""
        if self._graphs is None and self.fp.device.type == "cuda":
            self.capture()
        self._load(k)
        self._run(0)
        return self.index[:n]

    def write_symbols(self, q: torch.Tensor) -> None:
        """y_hat of the step's positions from their decoded symbols q (n, M)."""
        self.q[: len(q)].copy_(q)
        self._run(1)

    def decode_all(self, decoders: NativeDecoders, stream_rows: torch.Tensor) -> None:
        """Every step, its symbols decoded on the device by ``decoders``
        (row_streams.NativeDecoders) from the streams ``stream_rows`` (steps, P) names for
        each padded row (-1: none): no step waits for the host. On a GPU the whole loop is
        one CUDA graph, recorded for these buffers and replayed while they stay the same
        (decoders.load refills them in place); every step must have context (the serial
        context's fronts)."""
        shift = self.shift if isinstance(self.shift, tuple) else (self.shift,) * self.fp.M
        thresholds = self.fp.channel_thresholds(shift)
        if self.fp.device.type != "cuda":
            self._decode_loop(decoders, stream_rows, thresholds)
            return
        key = (decoders.words.data_ptr(), decoders.state.data_ptr(), stream_rows.data_ptr(), thresholds.data_ptr())
        if getattr(self, "_loop_key", None) != key:
            state = decoders.state.clone()
            side = torch.cuda.Stream()  # warm-up first, as capture requires; it decodes, so restore after
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._decode_loop(decoders, stream_rows, thresholds)
            torch.cuda.current_stream().wait_stream(side)
            self._loop = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._loop):
                self._decode_loop(decoders, stream_rows, thresholds)
            # The graph holds raw pointers: keep what it reads alive while it exists.
            self._loop_key, self._loop_inputs = key, (decoders.words, decoders.state, stream_rows, thresholds)
            decoders.state.copy_(state)
            self.y_rows.zero_()
        self._loop.replay()

    def _decode_loop(self, decoders, stream_rows: torch.Tensor, thresholds: torch.Tensor) -> None:
        # Each step reads its own index tensors (no copies into the static ones); on a GPU
        # with the native ops it is one kernel per parameter layer, then one to decode and
        # write y_hat.
        for n, (window, at, write) in enumerate(self.padded.values()):
            gaussian = self.fp.position_gaussian(self.y_rows, self.params, window, at, self.fused)
            decoders.decode_step(gaussian, thresholds, stream_rows[n], self.y_rows, write)


class PaddedEncodeFronts(PaddedFronts):
    """The encoder's pass over the same padded steps (:meth:`encode_all`): y is known, so
    a step rounds its own symbols and files them, with their integer scales, into
    per-image streams on the device. No step waits for the host; the streams are read
    once at the end.

    ``source`` holds y (B * h * w, M) as floats, the rows ``at`` indexes (the caller fills
    it); ``batch`` is the number of images, all of the schedule's size.
    """

    def __init__(
        self, fp: FixedPointEntropy, steps: list, y_pad: torch.Tensor, y_rows: torch.Tensor, params: torch.Tensor,
        batch: int, fused: bool = True,
    ) -> None:
        super().__init__(fp, steps, y_pad, y_rows, params, None, fused)
        self.source = torch.zeros(params.shape[0], fp.M, dtype=fp.dtype, device=fp.device)  # y, filled by the caller
        # Each image's stream is its positions in step order (as the decoder reads them).
        lengths = [0] * batch
        for *_, slices in steps:
            for b, lo, hi in slices:
                lengths[b] += hi - lo
        self.bases = [sum(lengths[:b]) for b in range(batch)]
        self.lengths = lengths
        total = sum(lengths)
        filled = list(self.bases)
        self.destinations = {}
        for k, (_, at, _, _, _, _, slices) in enumerate(steps):
            dest = torch.empty(len(at), dtype=torch.long)
            for b, lo, hi in slices:
                dest[lo:hi] = torch.arange(filled[b], filled[b] + hi - lo)
                filled[b] += hi - lo
            self.destinations[k] = self._pad(dest.to(fp.device), total)  # padding rows: the scratch row
        self.symbols = torch.zeros(total + 1, fp.M, dtype=fp.dtype, device=fp.device)
        self.scales = torch.zeros(total + 1, fp.M, dtype=fp.dtype, device=fp.device)

    def encode_all(self) -> None:
        """Every step, each reading its own index tensors; on a GPU one CUDA graph,
        recorded at the first call and replayed after (all its buffers are this object's).
        The caller fills ``source`` and ``params`` and resets y_hat first."""
        if self.fp.device.type != "cuda":
            self._encode_loop()
            return
        if getattr(self, "_loop", None) is None:
            side = torch.cuda.Stream()  # warm-up first, as capture requires
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._encode_loop()
            torch.cuda.current_stream().wait_stream(side)
            self._loop = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._loop):
                self._encode_loop()
            self.y_rows.zero_()
        self._loop.replay()

    def _encode_loop(self) -> None:
        for k, (window, at, write) in self.padded.items():
            scale, mean = self.fp.position_params(self.y_rows, self.params, window, at, self.fused)
            q = torch.round(self.source.index_select(0, at) - mean / UNIT)
            self.y_rows.index_copy_(0, write, (q * UNIT + mean).clamp_(-ACT_MAX, ACT_MAX))
            self.symbols.index_copy_(0, self.destinations[k], q)
            self.scales.index_copy_(0, self.destinations[k], scale)

    def streams(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each image's (symbols, integer scales), flattened in stream order."""
        return [  # copies: the buffers are reused by the next call
            (self.symbols[base : base + n].flatten().clone(), self.scales[base : base + n].flatten().clone())
            for base, n in zip(self.bases, self.lengths)
        ]
