"""The "triton" backend against the reference: every op forward and backward, layouts,
dtypes, the whole tiny model, and traceability (fake tensors, opcheck, aot_eager).

On this CPU the kernels run under TRITON_INTERPRET=1 (set by conftest.py before any
kernel module is imported); tensors stay small because the interpreter costs about
0.7 ms per program instance. GPU-only cases (bf16, compiled model) skip without CUDA.

Tolerances:
- fp32: the kernels compute the same formulas in fp32, but with their own order of
  operations (e.g. sigmoid as 1 / (1 + exp(-g)), the blend as m*a + (1-m)*b summed in
  a different association, box sums accumulated in another order), so results differ by
  a few ulp: rtol = atol = 1e-5 (gradients of the stencil sum up to 83 terms: 1e-5 still).
- fp16: the kernels load fp16, compute in fp32 and round once on store, so they are
  compared with the reference computed in fp32 from the same fp16 inputs and rounded to
  fp16: at most 1 ulp apart (2^-10 relative), rtol = atol = 2e-3. The plain fp16
  reference rounds after every op and is further off, which is why it is not the yardstick.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

import ainn_fast  # noqa: E402
import ainn_fast.zoo  # noqa: E402
from ainn_fast import ops  # noqa: E402
from ainn_fast.backend import unavailable_reason  # noqa: E402
from conftest import run_python  # noqa: E402

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
DEVICE = "cuda" if CUDA else "cpu"

pytestmark = pytest.mark.skipif(
    unavailable_reason("triton", DEVICE) is not None,
    reason=f"triton backend unavailable on {DEVICE}: {unavailable_reason('triton', DEVICE)}",
)

# bf16 (GPU only) keeps 8 bits of mantissa: one rounding of the fp32 result is 2^-8 relative.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
}
DTYPES = [torch.float32, torch.float16]


def _layouts(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in another memory layout (4-D tensors)."""
    if layout == "contiguous" or (t.dim() != 4 and layout != "strided"):
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # a non-dense view: every other column of a wider tensor
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == "transposed":  # dense but neither contiguous nor channels_last
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    raise ValueError(layout)


LAYOUTS = ["contiguous", "channels_last", "strided", "transposed"]


