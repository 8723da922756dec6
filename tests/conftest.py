import os

# Triton kernels run on CPU tensors only in interpreter mode, which must be set before
# any kernel module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# At most two threads (the CI machine's cores), fewer when OMP_NUM_THREADS says so: two
# OpenMP threads on a machine where another job holds a core stall at every barrier
# (measured: a training test took 285 s instead of 18 s).
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1, int(os.environ.get("OMP_NUM_THREADS") or 2))))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def astronaut() -> torch.Tensor:
    """scikit-image's bundled 512x512 photo as a (1, 3, H, W) float tensor in [0, 1]."""
    from skimage import data

    return torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)


def perturb_couplings(inn: torch.nn.Module, std: float = 0.05) -> None:
    """Give every coupling's (zero-initialised) last conv non-zero weights, so that an
    inversion test exercises real affine transforms instead of the identity."""
    for name, module in inn.named_modules():
        if name.endswith("conv3"):
            torch.nn.init.normal_(module.weight, std=std)
            torch.nn.init.normal_(module.bias, std=std)


@pytest.fixture
def perturbed_tiny_model() -> torch.nn.Module:
    """The tiny config (quality 1) with real affine couplings, for comparing backends."""
    from ainn_fast import zoo

    torch.manual_seed(3)
    model = zoo.ainn(1, config="tiny")
    perturb_couplings(model)  # real affine transforms, not the zero-initialised identity
    return model


def run_model_on_backend(model: torch.nn.Module, x: torch.Tensor, backend: str):
    """One forward (and, in training mode, backward of a loss touching every output) on
    `backend`, with the same training noise each call; returns (outputs, parameter grads)."""
    import ainn_fast

    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    with ainn_fast.use_backend(backend), torch.set_grad_enabled(model.training):
        out = model(x)
        if model.training:
            loss = out["x_hat"].square().mean() + sum(l.log().mean() for l in out["likelihoods"].values())
            loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_model_runs_close(got, ref, rtol: float = 1e-4) -> None:
    """Compare two run_model_on_backend results. A deep network amplifies ulp-level kernel
    differences a little, so 1e-4 relative in fp32; gradients relative to each tensor's largest."""
    (out, grads), (ref_out, ref_grads) = got, ref
    tol = dict(rtol=rtol, atol=rtol / 10)
    torch.testing.assert_close(out["x_hat"], ref_out["x_hat"], **tol)
    for k in ref_out["likelihoods"]:
        torch.testing.assert_close(out["likelihoods"][k], ref_out["likelihoods"][k], **tol)
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        scale = ref_grads[name].abs().max().item() + 1e-12
        torch.testing.assert_close(grads[name] / scale, ref_grads[name] / scale, rtol=rtol, atol=rtol,
                                   msg=lambda m, n=name: f"{n} (relative to its largest entry): {m}")


def assert_model_runs_as_close_to_truth(got, ref, truth, factor: float = 4.0) -> None:
    """Where the network is ill-conditioned (train-mode BatchNorm backward cancels most of
    a gradient), two fp32 runs that round differently can differ by far more than an ulp
    with neither wrong: then ``got`` must be no farther from the float64 ``truth`` than
    ``factor`` times ``ref``'s own distance from it (each tensor relative to its largest
    entry, plus 1e-6 for fp32 rounding)."""
    (out, grads), (ref_out, ref_grads), (t_out, t_grads) = got, ref, truth
    pairs = [("x_hat", out["x_hat"], ref_out["x_hat"], t_out["x_hat"])]
    pairs += [(k, out["likelihoods"][k], ref_out["likelihoods"][k], t_out["likelihoods"][k]) for k in t_out["likelihoods"]]
    assert grads.keys() == ref_grads.keys() == t_grads.keys()
    pairs += [(n, grads[n], ref_grads[n], t_grads[n]) for n in t_grads]
    for name, g, r, t in pairs:
        scale = t.abs().max().item() + 1e-30
        err = (g.double() - t).abs().max().item() / scale
        ref_err = (r.double() - t).abs().max().item() / scale
        assert err <= factor * ref_err + 1e-6, f"{name}: {err:.2e} from the float64 run, the reference {ref_err:.2e}"


@pytest.fixture(scope="session")
def tiny_codec_model():
    """A tiny model prepared for coding (eval, CDF tables), deterministic weights."""
    from ainn_fast import codec, zoo

    torch.manual_seed(7)  # not the default model's seed: stands for trained weights
    model = zoo.ainn(3, config="tiny")
    return codec.prepare_model(model)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_codec_model):
    from ainn_fast.checkpoint import save_model

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_model(tiny_codec_model, path)
    return path


def run_python(code: str, triton_interpret: str | None) -> list[str]:
    """Stdout lines of ``code`` run by a fresh interpreter from the repository root, with
    TRITON_INTERPRET set to ``triton_interpret`` (None: unset), which a process reads once."""
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if triton_interpret is not None:
        env["TRITON_INTERPRET"] = triton_interpret
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env)
    return out.stdout.strip().splitlines()


@pytest.fixture
def exact_cuda():
    """fp32 CUDA math the GPU tests can compare at ulp scale: no TF32 (cuDNN's default
    rounds conv and matmul products to 10 bits of mantissa) and deterministic cuDNN
    algorithms (the same reduction order in both runs being compared).
    Saved and restored by hand: monkeypatch cannot undo torch.backends' computed attributes."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    old = cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = old


@pytest.fixture(scope="session")
def emu():
    """The CUDA kernels of csrc/ops/cuda built for the host (tests/cuda_emulation.cpp, see
    tests/test_cuda_emulation.py): torch.ops.ainn_fast_cuda_emulation."""
    import shutil
    from pathlib import Path

    from torch.utils.cpp_extension import load

    if not shutil.which("c++"):
        pytest.skip("no C++ compiler to build the emulation")
    root = Path(__file__).resolve().parents[1]
    load(name="ainn_fast_cuda_emulation", sources=[str(root / "tests" / "cuda_emulation.cpp")],
         extra_include_paths=[str(root / "csrc")], extra_cflags=["-O2"], is_python_module=False, verbose=False)
    lib = torch.ops.ainn_fast_cuda_emulation
    lib.set_multiprocessors(2)
    return lib
