"""The ``"native"`` backend: the C++/CUDA extension built from ``csrc/``.

The ops are ``torch.ops.ainn_fast.native_*`` (schemas and kernels in C++, see
``csrc/ops/ops.cpp``, autograd in ``csrc/ops/autograd/``); this module finds the
extension, gives the ops their fake kernels, and registers one implementation per ``ainn_fast.ops`` entry.

Finding the extension, lazily (on the backend's first probe, i.e. the first op call or
availability query, never at ``import ainn_fast``):

1. ``ainn_fast._C``, built by ``setup.py`` (``pip install --no-build-isolation .``);
2. else, in a source checkout, a just-in-time build of the same ``csrc/`` sources with
   ``torch.utils.cpp_extension.load`` (ninja, cached in ``TORCH_EXTENSIONS_DIR``: the first
   build takes about a minute on 2 cores, later loads a second). CPU only unless a CUDA
   device and the CUDA toolkit are usable. ``AINN_NATIVE_JIT=0`` turns this step off;
3. else the backend stays registered but unavailable, and its probe says why (the first
   line of the error), so ``use_backend("native")`` fails with that reason and ``"auto"``
   falls back.

Fake kernels are registered here, in Python, with ``torch.library.register_fake`` (what
``torch.compile`` and ``opcheck`` trace with). Autograd is C++ (``csrc/ops/autograd/``,
the Autograd key, one formula for the CPU and CUDA kernels alike): the Python autograd
kernel of ``torch.library.register_autograd`` ran on every call and cost more host time
than the kernels at the decoding and coarse training shapes. The fused backward kernels
are ops too, with fake kernels, so compiled training graphs trace through them.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from pathlib import Path

import torch

from . import ops
from .backend import register_backend
from .build_flags import CXX_FLAGS, LD_FLAGS, NVCC_FLAGS
from .ops.squeeze import conv1x1_unsqueeze_folded, squeeze_conv1x1_folded

__all__ = ["load", "probe", "extension_origin"]

_log = logging.getLogger(__name__)
_NS = "ainn_fast"
_CSRC = Path(__file__).resolve().parents[1] / "csrc"

_lock = threading.Lock()
_loaded = False
_error: str | None = None  # why the extension could not be had (None: not tried or loaded)
_origin: str | None = None  # "ainn_fast._C" or the JIT build's path


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _ops_defined() -> bool:
    return hasattr(torch.ops.ainn_fast, "native_affine_coupling")


def _cuda_home() -> str | None:
    """A CUDA toolkit that can link (has lib64/libcudart), or None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for home in filter(None, candidates):
        home = os.path.realpath(home)
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and glob.glob(os.path.join(home, "lib*", "libcudart.so*")):
            return home
    return None


def _jit_build() -> str:
    """Build (or load the cached build of) csrc/ with torch.utils.cpp_extension.load."""
    if not (_CSRC / "ops" / "ops.cpp").exists():
        raise RuntimeError(f"no csrc/ sources beside the package ({_CSRC}) to build from")
    from torch.utils import cpp_extension

    sources = sorted(str(p) for p in _CSRC.rglob("*.cpp"))
    name = "ainn_fast_native"
    kwargs: dict = {}
    cuda_home = _cuda_home() if torch.version.cuda and torch.cuda.is_available() else None
    if cuda_home:
        # cpp_extension reads CUDA_HOME when it is imported; point it at a toolkit that links.
        cpp_extension.CUDA_HOME = cuda_home
        sources += sorted(str(p) for p in _CSRC.rglob("*.cu"))
        name += "_cuda"
        kwargs = {"extra_cuda_cflags": NVCC_FLAGS, "with_cuda": True}
    _log.warning("ainn_fast: building the native extension (once; cached in TORCH_EXTENSIONS_DIR)")
    cpp_extension.load(
        name=name,
        sources=sources,
        extra_cflags=CXX_FLAGS,
        extra_ldflags=LD_FLAGS,
        extra_include_paths=[str(_CSRC)],
        is_python_module=False,
        verbose=False,
        **kwargs,
    )
    return f"JIT build {name}"


def load() -> str | None:
    """Load the extension once (see the module docstring); None when it works, else why not."""
    global _loaded, _error, _origin
    if _loaded or _error is not None:  # lock-free after the first call (and traceable by dynamo)
        return _error
    with _lock:
        if _loaded or _error is not None:
            return _error
        try:
            if not _ops_defined():
                try:
                    import ainn_fast._C  # noqa: F401

                    _origin = "ainn_fast._C"
                except ImportError as prebuilt_err:
                    if os.environ.get("AINN_NATIVE_JIT", "1") == "0":
                        raise RuntimeError(
                            f"ainn_fast._C is not importable ({_first_line(prebuilt_err)}) and AINN_NATIVE_JIT=0"
                        ) from prebuilt_err
                    _origin = _jit_build()
            else:
                _origin = _origin or "already loaded"
            _register_python_side()
            _loaded = True
        except Exception as err:  # noqa: BLE001  (any failure makes the backend unavailable, with the reason)
            _error = f"native extension failed to build or load: {_first_line(err)}"
        return _error


