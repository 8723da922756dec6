"""The CUDA kernels, run on the CPU, against the reference ops.

CI and the development machines have nvcc but no GPU, so without this the .cu files
would be compiled (tests/test_native_build.py) and never run. tests/cuda_emulation.cpp
compiles the .cu files themselves, launchers included, for the host, with
csrc/ops/cuda/emulation.h standing in for the CUDA runtime: blocks in turn, each CUDA
thread a fiber, shared memory and __syncthreads() emulated. Each op, forward and its
explicit backward op, is compared with the reference op and its autograd gradients; then
the whole tiny model runs on the native backend with these kernels in place of its CPU
ones, against the reference backend.

The emulated device has 2 multiprocessors, so a grid-stride kernel gets at most 64
blocks of 256 threads and the larger shapes here make every thread loop more than once;
the tiled decomposition sees several tiles across, down and halo-clipped at every edge.

Tolerances are those of tests/test_native_ops.py and for the same reasons (the kernels
compute in float32, or float64 for float64, and round once): float32 rtol 1e-5 / atol
1e-6; float16 2e-3 and bfloat16 1.6e-2 against the float32 reference rounded to the
dtype; float64 1e-12. The (un)squeezes move bits and must be exact. A missing
__syncthreads() fails here too: each fiber runs on to its next barrier before the next
starts, so a thread reading shared memory too early finds it unwritten (tried: removing
the decomposition's first barrier fails every decomposition case). What this cannot
show: races between blocks, device math (host libm's exp stands in for CUDA's) and
speed; those need the GPU host.
"""

from __future__ import annotations

import pytest
import torch

from ainn_fast import ops
from ainn_fast.fixed_point import ACT_MAX

REF = {op.name: op.impls["reference"] for op in ops.ALL_OPS}
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
}
DTYPES = list(TOL)
DTYPE_IDS = ["fp32", "fp64", "fp16", "bf16"]
# Odd sizes, batch > 1, and one (24,576 elements) beyond a grid stride of 64 x 256 threads.
SHAPES = {"small_odd": (2, 3, 6, 10), "odd": (3, 5, 14, 18), "strided": (1, 8, 48, 64)}



