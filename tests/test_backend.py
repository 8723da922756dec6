import pytest
import torch

import ainn_fast
from ainn_fast import backend, ops


def test_auto_uses_reference_on_cpu(monkeypatch):
    # Triton runs on CPU only in its interpreter (a test aid, not a speed-up), so auto
    # keeps the reference on CPU even when the triton backend is available there.
    monkeypatch.delenv("AINN_BACKEND", raising=False)
    assert ainn_fast.get_backend() == "auto"
    native = backend.unavailable_reason("native", "cpu") is None
    # auto prefers the native extension on CPU when it is built, never triton there.
    assert ops.squeeze2x2.resolve("cpu") == ("native" if native else "reference")
    assert ainn_fast.available_backends("cpu")[0] == "reference"
    assert ("native" in ainn_fast.available_backends("cpu")) == native


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def test_triton_availability_on_cpu_follows_the_interpreter(monkeypatch):
    if not _triton_importable():
        assert "not part of this build" in backend.unavailable_reason("triton", "cpu")
        return
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # conftest set it before the kernels were imported
    assert backend.unavailable_reason("triton", "cpu") is None
    native = ["native"] if backend.unavailable_reason("native", "cpu") is None else []
    assert ainn_fast.available_backends("cpu") == ["reference", "triton"] + native
    monkeypatch.delenv("TRITON_INTERPRET")
    assert backend.unavailable_reason("triton", "cpu") == "Triton runs on CPU tensors only with TRITON_INTERPRET=1"
    assert ainn_fast.available_backends("cpu") == ["reference"] + native
    with ainn_fast.use_backend("triton"), pytest.raises(ainn_fast.BackendUnavailableError, match="TRITON_INTERPRET"):
        ops.squeeze2x2(torch.zeros(1, 1, 2, 2))


def test_use_backend_nests_and_restores(monkeypatch):
    monkeypatch.delenv("AINN_BACKEND", raising=False)
    with ainn_fast.use_backend("reference"):
        assert ainn_fast.get_backend() == "reference"
        with ainn_fast.use_backend("auto"):
            assert ainn_fast.get_backend() == "auto"
        assert ainn_fast.get_backend() == "reference"
    assert ainn_fast.get_backend() == "auto"


def test_compiled_code_follows_the_backend_selected_around_it(monkeypatch):
    # torch.compile sees use_backend through a global it guards on: code compiled under
    # one backend recompiles under another instead of running the first one's kernels,
    # and fullgraph holds (torch 2.11's Dynamo could not trace the ContextVar).
    from torch._dynamo.testing import CompileCounter

    monkeypatch.delenv("AINN_BACKEND", raising=False)
    monkeypatch.setitem(backend._probes, "triton", lambda device_type: None)
    op = backend.Op("probe_op", lambda x: x + 1)
    op.register("triton")(lambda x: x + 2)
    torch._dynamo.reset()
    counter = CompileCounter()
    f = torch.compile(lambda x: op(x) * 10, backend=counter, fullgraph=True)
    x = torch.zeros(3)
    try:
        for name, expected in [("reference", 10.0), ("triton", 20.0), ("reference", 10.0), ("triton", 20.0)]:
            with ainn_fast.use_backend(name):
                assert f(x).tolist() == [expected] * 3, name
        assert counter.frame_count == 2  # one graph per backend, each reused once
    finally:
        torch._dynamo.reset()  # leave no graph of the test-local op to later tests


def test_environment_variable_and_set_backend_precedence(monkeypatch):
    monkeypatch.setenv("AINN_BACKEND", "reference")
    assert ainn_fast.get_backend() == "reference"
    monkeypatch.setattr(backend, "_global", None)
    ainn_fast.set_backend("auto")
    assert ainn_fast.get_backend() == "auto"  # set_backend beats the environment
    with ainn_fast.use_backend("reference"):  # the context beats both
        assert ainn_fast.get_backend() == "reference"


def test_unknown_backend_names_the_choices(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'cuda'.*reference"):
        ainn_fast.set_backend("cuda")
    monkeypatch.setenv("AINN_BACKEND", "fastest")
    with pytest.raises(ValueError, match="unknown backend 'fastest'"):
        ops.squeeze2x2(torch.zeros(1, 1, 2, 2))


def test_unbuilt_backend_by_name_is_an_error_not_a_fallback(monkeypatch):
    x = torch.zeros(1, 1, 2, 2)
    monkeypatch.delitem(backend._probes, "native", raising=False)  # as in a build without csrc/
    with ainn_fast.use_backend("native"), pytest.raises(ainn_fast.BackendUnavailableError, match="not part of this build"):
        ops.squeeze2x2(x)
    monkeypatch.delitem(backend._probes, "triton", raising=False)  # as without triton installed
    with ainn_fast.use_backend("triton"), pytest.raises(ainn_fast.BackendUnavailableError, match="not part of this build"):
        ops.squeeze2x2(x)


def test_registered_backend_is_dispatched_and_auto_prefers_it(monkeypatch):
    op = backend.Op("probe_op", lambda x: x + 1)
    op.register("native")(lambda x: x + 2)
    monkeypatch.setitem(backend._probes, "native", lambda device_type: None)
    x = torch.zeros(3)
    assert op(x).tolist() == [2.0] * 3  # auto picks native on CPU
    with ainn_fast.use_backend("reference"):
        assert op(x).tolist() == [1.0] * 3
    monkeypatch.setitem(backend._probes, "native", lambda device_type: "extension failed to load")
    assert op(x).tolist() == [1.0] * 3  # auto falls back
    with ainn_fast.use_backend("native"), pytest.raises(ainn_fast.BackendUnavailableError, match="failed to load"):
        op(x)


def test_backend_with_missing_op_is_an_error(monkeypatch):
    op = backend.Op("probe_op2", lambda x: x)
    monkeypatch.setitem(backend._probes, "triton", lambda device_type: None)
    with ainn_fast.use_backend("triton"), pytest.raises(ainn_fast.BackendUnavailableError, match="probe_op2"):
        op(torch.zeros(1))


def test_every_fused_op_is_registered_with_a_reference():
    names = {op.name for op in ops.ALL_OPS}
    assert names == {
        "affine_coupling",
        "affine_coupling_inverse",
        "squeeze2x2",
        "unsqueeze2x2",
        "group_mean",
        "multiscale_decompose",
        "frequency_blend",
        "squeeze_conv1x1",
        "conv1x1_unsqueeze",
    }
    assert all("reference" in op.impls for op in ops.ALL_OPS)