def _compare(op, args, dtype, *, layout="contiguous", nondiff=()):
    """Run ``op`` on both backends with fp32 master copies of ``args`` cast to ``dtype``;
    compare outputs and gradients of every tensor argument.

    The expected values come from the reference run in fp32 on the dtype-rounded inputs
    (see the module docstring), then rounded to ``dtype``.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    base = [a.to(DEVICE, dtype) for a in tensors]

    def run(backend: str, compute_dtype: torch.dtype, lay: str):
        # output weights rounded to dtype, so both runs see the same values
        leaves = [_layouts(b.to(compute_dtype), lay).detach().requires_grad_() for b in base]
        it = iter(leaves)
        call = [next(it) if isinstance(a, torch.Tensor) else a for a in args]
        with ainn_fast.use_backend(backend):
            out = op(*call)
        outs = out if isinstance(out, tuple) else (out,)
        weights = [
            torch.randn(o.shape, generator=torch.Generator().manual_seed(i)).to(dtype).to(o) for i, o in enumerate(outs)
        ]
        torch.autograd.backward(outs, weights)
        return outs, [leaf.grad for leaf in leaves]

    exp_out, exp_grad = run("reference", torch.float32, "contiguous")
    got_out, got_grad = run("triton", dtype, layout)
    for e, g in zip(exp_out, got_out):
        assert g.dtype == dtype
        torch.testing.assert_close(g, e.to(dtype), **TOL[dtype])
    for i, (e, g) in enumerate(zip(exp_grad, got_grad)):
        if i in nondiff:
            continue
        assert g is not None and g.dtype == dtype
        torch.testing.assert_close(g, e.to(dtype), **TOL[dtype])
    return got_out


# ---------------------------------------------------------------------------------------
# Registration


def test_triton_is_registered_and_auto_keeps_reference_on_cpu(monkeypatch):
    monkeypatch.delenv("AINN_BACKEND", raising=False)
    assert all("triton" in op.impls for op in ops.ALL_OPS)
    assert "triton" in ainn_fast.available_backends(DEVICE)  # on CPU: TRITON_INTERPRET=1 (conftest)
    assert ops.affine_coupling.resolve("cpu") != "triton"  # the interpreter is no speed-up
    if CUDA:
        assert ops.affine_coupling.resolve("cuda") in ("triton", "native")


def test_cpu_without_interpreter_is_refused_with_the_reason():
    code = (
        "import ainn_fast, torch\n"
        "from ainn_fast import ops\n"
        "print(ainn_fast.available_backends('cpu'))\n"
        "try:\n"
        "    with ainn_fast.use_backend('triton'): ops.squeeze2x2(torch.zeros(1, 1, 2, 2))\n"
        "except ainn_fast.BackendUnavailableError as e: print(e)\n"
    )
    lines = run_python(code, None)
    assert lines[0] in ("['reference']", "['reference', 'native']")
    assert "TRITON_INTERPRET=1" in lines[1]


def test_custom_ops_exist_under_the_triton_prefix():
    for name in (
        "affine_coupling", "affine_coupling_inverse", "squeeze2x2", "unsqueeze2x2",
        "group_mean", "multiscale_decompose", "frequency_blend",
    ):
        assert hasattr(torch.ops.ainn_fast, f"triton_{name}")


# ---------------------------------------------------------------------------------------
# Ops against the reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("inverse", [False, True])
def test_coupling(dtype, layout, inverse):
    op = ops.affine_coupling_inverse if inverse else ops.affine_coupling
    shape = (3, 5, 7, 9)  # batch > 1, odd sizes: masked tails
    x, g, h = torch.randn(shape), 3 * torch.randn(shape), torch.randn(shape)
    _compare(op, (x, g, h, 0.7), dtype, layout=layout)


def test_coupling_saturated_scale_and_broadcast_and_round_trip():
    x = torch.randn(2, 3, 5, 5, device=DEVICE)
    g = torch.tensor([-200.0, 0.0, 200.0], device=DEVICE).view(1, 3, 1, 1)  # sigmoid saturates; broadcast g
    h = torch.randn(2, 3, 5, 5, device=DEVICE)
    _compare(ops.affine_coupling, (x, g, h, 1.0), torch.float32)
    with ainn_fast.use_backend("triton"):
        y = ops.affine_coupling(x, g, h, 1.0)
        torch.testing.assert_close(ops.affine_coupling_inverse(y, g, h, 1.0), x, rtol=1e-5, atol=1e-5)
    # one-dimensional tensors too (the op is shape-agnostic)
    _compare(ops.affine_coupling, (torch.randn(11), torch.randn(11), torch.randn(11)), torch.float32)


def test_coupling_reads_batch1_channel_halves_in_place():
    """Merged sub-networks give g and h as the two channel halves of one tensor; at batch
    size 1 those views are dense, and the kernel must read them without a copy."""
    from ainn_fast.kernels._common import with_strides_of

    x = torch.randn(1, 6, 5, 7, device=DEVICE)
    g, h = torch.randn(1, 12, 5, 7, device=DEVICE).chunk(2, dim=1)
    assert with_strides_of(g, x) is g and with_strides_of(h, x) is h
    wide = torch.randn(2, 12, 5, 7, device=DEVICE).chunk(2, dim=1)[1]  # batch 2: not dense
    assert with_strides_of(wide, x.expand(2, -1, -1, -1).contiguous()).is_contiguous()
    for op in (ops.affine_coupling, ops.affine_coupling_inverse):
        with ainn_fast.use_backend("reference"):
            expected = op(x, g.contiguous(), h.contiguous(), 0.8)
        with ainn_fast.use_backend("triton"):
            torch.testing.assert_close(op(x, g, h, 0.8), expected, **TOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_squeeze_and_unsqueeze(dtype, layout):
    x = torch.randn(2, 3, 6, 10)
    out = _compare(ops.squeeze2x2, (x,), dtype, layout=layout)[0]
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    y = torch.randn(2, 12, 3, 5)
    out = _compare(ops.unsqueeze2x2, (y,), dtype, layout=layout)[0]
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_squeeze_is_exact_and_refuses_odd_sizes():
    x = torch.randn(3, 5, 4, 6, device=DEVICE)
    with ainn_fast.use_backend("triton"):
        assert torch.equal(ops.squeeze2x2(x), ops.squeeze2x2.impls["reference"](x))
        assert torch.equal(ops.unsqueeze2x2(ops.squeeze2x2(x)), x)
        with pytest.raises(ValueError, match="even"):
            ops.squeeze2x2(torch.zeros(1, 1, 3, 4, device=DEVICE))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("channels,m", [(24, 12), (24, 16), (10, 4)])  # groups within and across streams
def test_group_mean(dtype, layout, channels, m):
    x1, x2 = torch.randn(2, channels, 3, 5), torch.randn(2, channels, 3, 5)
    _compare(ops.group_mean, (x1, x2, m), dtype, layout=layout)


def test_group_mean_with_streams_of_different_widths():
    x1, x2 = torch.randn(2, 6, 3, 3), torch.randn(2, 10, 3, 3)
    _compare(ops.group_mean, (x1, x2, 4), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_multiscale_decompose(dtype, layout):
    x = torch.randn(2, 3, 9, 13)  # odd sizes, borders of every pool inside the image
    out = _compare(ops.multiscale_decompose, (x,), dtype, layout=layout)
    if layout == "channels_last":
        assert all(o.is_contiguous(memory_format=torch.channels_last) for o in out)


def test_multiscale_decompose_smaller_than_the_pool():
    _compare(ops.multiscale_decompose, (torch.randn(1, 2, 2, 3),), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mask_channels", [1, 3])
def test_frequency_blend(dtype, layout, mask_channels):
    logits = 4 * torch.randn(2, mask_channels, 7, 11)
    low, high = torch.randn(2, 3, 7, 11), torch.randn(2, 3, 7, 11)
    _compare(ops.frequency_blend, (logits, low, high), dtype, layout=layout)


def test_frequency_blend_broadcasts_like_the_reference():
    logits = torch.randn(1, 1, 1, 5)
    low, high = torch.randn(2, 3, 4, 5), torch.randn(3, 1, 5)
    _compare(ops.frequency_blend, (logits, low, high), torch.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_squeeze_folded_into_the_1x1_convolution(layout, exact_cuda):
    # Plain aten convolutions with a reshaped weight: fp32 only (fp16 accuracy is the
    # convolution library's); the sum over 4C products reorders, so 1e-5 as above.
    x = torch.randn(2, 3, 6, 10, device=DEVICE)
    w = (torch.linalg.qr(torch.randn(12, 12))[0] + 0.1 * torch.randn(12, 12)).to(DEVICE)
    _compare(ops.squeeze_conv1x1, (x, w), torch.float32, layout=layout)
    y = torch.randn(2, 12, 3, 5)
    _compare(ops.conv1x1_unsqueeze, (y, torch.linalg.inv(w)), torch.float32, layout=layout)
    with ainn_fast.use_backend("triton"):
        back = ops.conv1x1_unsqueeze(ops.squeeze_conv1x1(x, w), torch.linalg.inv(w))
    torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-4)


def test_coupling_inverse_backward_with_saturating_scale():
    # The kernels compute in fp32, so fp64 gradcheck does not apply; the fused backward is
    # checked against autograd of the reference instead, here with large |g| and clamp 2.
    x, g, h = torch.randn(4, 4, 3, 3), 6 * torch.randn(4, 4, 3, 3), torch.randn(4, 4, 3, 3)
    _compare(ops.affine_coupling_inverse, (x, g, h, 2.0), torch.float32)


# ---------------------------------------------------------------------------------------
# Traceability: fake tensors and torch.compile's machinery (aot_eager runs on CPU)


def _opcheck_cases():
    t = lambda *s: torch.randn(*s, device=DEVICE)  # noqa: E731
    cl = lambda x: x.contiguous(memory_format=torch.channels_last)  # noqa: E731
    A = torch.ops.ainn_fast
    return [
        (A.triton_affine_coupling, (t(2, 3, 4, 5), t(2, 3, 4, 5), t(2, 3, 4, 5), 1.0)),
        (A.triton_affine_coupling_inverse, (cl(t(2, 3, 4, 5)), cl(t(2, 3, 4, 5)), cl(t(2, 3, 4, 5)), 0.5)),
        (A.triton_squeeze2x2, (t(2, 3, 4, 6),)),
        (A.triton_unsqueeze2x2, (cl(t(2, 8, 3, 5)),)),
        (A.triton_group_mean, (t(2, 6, 3, 3), t(2, 6, 3, 3), 4)),
        (A.triton_multiscale_decompose, (t(1, 3, 5, 6),)),
        (A.triton_frequency_blend, (t(2, 1, 4, 5), t(2, 3, 4, 5), t(2, 3, 4, 5))),
    ]


@pytest.mark.parametrize("case", range(7))
def test_opcheck(case):
    op, args = _opcheck_cases()[case]
    args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(op, args)


_OPS_BY_CUSTOM_OP = {
    "triton_affine_coupling": ops.affine_coupling,
    "triton_affine_coupling_inverse": ops.affine_coupling_inverse,
    "triton_squeeze2x2": ops.squeeze2x2,
    "triton_unsqueeze2x2": ops.unsqueeze2x2,
    "triton_group_mean": ops.group_mean,
    "triton_multiscale_decompose": ops.multiscale_decompose,
    "triton_frequency_blend": ops.frequency_blend,
}


@pytest.mark.parametrize("case", range(7))
def test_eager_path_equals_the_custom_op_and_skips_its_dispatch(case):
    """kernels/_common.eager_path: eagerly the registry runs the op's function (in an
    autograd.Function built from the op's own formula), not torch.library's dispatch of
    the custom op; values and gradients are the custom op's, bit for bit (same kernels)."""
    op, args = _opcheck_cases()[case]
    name = op._qualified_op_name.split("::")[1]
    registry_op = _OPS_BY_CUSTOM_OP[name]
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    for t in tensors:
        t.requires_grad_()

    def run(fn):
        out = fn(*args)
        outs = out if isinstance(out, tuple) else (out,)
        weights = [torch.linspace(-1, 1, o.numel(), device=o.device).reshape(o.shape) for o in outs]
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        return outs, torch.autograd.grad(loss, tensors)

    with ainn_fast.use_backend("triton"), torch.profiler.profile() as prof:
        got, got_grads = run(registry_op)
    dispatched = {e.name for e in prof.events() if e.name.startswith("ainn_fast::triton_")}
    assert not dispatched, dispatched
    want, want_grads = run(op)
    for a, b in zip(got + got_grads, want + want_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fake_mode_with_real_inputs_takes_the_custom_op():
    """Under FakeTensorMode, plain tensors may come in (allow_non_fake_inputs): the eager
    shortcut would launch a kernel on fake outputs; the custom op's fake kernel runs."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    x, g, h = (torch.randn(1, 3, 4, 6, device=DEVICE) for _ in range(3))
    with FakeTensorMode(allow_non_fake_inputs=True), ainn_fast.use_backend("triton"):
        y = ops.affine_coupling(x, g, h, 1.0)
        low, high = ops.multiscale_decompose(x)
    assert isinstance(y, FakeTensor) and y.shape == x.shape and low.shape == (1, 9, 4, 6)


def test_compiled_graphs_hold_the_custom_ops():
    """Under torch.compile the registry calls the custom ops (one opaque node each, with
    their fake kernels), forward and backward, not the eager shortcut."""
    seen: set[str] = set()

    def backend(gm, example_inputs):
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        def record(graph, _):
            seen.update(str(n.target) for n in graph.graph.nodes if n.op == "call_function")
            return make_boxed_func(graph.forward)

        return aot_autograd(fw_compiler=record, bw_compiler=record)(gm, example_inputs)

    def f(x, g, h):
        return ops.affine_coupling(ops.squeeze2x2(x), g, h, 1.0).square().sum()

    args = [torch.randn(s, device=DEVICE, requires_grad=True) for s in [(1, 3, 4, 6), (1, 12, 2, 3), (1, 12, 2, 3)]]
    with ainn_fast.use_backend("triton"):
        loss = torch.compile(f, backend=backend, fullgraph=True)(*args)
        loss.backward()
    assert {"ainn_fast.triton_affine_coupling.default", "ainn_fast.triton_squeeze2x2.default",
            "ainn_fast.triton_affine_coupling_backward.default", "ainn_fast.triton_unsqueeze2x2.default"} <= seen, seen


def test_model_traces_with_fake_tensors(one_thread):
    from torch._subclasses.fake_tensor import FakeTensorMode

    # The transforms hold every op; the entropy bottleneck's own forward reads tensor
    # values (data-dependent), which fake tensors cannot, so it is left out here.
    model = ainn_fast.zoo.ainn(1, config="tiny").to(DEVICE)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode, ainn_fast.use_backend("triton"):
        x = mode.from_tensor(torch.rand(2, 3, 64, 64, device=DEVICE))
        x = x.contiguous(memory_format=torch.channels_last)
        y = model.g_a(x)
        x_hat = model.g_s(y)
        x_hat.sum().backward()
    assert y.shape == (2, 32, 4, 4) and x_hat.shape == (2, 3, 64, 64)


def test_ops_compile_with_aot_eager():
    # aot_eager traces forward and backward through the fake implementations and runs
    # the real kernels; inductor itself needs a GPU for Triton code.
    def f(x, g, h, logits):
        y = ops.affine_coupling(ops.squeeze2x2(x), g, h, 1.0)
        low, high = ops.multiscale_decompose(ops.unsqueeze2x2(y))
        blended = ops.frequency_blend(logits, low[:, :3], high[:, :3])
        return blended.square().mean() + ops.group_mean(y, y, 4).mean()

    shapes = [(2, 3, 4, 6), (2, 12, 2, 3), (2, 12, 2, 3), (2, 1, 4, 6)]
    args = [torch.randn(s, device=DEVICE) for s in shapes]
    for a in args:
        a.requires_grad_()
    with ainn_fast.use_backend("triton"):
        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
        loss = compiled(*args)
        grads = torch.autograd.grad(loss, args)
    with ainn_fast.use_backend("reference"):
        ref = f(*args)
        ref_grads = torch.autograd.grad(ref, args)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# The whole model


@pytest.fixture
def one_thread():
    # The tiny model's convolutions are too small to gain from threads, and OpenMP's
    # spinning threads slow down by orders of magnitude when the 2-core CI machine is
    # shared: one thread keeps these tests at a few seconds either way.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturbed_tiny():
    from conftest import perturb_couplings

    model = ainn_fast.zoo.ainn(1, config="tiny").to(DEVICE)
    perturb_couplings(model.inn, std=0.05)  # real affine transforms, not the identity
    return model


def test_tiny_model_matches_reference_and_inverts(one_thread, exact_cuda):
    model = _perturbed_tiny().eval()
    x = torch.rand(2, 3, 64, 64, device=DEVICE)
    results = {}
    for backend in ("reference", "triton"):
        model.zero_grad()
        with ainn_fast.use_backend(backend):
            out = model(x)
            loss = out["x_hat"].square().mean() + sum(-lk.log2().sum() for lk in out["likelihoods"].values()) / 4096
            loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[backend] = out, grads
    (ref, ref_grads), (tri, tri_grads) = results["reference"], results["triton"]
    # fp32 throughout: differences of a few ulp per op, amplified by some 40 layers.
    torch.testing.assert_close(tri["x_hat"], ref["x_hat"], rtol=1e-4, atol=1e-4)
    for key in ("y", "z"):
        torch.testing.assert_close(tri["likelihoods"][key], ref["likelihoods"][key], rtol=1e-4, atol=1e-4)
    assert ref_grads.keys() == tri_grads.keys()
    for name, g in ref_grads.items():
        # gradients sum over the batch and pixels: relative to the largest entry
        torch.testing.assert_close(tri_grads[name], g, rtol=1e-3, atol=1e-4 * float(g.abs().max()) + 1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")

    with ainn_fast.use_backend("triton"), torch.no_grad():
        x1, x2 = model.fdsm_d(x)
        y1, y2 = model.inn(x1, x2)
        r1, r2 = model.inn.inverse(y1, y2)
    torch.testing.assert_close(r1, x1, rtol=0, atol=1e-4)
    torch.testing.assert_close(r2, x2, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------
# GPU only


@needs_cuda
@pytest.mark.parametrize(
    "op,shapes",
    [
        (ops.affine_coupling, [(2, 12, 33, 17)] * 3),
        (ops.affine_coupling_inverse, [(2, 12, 33, 17)] * 3),
        (ops.squeeze2x2, [(2, 3, 34, 18)]),
        (ops.unsqueeze2x2, [(2, 12, 9, 7)]),
        (ops.multiscale_decompose, [(2, 3, 33, 17)]),
        (ops.frequency_blend, [(2, 1, 33, 17), (2, 3, 33, 17), (2, 3, 33, 17)]),
    ],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bf16_on_gpu(op, shapes, layout):
    args = [torch.randn(s) for s in shapes]
    if op in (ops.affine_coupling, ops.affine_coupling_inverse):
        args.append(1.0)
    _compare(op, tuple(args), torch.bfloat16, layout=layout)


@needs_cuda
def test_compiled_model_on_gpu_matches_eager():
    model = _perturbed_tiny().eval()
    x = torch.rand(2, 3, 64, 64, device="cuda")
    with ainn_fast.use_backend("triton"):
        eager = model(x)["x_hat"]
        compiled = torch.compile(model)
        out = compiled(x)
        out["x_hat"].sum().backward()
    torch.testing.assert_close(out["x_hat"], eager, rtol=1e-3, atol=1e-3)
