"""The decoder's context steps at one fixed shape, so that CUDA graphs can replay them.

On a GPU the wavefront decode is bound by launches, not arithmetic: each of the 141 fronts
of a 768x512 image runs some 35 small kernels (context gather, four integer matmuls with
their requantisation, scale indexes, the write-back), and the H200 took 165 ms for the
latents of the paper configuration (benchmarks/results/h200_2026-12-04.md), about 1.2 ms
a front. Padding every front to the longest one gives all steps one shape; the parameter
computation and the write-back are then each captured once and replayed per front.

Padding rows gather their context from row 0 of the y_hat buffer (always in its zero
border) and their hyper parameters from row 0, and write to a scratch row after the
buffer. The arithmetic is exact integer arithmetic in float64 (fixed_point.py), so a real
row's result does not depend on which other rows share the matmul: the padded steps give
the same symbols bit for bit, with or without graphs (tests/test_wavefront.py).
"""

from __future__ import annotations

import torch

from .fixed_point import ACT_MAX, UNIT, FixedPointEntropy


class PaddedFronts:
    """The context steps of a schedule padded to P rows, with (optionally) two CUDA graphs.

    ``steps`` are the schedule's (window, at, write, ...) tuples; ``y_rows`` the flat y_hat
    buffer with its scratch row last; ``params`` the flat hyper parameters.
    """

    def __init__(
        self, fp: FixedPointEntropy, steps: list, y_rows: torch.Tensor, params: torch.Tensor,
        shift: int | tuple[int, ...], graphs: bool,
    ) -> None:
        self.fp, self.y_rows, self.params, self.shift = fp, y_rows, params, shift
        with_context = [s for s in steps if s[0] is not None]
        rows = max(len(s[1]) for s in with_context)
        taps = with_context[0][0].shape[1]
        scratch = y_rows.shape[0] - 1
        self.rows = rows

        def pad(t: torch.Tensor, fill: int) -> torch.Tensor:
            out = torch.full((rows, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)
            out[: len(t)] = t
            return out

        self.padded = {k: (pad(s[0], 0), pad(s[1], 0), pad(s[2], scratch)) for k, s in enumerate(steps) if s[0] is not None}
        device = fp.device
        self.window = torch.zeros(rows, taps, dtype=torch.long, device=device)
        self.at = torch.zeros(rows, dtype=torch.long, device=device)
        self.write = torch.full((rows,), scratch, dtype=torch.long, device=device)
        self.q = torch.zeros(rows, fp.M, dtype=fp.dtype, device=device)
        self._graphs: tuple[torch.cuda.CUDAGraph, torch.cuda.CUDAGraph] | None = None
        if graphs:
            self._capture()

    def _parameters(self) -> None:
        self.scale, self.mean = self.fp.position_params(self.y_rows, self.params, self.window, self.at)
        self.index = self.fp.scale_index(self.scale, self.shift)

    def _write_back(self) -> None:
        self.y_rows.index_copy_(0, self.write, (self.q * UNIT + self.mean).clamp_(-ACT_MAX, ACT_MAX))

    def _capture(self) -> None:
        # Warm up on a side stream first (lazy tables, cuBLAS handles), as capture requires.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._parameters()
            self._write_back()  # every row to the scratch row: harmless
        torch.cuda.current_stream().wait_stream(side)
        params_graph, write_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(params_graph):
            self._parameters()
        with torch.cuda.graph(write_graph, pool=params_graph.pool()):
            self._write_back()
        self._graphs = (params_graph, write_graph)

    def parameters(self, k: int, n: int) -> torch.Tensor:
        """Scale indexes (n, M) of the n positions of step ``k`` (on the device)."""
        window, at, write = self.padded[k]
        self.window.copy_(window)
        self.at.copy_(at)
        self.write.copy_(write)
        if self._graphs:
            self._graphs[0].replay()
        else:
            self._parameters()
        return self.index[:n]

    def write_symbols(self, q: torch.Tensor) -> None:
        """y_hat of the step's positions from their decoded symbols q (n, M)."""
        self.q[: len(q)].copy_(q)
        if self._graphs:
            self._graphs[1].replay()
        else:
            self._write_back()