def _reference(name, args, dtype):
    """The reference outputs and input gradients, in float32 (float64 for float64), for a
    fixed output gradient; the inputs are the low-precision values, widened exactly."""
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    inputs = [a.to(wide).requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    outs = REF[name](*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    grads_out = [torch.randn_like(o).to(dtype) for o in outs]
    grads = torch.autograd.grad(outs, [a for a in inputs if isinstance(a, torch.Tensor)],
                                [g.to(wide) for g in grads_out])
    return [o.detach() for o in outs], list(grads), grads_out


def _close(got, want, dtype):
    assert got.dtype == dtype and got.shape == want.shape
    torch.testing.assert_close(got.to(want.dtype), want.to(dtype).to(want.dtype), **TOL[dtype])


def _rand(*shape, dtype):
    return torch.randn(*shape).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_coupling(emu, inverse, shape, dtype):
    name = "affine_coupling_inverse" if inverse else "affine_coupling"
    a, g, h = (_rand(*shape, dtype=dtype) for _ in range(3))
    g = 3 * g  # gates well into both tails of the sigmoid
    outs, grads, go = _reference(name, (a, g, h, 0.8), dtype)
    _close(getattr(emu, "native_" + name)(a, g, h, 0.8), outs[0], dtype)
    if inverse:  # from the op's output x, as autograd keeps it
        x = getattr(emu, "native_" + name)(a, g, h, 0.8)
        got = emu.native_affine_coupling_inverse_backward(go[0], x, g, 0.8)
    else:  # from the input x; dh is the incoming gradient itself
        got = (*emu.native_affine_coupling_backward(go[0], a, g, 0.8), go[0])
    for got_grad, want in zip(got, grads, strict=True):
        _close(got_grad, want, dtype)


def test_coupling_channels_last_and_views(emu):
    # The first input's dense layout is kept (layout.h); other layouts are copied into it.
    cl = dict(memory_format=torch.channels_last)
    a = torch.randn(2, 6, 9, 11).contiguous(**cl)
    g = torch.randn(2, 6, 11, 9).transpose(2, 3)
    h = torch.randn(2, 12, 9, 11)[:, 6:]
    y = emu.native_affine_coupling(a, g, h, 1.0)
    assert y.is_contiguous(**cl)
    torch.testing.assert_close(y, REF["affine_coupling"](a, g, h, 1.0), **TOL[torch.float32])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "view"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.float32, torch.float64],
                         ids=["u8", "i16", "fp32", "fp64"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_squeeze_and_unsqueeze_are_exact(emu, shape, dtype, layout):
    b, c, h, w = shape
    x = torch.randint(0, 100, (b, c, h, w)).to(dtype)
    y = torch.randint(0, 100, (b, 4 * c, h // 2, w // 2)).to(dtype)
    if layout == "channels_last":
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    elif layout == "view":
        x, y = x.transpose(2, 3).contiguous().transpose(2, 3), y.transpose(2, 3).contiguous().transpose(2, 3)
    sq, unsq = emu.native_squeeze2x2(x), emu.native_unsqueeze2x2(y)
    assert torch.equal(sq, REF["squeeze2x2"](x)) and torch.equal(unsq, REF["unsqueeze2x2"](y))
    assert sq.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_group_mean(emu, shape, dtype):
    b, c, h, w = shape
    x1, x2 = _rand(b, c, h, w, dtype=dtype), _rand(b, 3 * c, h, w, dtype=dtype)
    outs, grads, go = _reference("group_mean", (x1, x2, 2 * c), dtype)
    _close(emu.native_group_mean(x1, x2, 2 * c), outs[0], dtype)
    for got, want in zip(emu.native_group_mean_backward(go[0], c, 3 * c), grads):
        _close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 6, 10), (1, 2, 19, 70), (2, 1, 8, 32), (1, 1, 1, 1)],
                         ids=["small_odd", "tiles_clipped", "tiles_exact", "one_pixel"])
def test_multiscale_decompose(emu, shape, dtype):
    # 32 x 8 tiles: 19 x 70 needs 3 x 3 tiles, the last of each row and column clipped.
    x = _rand(*shape, dtype=dtype)
    outs, grads, go = _reference("multiscale_decompose", (x,), dtype)
    for got, want in zip(emu.native_multiscale_decompose(x), outs):
        _close(got, want, dtype)
    _close(emu.native_multiscale_decompose_backward(go[0], go[1]), grads[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_frequency_blend(emu, shape, dtype):
    b, c, h, w = shape
    logits = 3 * _rand(b, 1, h, w, dtype=dtype)
    low, high = _rand(*shape, dtype=dtype), _rand(*shape, dtype=dtype)
    outs, grads, go = _reference("frequency_blend", (logits, low, high), dtype)
    _close(emu.native_frequency_blend(logits, low, high), outs[0], dtype)
    for got, want in zip(emu.native_frequency_blend_backward(go[0], logits, low, high), grads):
        _close(got, want, dtype)


@pytest.mark.parametrize("multiprocessors", [1, 3])
def test_grid_stride_covers_every_element_for_any_grid(emu, multiprocessors):
    # 1: 32 blocks of 256 threads for 24,576 elements, three strides each; 3: 96 blocks,
    # the last stride partial. torch.empty's leftovers would show where a thread skipped.
    emu.set_multiprocessors(multiprocessors)
    try:
        a, g, h = (torch.randn(1, 8, 48, 64) for _ in range(3))
        torch.testing.assert_close(emu.native_affine_coupling(a, g, h, 1.0), REF["affine_coupling"](a, g, h, 1.0),
                                   **TOL[torch.float32])
        x = torch.randn(1, 8, 48, 64)
        assert torch.equal(emu.native_squeeze2x2(x), REF["squeeze2x2"](x))
    finally:
        emu.set_multiprocessors(2)



def test_64_bit_indexing_computes_what_32_bit_does(emu):
    # The indexing-heavy kernels index in int32 up to about 1e9 elements, in int64 beyond
    # (cuda_utils.cuh: with_index_type); the emulation's limit is lowered to run the int64
    # variants on small tensors, at and just past the boundary. Same arithmetic, so equal bits.
    cl = dict(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 10, 14)
    y = torch.randn(2, 12, 5, 7)
    x1, x2 = torch.randn(2, 4, 5, 7), torch.randn(2, 12, 5, 7)
    logits, low, high = torch.randn(2, 1, 5, 7), torch.randn(2, 9, 5, 7), torch.randn(2, 9, 5, 7)
    go, grad_mean = torch.randn(2, 9, 5, 7), torch.randn(2, 8, 5, 7)
    runs = {
        "squeeze": (lambda: emu.native_squeeze2x2(x), x.numel()),
        "squeeze_nhwc": (lambda: emu.native_squeeze2x2(x.contiguous(**cl)), x.numel()),
        "unsqueeze": (lambda: emu.native_unsqueeze2x2(y), y.numel()),
        "unsqueeze_nhwc": (lambda: emu.native_unsqueeze2x2(y.contiguous(**cl)), y.numel()),
        "group_mean": (lambda: emu.native_group_mean(x1, x2, 8), x1.numel() + x2.numel()),
        "group_mean_backward": (lambda: emu.native_group_mean_backward(grad_mean, 4, 12), x1.numel() + x2.numel()),
        "blend": (lambda: emu.native_frequency_blend(logits, low, high), low.numel()),
        "blend_backward": (lambda: emu.native_frequency_blend_backward(go, logits, low, high), low.numel()),
    }
    default = emu.get_int32_index_limit()
    try:
        for name, (run, n) in runs.items():
            emu.set_int32_index_limit(n)
            as_int32 = run()
            emu.set_int32_index_limit(n - 1)
            as_int64 = run()
            for a, b in zip(as_int32 if isinstance(as_int32, tuple) else (as_int32,),
                            as_int64 if isinstance(as_int64, tuple) else (as_int64,)):
                assert torch.equal(a, b), name
    finally:
        emu.set_int32_index_limit(default)
    assert default == 2**31 // 2 - 1

NATIVE_OPS = [
    "native_affine_coupling", "native_affine_coupling_inverse", "native_affine_coupling_backward",
    "native_affine_coupling_inverse_backward",
    "native_squeeze2x2", "native_unsqueeze2x2", "native_group_mean", "native_group_mean_backward",
    "native_multiscale_decompose", "native_multiscale_decompose_backward",
    "native_frequency_blend", "native_frequency_blend_backward",
]


@pytest.fixture
def native_on_cuda_kernels(emu):
    """For one test, the native backend's CPU kernels are the emulated CUDA ones: the ops'
    CPU key is overridden (the dispatcher restores the C++ kernels afterwards), so the
    backend's Python wrappers, autograd formulas and backward ops run as they do on a
    GPU. Yields the number of calls per op."""
    from ainn_fast import native

    if native.load() is not None:
        pytest.skip(native.load())
    calls = dict.fromkeys(NATIVE_OPS, 0)

    def counted(name):
        kernel = getattr(emu, name)

        def run(*args):
            calls[name] += 1
            return kernel(*args)

        return run

    lib = torch.library.Library("ainn_fast", "IMPL")
    try:
        for name in NATIVE_OPS:  # the dispatcher warns that it overrides: that is the point
            lib.impl(name, counted(name), "CPU")
        yield calls
    finally:
        lib._destroy()


@pytest.mark.parametrize("mode", ["eval", "eval_channels_last", "train"])
def test_tiny_model_on_the_cuda_kernels_equals_reference(native_on_cuda_kernels, perturbed_tiny_model, mode):
    # The whole model (analysis, hyperprior, synthesis with its FDSM/PDM/CFRM repairs), and
    # in training mode its gradients, on the CUDA kernels against the reference backend.
    # Compared as the native CPU kernels are (conftest.assert_model_runs_close).
    from conftest import assert_model_runs_close, run_model_on_backend

    model = perturbed_tiny_model.train(mode == "train")
    x = torch.rand(1, 3, 64, 64)
    if mode == "eval_channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    ref = run_model_on_backend(model, x, "reference")
    assert not any(native_on_cuda_kernels.values())
    got = run_model_on_backend(model, x, "native")
    used = {name for name, n in native_on_cuda_kernels.items() if n}
    assert {"native_affine_coupling", "native_squeeze2x2", "native_multiscale_decompose",
            "native_frequency_blend"} <= used
    if mode == "train":
        assert {"native_affine_coupling_backward", "native_affine_coupling_inverse_backward",
                "native_frequency_blend_backward"} <= used
    assert_model_runs_close(got, ref)


@pytest.mark.parametrize("scale", [40 * 4096, ACT_MAX])  # realistic activations, and the clamp bound
@pytest.mark.parametrize("model_name", ["tiny", "lite", "lite_checkerboard"])
def test_fused_entropy_params_equal_the_torch_path(emu, tiny_codec_model, model_name, scale):
    # The CUDA kernels of native_entropy_params on the host against FixedPointEntropy's
    # torch path: integer-valued float64 sums, so equal bit for bit: a warp's tile of 8
    # positions short by one, a single position, and 19 (two tiles and a short one).
    from ainn_fast import codec
    from ainn_fast.checkpoint import with_context
    from ainn_fast.fixed_point import FixedPointEntropy

    if model_name == "tiny":
        model = tiny_codec_model
    else:
        model = codec.prepare_model(codec.default_model(3))
        if model_name == "lite_checkerboard":
            model = codec.prepare_model(with_context(model, "checkerboard"))
    fp = FixedPointEntropy(model, "cpu", torch.float64)
    height, width, batch = 6, 7, 2
    y_pad = torch.randint(-scale, scale + 1, (batch * (height + 4) * (width + 4), fp.M)).double()
    params = torch.randint(-scale, scale + 1, (batch * height * width, 2 * fp.M)).double()
    g = torch.Generator().manual_seed(5)
    many = [torch.randint(0, n, (19,), generator=g).tolist() for n in (batch, height, width)]
    for b, i, j in ([[0, 0, 1, 1, 1, 0, 1], [0, 2, 5, 3, 1, 4, 0], [0, 6, 3, 2, 4, 1, 6]], [[1], [5], [6]], many):
        b, i, j = torch.tensor(b), torch.tensor(i), torch.tensor(j)
        window = fp.window_index(b, i, j, (height + 4, width + 4))
        at = (b * height + i) * width + j
        got = emu.native_entropy_params(y_pad, params, window, at, *fp.fused_arguments())
        want = torch.cat(fp.position_params(y_pad, params, window, at, fused=False), dim=-1)
        assert torch.equal(got, want)