def extension_origin() -> str | None:
    """Where the loaded extension came from ("ainn_fast._C" or the JIT build), or None."""
    return _origin if _loaded else None


def has_cuda_kernels() -> bool:
    return _loaded and torch._C._dispatch_has_kernel_for_dispatch_key(f"{_NS}::native_affine_coupling", "CUDA")


def probe(device_type: str) -> str | None:
    """Why the native backend cannot run on ``device_type``; None when it can."""
    reason = load()
    if reason is not None:
        return reason
    if device_type == "cpu":
        return None
    if device_type == "cuda":
        if not has_cuda_kernels():
            return "native extension was built without CUDA"
        return None if torch.cuda.is_available() else "no CUDA device is available"
    return f"the native extension has no kernels for {device_type} tensors"


# ---------------------------------------------------------------------------------------
# Fake kernels (registered once the C++ schemas exist; autograd is in csrc/ops/autograd).


def _is_dense(t: torch.Tensor) -> bool:
    """Tensor::is_non_overlapping_and_dense: the strides of some permutation of a
    contiguous tensor (sizes of 1 ignored)."""
    expected = 1
    for stride, size in sorted((st, n) for st, n in zip(t.stride(), t.shape) if n > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _register_python_side() -> None:
    fake = torch.library.register_fake

    def like(t: torch.Tensor, shape=None) -> torch.Tensor:
        # The indexing kernels return contiguous outputs of the input's dtype.
        return t.new_empty(t.shape if shape is None else shape)

    # coupling ---------------------------------------------------------------------------
    def flat_like(t: torch.Tensor) -> torch.Tensor:
        # csrc/ops/layout.h: outputs in the first input's layout when it is dense.
        return torch.empty_like(t) if _is_dense(t) else t.new_empty(t.shape)

    fake(f"{_NS}::native_affine_coupling")(lambda x, g, h, clamp: flat_like(x))
    fake(f"{_NS}::native_affine_coupling_inverse")(lambda y, g, h, clamp: flat_like(y))
    fake(f"{_NS}::native_affine_coupling_backward")(lambda grad, x, g, clamp: (flat_like(x), flat_like(x)))
    fake(f"{_NS}::native_affine_coupling_inverse_backward")(
        lambda grad, x, g, clamp: (flat_like(x), flat_like(x), flat_like(x))
    )

    # squeeze ----------------------------------------------------------------------------
    def squeezed_like(t: torch.Tensor, shape: tuple) -> torch.Tensor:
        # The kernels keep channels_last; everything else comes out contiguous.
        nhwc = not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
        return t.new_empty(shape).contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)

    def squeeze_fake(x):
        b, c, h, w = x.shape
        torch._check(h % 2 == 0 and w % 2 == 0, lambda: f"squeeze2x2 needs even height and width, got {h}x{w}")
        return squeezed_like(x, (b, 4 * c, h // 2, w // 2))

    def unsqueeze_fake(y):
        b, c4, h, w = y.shape
        torch._check(c4 % 4 == 0, lambda: f"unsqueeze2x2 needs a multiple of 4 channels, got {c4}")
        return squeezed_like(y, (b, c4 // 4, 2 * h, 2 * w))

    fake(f"{_NS}::native_squeeze2x2")(squeeze_fake)
    fake(f"{_NS}::native_unsqueeze2x2")(unsqueeze_fake)

    # group mean -------------------------------------------------------------------------
    fake(f"{_NS}::native_group_mean")(lambda x1, x2, m: x1.new_empty((x1.shape[0], m, x1.shape[2], x1.shape[3])))
    fake(f"{_NS}::native_group_mean_backward")(
        lambda grad, c1, c2: (
            grad.new_empty((grad.shape[0], c1, grad.shape[2], grad.shape[3])),
            grad.new_empty((grad.shape[0], c2, grad.shape[2], grad.shape[3])),
        )
    )

    # multiscale decomposition -----------------------------------------------------------
    def decompose_fake(x):
        b, c, h, w = x.shape
        return x.new_empty((b, 3 * c, h, w)), x.new_empty((b, 3 * c, h, w))

    def decompose_backward_fake(gl, gh):
        b, c3, h, w = gl.shape
        return gl.new_empty((b, c3 // 3, h, w))

    fake(f"{_NS}::native_multiscale_decompose")(decompose_fake)
    fake(f"{_NS}::native_multiscale_decompose_backward")(decompose_backward_fake)

    # frequency blend --------------------------------------------------------------------
    fake(f"{_NS}::native_frequency_blend")(lambda logits, low, high: like(low))
    fake(f"{_NS}::native_frequency_blend_backward")(
        lambda grad, logits, low, high: (like(logits), like(low), like(low))
    )


# ---------------------------------------------------------------------------------------
# The implementations registered into ainn_fast.ops: shape/dtype adaptation around the ops.


def _common(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...] | list[torch.Tensor]:
    """One dtype (type promotion, as the reference's arithmetic does) and one shape (broadcast)."""
    first = tensors[0]
    if all(t.dtype == first.dtype and t.shape == first.shape for t in tensors[1:]):
        return tensors  # the model's case: skip the per-tensor .to() calls (host time per op)
    dtype = first.dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    out = [t.to(dtype) for t in tensors]
    if any(t.shape != out[0].shape for t in out[1:]):
        out = list(torch.broadcast_tensors(*out))  # the kernels make expanded views contiguous
    return out


@ops.affine_coupling.register("native")
def affine_coupling(x: torch.Tensor, g: torch.Tensor, h: torch.Tensor, clamp: float = 1.0) -> torch.Tensor:
    return torch.ops.ainn_fast.native_affine_coupling(*_common(x, g, h), float(clamp))


@ops.affine_coupling_inverse.register("native")
def affine_coupling_inverse(y: torch.Tensor, g: torch.Tensor, h: torch.Tensor, clamp: float = 1.0) -> torch.Tensor:
    return torch.ops.ainn_fast.native_affine_coupling_inverse(*_common(y, g, h), float(clamp))


@ops.squeeze2x2.register("native")
def squeeze2x2(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4 and (x.shape[2] % 2 or x.shape[3] % 2):  # the reference's message
        raise ValueError(f"squeeze2x2 needs even height and width, got {x.shape[2]}x{x.shape[3]}")
    return torch.ops.ainn_fast.native_squeeze2x2(x)


@ops.unsqueeze2x2.register("native")
def unsqueeze2x2(y: torch.Tensor) -> torch.Tensor:
    if y.dim() == 4 and y.shape[1] % 4:
        raise ValueError(f"unsqueeze2x2 needs a multiple of 4 channels, got {y.shape[1]}")
    return torch.ops.ainn_fast.native_unsqueeze2x2(y)


@ops.group_mean.register("native")
def group_mean(x1: torch.Tensor, x2: torch.Tensor, out_channels: int) -> torch.Tensor:
    c = x1.shape[1] + x2.shape[1]
    if c % out_channels:
        raise ValueError(f"group_mean: {c} channels do not split into groups of {out_channels}")
    if x1.dtype != x2.dtype:  # .to() only when needed: host time per op
        dtype = torch.promote_types(x1.dtype, x2.dtype)
        x1, x2 = x1.to(dtype), x2.to(dtype)
    return torch.ops.ainn_fast.native_group_mean(x1, x2, int(out_channels))


@ops.multiscale_decompose.register("native")
def multiscale_decompose(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    low, high = torch.ops.ainn_fast.native_multiscale_decompose(x)
    return low, high


@ops.frequency_blend.register("native")
def frequency_blend(logits: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    if not logits.dtype == low.dtype == high.dtype:  # .to() only when needed: host time per op
        dtype = torch.promote_types(torch.promote_types(logits.dtype, low.dtype), high.dtype)
        logits, low, high = logits.to(dtype), low.to(dtype), high.to(dtype)
    if low.dim() != 4 or high.shape != low.shape or logits.shape != (low.shape[0], 1, *low.shape[2:]):
        # Other broadcast patterns than the model's one-channel mask: the reference formula.
        return ops.frequency_blend.impls["reference"](logits, low, high)
    return torch.ops.ainn_fast.native_frequency_blend(logits, low, high)



# A level's squeeze and its invertible 1x1 convolution. On CUDA they run as one stride-2
# 2x2 convolution (transposed, in the inverse direction) with the weight rearranged
# (ops/squeeze.py's *_folded), in cuDNN, so no squeezed copy is materialised. On the CPU, oneDNN runs those strided
# convolutions slower than the pair "native (un)squeeze kernel + 1x1 convolution" (up to
# 1.7x slower at the second level; benchmarks/results/native_cpu.md), so the CPU runs
# the pair.
def _conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    c4 = weight.shape[0]
    return torch.nn.functional.conv2d(x, weight.to(x.dtype).reshape(c4, c4, 1, 1))


@ops.squeeze_conv1x1.register("native")
def squeeze_conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu":
        return _conv1x1(squeeze2x2(x), weight)
    return squeeze_conv1x1_folded(x, weight)


@ops.conv1x1_unsqueeze.register("native")
def conv1x1_unsqueeze(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if y.device.type == "cpu":
        return unsqueeze2x2(_conv1x1(y, weight))
    return conv1x1_unsqueeze_folded(y, weight)


register_backend("native", probe)
