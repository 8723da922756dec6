"""The CUDA sources of the native extension compile (CI has nvcc but no GPU).

When the installed ``ainn_fast._C`` was built with CUDA (setup.py does that where torch has
CUDA and a CUDA toolkit links), the .cu files already compiled at install time and this
test only checks that their kernels are registered. Otherwise, where nvcc exists, it
compiles them with ``torch.utils.cpp_extension.load`` in a subprocess (a fresh process, so
the ops are not registered twice and CUDA_HOME is read from the environment), cached in
TORCH_EXTENSIONS_DIR. A broken .cu file fails either way. Skipped without nvcc.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ainn_fast import native

ROOT = Path(__file__).resolve().parents[1]
OPS = [
    "native_affine_coupling",
    "native_affine_coupling_inverse",
    "native_affine_coupling_backward",
    "native_affine_coupling_inverse_backward",
    "native_squeeze2x2",
    "native_unsqueeze2x2",
    "native_group_mean",
    "native_group_mean_backward",
    "native_multiscale_decompose",
    "native_multiscale_decompose_backward",
    "native_frequency_blend",
    "native_frequency_blend_backward",
]


def _cuda_home() -> str | None:
    for home in filter(None, [os.environ.get("CUDA_HOME"), "/usr/local/cuda-13.0"]):
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and glob.glob(os.path.join(home, "lib*", "libcudart.so*")):
            return home
    return None


def _has_cuda_kernels() -> list[str]:
    return [op for op in OPS if torch._C._dispatch_has_kernel_for_dispatch_key(f"ainn_fast::{op}", "CUDA")]


_BUILD = """
import glob, sys, torch
from torch.utils.cpp_extension import load
root = sys.argv[1]
sources = [root + "/csrc/ops/ops.cpp"] + sorted(glob.glob(root + "/csrc/**/*.cu", recursive=True))
load(name="ainn_fast_native_cuda_check", sources=sources, extra_cflags=["-O3"], extra_cuda_cflags=["-O3"],
     extra_include_paths=[root + "/csrc"], is_python_module=False, with_cuda=True, verbose=False)
ops = sys.argv[2].split(",")
print(",".join(op for op in ops if torch._C._dispatch_has_kernel_for_dispatch_key("ainn_fast::" + op, "CUDA")))
"""


def test_cuda_sources_compile():
    if not torch.version.cuda:
        pytest.skip("torch was built without CUDA")
    home = _cuda_home()
    if home is None:
        pytest.skip("no CUDA toolkit (nvcc + libcudart) at $CUDA_HOME or /usr/local/cuda-13.0")
    if native.probe("cpu") is None and native.extension_origin() == "ainn_fast._C" and native.has_cuda_kernels():
        assert _has_cuda_kernels() == OPS  # compiled by setup.py at install time
        return
    env = dict(os.environ, CUDA_HOME=home, TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"))
    env.setdefault("MAX_JOBS", "2")
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD, str(ROOT), ",".join(OPS)],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    assert proc.returncode == 0, f"the CUDA sources failed to compile:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    assert proc.stdout.strip().splitlines()[-1].split(",") == OPS
