"""Op and model benchmarks: reference vs triton vs native vs torch.compile(reference).

Shapes are the paper configuration's (N = M = 192): training crops (batch 8 x 256x256)
and decoding one 768x512 image (H = 512, W = 768). Every op case reports in extra_info
the time per call, the bytes it must move at least (each input read once, each output
written once), the resulting GB/s, and that as a fraction of this device's measured
device-to-device copy bandwidth.

GPU only: everything skips without CUDA (the Triton interpreter on CPU measures nothing
useful). Run as described in benchmarks/README.md; do not set TRITON_INTERPRET.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import ainn_fast
import ainn_fast.zoo
from ainn_fast import ops
from ainn_fast.backend import Op, unavailable_reason
from ainn_fast.losses import RateDistortionLoss, lambda_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="benchmarks need a CUDA GPU")

CALLS_PER_ROUND = 20  # amortises the synchronisation at the end of each timed round


@pytest.fixture(scope="session")
def copy_bandwidth() -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write of 1 GiB)."""
    src = torch.empty(2**28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / 10
    return 2 * src.numel() * src.element_size() / seconds


def _rand(*shape, dtype=torch.float32, channels_last=False):
    t = torch.randn(*shape, device="cuda", dtype=dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t


@dataclass
class Case:
    name: str
    op: Op
    make: Callable[..., tuple]  # (dtype, channels_last) -> args
    differentiable: tuple[int, ...]  # positions of the arguments that get gradients


def _coupling_args(shape):
    def make(dtype, cl):
        x, g, h = (_rand(*shape, dtype=dtype, channels_last=cl) for _ in range(3))
        return x, g, h, 1.0

    return make


B, H, W = 8, 256, 256  # training
DH, DW = 512, 768  # decoding (one 768x512 image)
M = 192

CASES = [
    # training shapes
    Case("coupling_L1_train", ops.affine_coupling, _coupling_args((B, 12, H // 2, W // 2)), (0, 1, 2)),
    Case("coupling_L4_train", ops.affine_coupling, _coupling_args((B, 768, H // 16, W // 16)), (0, 1, 2)),
    Case("coupling_inv_L1_train", ops.affine_coupling_inverse, _coupling_args((B, 12, H // 2, W // 2)), (0, 1, 2)),
    Case("squeeze_L1_train", ops.squeeze2x2, lambda d, cl: (_rand(B, 3, H, W, dtype=d, channels_last=cl),), (0,)),
    Case("squeeze_L4_train", ops.squeeze2x2, lambda d, cl: (_rand(B, 192, H // 8, W // 8, dtype=d, channels_last=cl),), (0,)),
    Case(
        "group_mean_train",
        ops.group_mean,
        lambda d, cl: (_rand(B, 768, H // 16, W // 16, dtype=d, channels_last=cl),
                       _rand(B, 768, H // 16, W // 16, dtype=d, channels_last=cl), M),
        (0, 1),
    ),
    Case("decompose_train", ops.multiscale_decompose, lambda d, cl: (_rand(B, 3, H, W, dtype=d, channels_last=cl),), (0,)),
    Case(
        "blend_train",
        ops.frequency_blend,
        lambda d, cl: (_rand(B, 1, H, W, dtype=d, channels_last=cl), _rand(B, 3, H, W, dtype=d, channels_last=cl),
                       _rand(B, 3, H, W, dtype=d, channels_last=cl)),
        (0, 1, 2),
    ),
    # large sizes (the bandwidth target: >= 85 % of copy bandwidth): each op moves 1-2 GB
    # per call, so launch and host time vanish and only memory traffic is measured
    Case("coupling_large", ops.affine_coupling, _coupling_args((8, 192, 256, 256)), (0, 1, 2)),
    Case("squeeze_large", ops.squeeze2x2, lambda d, cl: (_rand(8, 192, 256, 256, dtype=d, channels_last=cl),), (0,)),
    Case("decompose_large", ops.multiscale_decompose, lambda d, cl: (_rand(8, 48, 256, 256, dtype=d, channels_last=cl),), (0,)),
    Case(
        "blend_large",
        ops.frequency_blend,
        lambda d, cl: (_rand(8, 1, 1024, 1024, dtype=d, channels_last=cl), _rand(8, 12, 1024, 1024, dtype=d, channels_last=cl),
                       _rand(8, 12, 1024, 1024, dtype=d, channels_last=cl)),
        (0, 1, 2),
    ),
    # decoding shapes (inference: forward only is meaningful, backward still reported)
    Case("coupling_inv_L1_decode", ops.affine_coupling_inverse, _coupling_args((1, 12, DH // 2, DW // 2)), (0, 1, 2)),
    Case("coupling_inv_L4_decode", ops.affine_coupling_inverse, _coupling_args((1, 768, DH // 16, DW // 16)), (0, 1, 2)),
    Case("unsqueeze_L1_decode", ops.unsqueeze2x2, lambda d, cl: (_rand(1, 12, DH // 2, DW // 2, dtype=d, channels_last=cl),), (0,)),
    Case(
        "blend_decode",
        ops.frequency_blend,
        lambda d, cl: (_rand(1, 1, DH, DW, dtype=d, channels_last=cl), _rand(1, 3, DH, DW, dtype=d, channels_last=cl),
                       _rand(1, 3, DH, DW, dtype=d, channels_last=cl)),
        (0, 1, 2),
    ),
]

IMPLS = ["reference", "triton", "native", "compile"]
BACKENDS = ["reference", "triton", "native"]  # whole-model cases
_compiled: dict[str, Callable] = {}
# One op runs at several shapes, dtypes and layouts: each gets its own static graph, as an
# application with fixed shapes would, instead of falling back to eager after the default
# 8 recompilations (which would time the reference under the "compile" label).
for _name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
    if hasattr(torch._dynamo.config, _name):
        setattr(torch._dynamo.config, _name, 64)


def _skip_unavailable(backend: str) -> None:
    reason = unavailable_reason(backend, "cuda")
    if reason is not None:
        pytest.skip(f"{backend}: {reason}")


def _impl(case: Case, impl: str) -> Callable:
    ref = case.op.impls["reference"]
    if impl == "reference":
        return ref
    if impl == "compile":
        return _compiled.setdefault(case.op.name, torch.compile(ref, dynamic=False))
    _skip_unavailable(impl)
    if impl not in case.op.impls:
        pytest.skip(f"{impl} has no implementation of {case.op.name}")
    return case.op.impls[impl]


def _nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if isinstance(t, torch.Tensor))


def _time_per_call(benchmark, fn: Callable[[], object]) -> float:
    def round_():
        for _ in range(CALLS_PER_ROUND):
            fn()
        torch.cuda.synchronize()

    for _ in range(3):  # warm-up: compilation, autotuning, caches
        round_()
    benchmark.pedantic(round_, rounds=20, iterations=1)
    return benchmark.stats.stats.median / CALLS_PER_ROUND


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op_forward(benchmark, copy_bandwidth, case, impl, dtype, layout):
    args = case.make(dtype, layout == "channels_last")
    fn = _impl(case, impl)
    benchmark.group = f"{case.name} fwd {dtype} {layout}"
    with torch.no_grad():
        out = fn(*args)
        outs = out if isinstance(out, tuple) else (out,)
        seconds = _time_per_call(benchmark, lambda: fn(*args))
    nbytes = _nbytes(args) + _nbytes(outs)
    shapes = [list(a.shape) for a in args if isinstance(a, torch.Tensor)]
    benchmark.extra_info.update(
        op=case.op.name, impl=impl, dtype=str(dtype), layout=layout, shapes=shapes,
        seconds_per_call=seconds, bytes=nbytes, gbps=nbytes / seconds / 1e9,
        fraction_of_copy_bandwidth=nbytes / seconds / copy_bandwidth, copy_gbps=copy_bandwidth / 1e9,
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op_forward_backward(benchmark, copy_bandwidth, case, impl, layout):
    dtype = torch.float32
    args = case.make(dtype, layout == "channels_last")
    leaves = [a.requires_grad_() if i in case.differentiable else a for i, a in enumerate(args)]
    fn = _impl(case, impl)
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    grads = [torch.randn_like(o) for o in outs]
    inputs = [leaves[i] for i in case.differentiable]

    def step():
        o = fn(*leaves)
        torch.autograd.grad(o if isinstance(o, tuple) else (o,), inputs, grads)

    benchmark.group = f"{case.name} fwd+bwd fp32 {layout}"
    seconds = _time_per_call(benchmark, step)
    # forward: inputs + outputs; backward: incoming grads + gradients out + what the
    # backward must re-read (counted as the inputs again: an upper bound on the minimum)
    nbytes = 2 * _nbytes(args) + 2 * _nbytes(outs) + _nbytes(inputs)
    benchmark.extra_info.update(
        op=case.op.name, impl=impl, dtype=str(dtype), layout=layout,
        seconds_per_call=seconds, bytes=nbytes, gbps=nbytes / seconds / 1e9,
        fraction_of_copy_bandwidth=nbytes / seconds / copy_bandwidth,
    )


# ---------------------------------------------------------------------------------------
# Whole model: the paper configuration (quality 6: N = M = 192)


@pytest.fixture(scope="module")
def paper_model():
    return ainn_fast.zoo.ainn(6, config="paper").cuda()


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphed"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_training_step(benchmark, paper_model, backend, layout, graphs):
    """Forward + loss + backward + Adam step at batch 8 x 256x256, fp32 (TF32 convs);
    ``graphed``: the step replayed from one CUDA graph as ``ainn train --cuda-graphs`` does
    (train_graphs.py), which takes the host's dispatch and launch time out of the step."""
    from ainn_fast.train_graphs import WARMUP_STEPS, GraphedStep

    _skip_unavailable(backend)
    benchmark.group = f"model training step {layout}" + (" graphed" if graphs else "")
    model = paper_model.train()
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model.to(memory_format=fmt)
    x = torch.rand(B, 3, H, W, device="cuda").contiguous(memory_format=fmt)
    criterion = RateDistortionLoss(lambda_for(6))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, capturable=graphs)

    def update(batch):
        optimizer.zero_grad(set_to_none=True)
        with ainn_fast.use_backend(backend):
            loss = criterion(model(batch), batch)["loss"]
            loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    stepper = GraphedStep(update, [optimizer]) if graphs else update

    def step():
        stepper(x)
        torch.cuda.synchronize()

    for _ in range(WARMUP_STEPS + 2):  # graphed: the eager warm-up, the capture and a replay
        step()
    if graphs and stepper.failed:
        pytest.fail(f"the step could not be captured: {stepper.failed}")
    torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(step, rounds=10, iterations=1)
    benchmark.extra_info.update(
        backend=backend, layout=layout, graphs=graphs, images_per_second=B / benchmark.stats.stats.median,
        peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30,
    )
    optimizer.zero_grad(set_to_none=True)  # the gradients live in the graph's memory pool
    del stepper, step


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_synthesis(benchmark, paper_model, backend, layout):
    """g_s of one 768x512 image's latent (inference)."""
    _skip_unavailable(backend)
    benchmark.group = f"model synthesis {layout}"
    model = paper_model.eval()
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model.to(memory_format=fmt)
    y_hat = torch.randn(1, M, DH // 16, DW // 16, device="cuda").round().contiguous(memory_format=fmt)

    def run():
        with ainn_fast.use_backend(backend), torch.no_grad():
            model.g_s(y_hat)
        torch.cuda.synchronize()

    for _ in range(3):
        run()
    benchmark.pedantic(run, rounds=20, iterations=1)
    benchmark.extra_info.update(backend=backend, layout=layout)


@pytest.mark.parametrize("graphs", [False, True], ids=["prepared", "prepared_graphs"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_synthesis_prepared(benchmark, paper_model, backend, graphs):
    """g_s as the decoder runs it (issue 4's "triton path as a whole"): BatchNorm folded,
    inverses cached, channels_last, and with ``graphs`` replayed from a CUDA graph, which
    takes the host time per op (what bounds the fused ops at batch 1) out of the loop."""
    import copy

    from ainn_fast.inference import prepare_for_decoding

    _skip_unavailable(backend)
    benchmark.group = "model synthesis prepared" + (", CUDA graph" if graphs else "")
    with ainn_fast.use_backend(backend):
        model = prepare_for_decoding(copy.deepcopy(paper_model).eval(), cuda_graphs=graphs, channels_last=True)
    y_hat = torch.randn(1, M, DH // 16, DW // 16, device="cuda").round()

    def run():
        with ainn_fast.use_backend(backend), torch.no_grad():
            model.g_s(y_hat)
        torch.cuda.synchronize()

    for _ in range(3):  # the first call captures the graph
        run()
    benchmark.pedantic(run, rounds=20, iterations=1)
    benchmark.extra_info.update(backend=backend, layout=f"channels_last, {'graphs' if graphs else 'eager'}")
    del model
    torch.cuda.empty_cache()


@pytest.mark.parametrize("backend", BACKENDS)
def test_analysis(benchmark, paper_model, backend):
    """g_a of one 768x512 image (inference)."""
    _skip_unavailable(backend)
    benchmark.group = "model analysis"
    model = paper_model.eval().to(memory_format=torch.contiguous_format)
    x = torch.rand(1, 3, DH, DW, device="cuda")

    def run():
        with ainn_fast.use_backend(backend), torch.no_grad():
            model.g_a(x)
        torch.cuda.synchronize()

    for _ in range(3):
        run()
    benchmark.pedantic(run, rounds=20, iterations=1)
    benchmark.extra_info.update(backend=backend)
