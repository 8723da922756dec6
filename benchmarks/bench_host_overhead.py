"""Host time per op call: what a fused op costs before its kernel does any work.

At the model's decoding shapes and its coarse training levels every op on the GPU is
host-bound (the H200 runs of 2026-12-04: 20-100 us a call where the bytes take 2-10 us),
so the Python and dispatcher layers around a kernel decide its speed there. This suite
calls each op on tiny tensors (1x8x4x4), as the model does (through ``ainn_fast.ops``),
and times:

- ``reference``: the eager PyTorch ops of the reference;
- ``native``: the C++ extension, the registry's entry for it;
- ``triton``: the Triton kernels, the registry's entry (kernels/_common.eager_path);
- ``triton_dispatch``: the same kernels through torch.library's dispatch of the custom
  op (``torch.ops.ainn_fast.triton_*``), the path every eager call took before
  eager_path: the difference is what eager_path saves.

The registry's choice of backend (``Op.__call__``) adds about 1 us to either fused row
(not timed: it refuses Triton on a CPU without the interpreter). Modes: ``infer`` (no gradients: decoding) and ``train`` (forward + backward).

On a CPU the Triton launches are replaced by no-ops (the interpreter would time numpy),
so the two triton rows are host time with the launch excluded; on a GPU they launch the
real kernels. Compare rows within one run on one machine.

    python -m pytest benchmarks/bench_host_overhead.py --benchmark-json benchmarks/results/host_overhead_$(date +%F).json
"""

from __future__ import annotations

import os
from typing import Callable

import pytest
import torch

from ainn_fast import native, ops

torch.set_num_threads(int(os.environ.get("AINN_BENCH_THREADS", "1")))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

try:
    from ainn_fast.kernels import coupling as _k_coupling, frequency as _k_frequency, squeeze as _k_squeeze
except ImportError:  # no triton
    _k_coupling = _k_frequency = _k_squeeze = None


def _t(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, device=DEVICE)


# name -> (registry op, custom op name, argument maker)
CASES: dict[str, tuple[object, str, Callable[[], tuple]]] = {
    "coupling": (ops.affine_coupling, "triton_affine_coupling", lambda: (_t(1, 8, 4, 4), _t(1, 8, 4, 4), _t(1, 8, 4, 4), 1.0)),
    "coupling_inv": (
        ops.affine_coupling_inverse, "triton_affine_coupling_inverse",
        lambda: (_t(1, 8, 4, 4), _t(1, 8, 4, 4), _t(1, 8, 4, 4), 1.0),
    ),
    "squeeze": (ops.squeeze2x2, "triton_squeeze2x2", lambda: (_t(1, 8, 4, 4),)),
    "blend": (ops.frequency_blend, "triton_frequency_blend", lambda: (_t(1, 1, 4, 4), _t(1, 8, 4, 4), _t(1, 8, 4, 4))),
    "decompose": (ops.multiscale_decompose, "triton_multiscale_decompose", lambda: (_t(1, 8, 4, 4),)),
}
VARIANTS = ["reference", "native", "triton", "triton_dispatch"]


class _NoLaunch:
    """Stands for a @triton.jit kernel: ``kernel[grid](...)`` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


@pytest.fixture(scope="module")
def triton_launches():
    """Real launches on a GPU; no-op launches on a CPU (see the module docstring)."""
    if _k_coupling is None:
        yield None
        return
    if DEVICE == "cuda":
        yield "real"
        return
    saved = []
    for module in (_k_coupling, _k_squeeze, _k_frequency):
        for name, value in vars(module).items():
            if name.startswith("_") and name.endswith("_kernel"):
                saved.append((module, name, value))
    for module, name, _ in saved:
        setattr(module, name, _NoLaunch())
    yield "stubbed"
    for module, name, value in saved:
        setattr(module, name, value)


def _callable(variant: str, case: str, launches: str | None) -> Callable:
    op, custom, _ = CASES[case]
    if variant == "reference":
        return op.impls["reference"]
    if variant == "native":
        reason = native.probe(DEVICE)
        if reason is not None:
            pytest.skip(f"native backend unavailable: {reason}")
        return op.impls["native"]
    if launches is None:
        pytest.skip("triton is not installed")
    if variant == "triton":
        return op.impls["triton"]
    return getattr(torch.ops.ainn_fast, custom)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("case", list(CASES))
def test_host_time(benchmark, triton_launches, case, mode, variant):
    fn = _callable(variant, case, triton_launches)
    args = CASES[case][2]()
    benchmark.group = f"{case} {mode}"
    benchmark.extra_info.update(device=DEVICE, triton_launches=triton_launches)
    if mode == "infer":
        def run():
            with torch.no_grad():
                fn(*args)
    else:
        args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]

        def run():
            out = fn(*args)
            outs = out if isinstance(out, tuple) else (out,)
            torch.autograd.grad(outs, tensors, [torch.ones_like(o) for o in outs], allow_unused=True)

    run()
    benchmark.pedantic(run, rounds=200, iterations=20, warmup_rounds=5)
