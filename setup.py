"""Packaging for ainn_fast.

- ``ainn_fast/`` is the package; ``kernels/`` (Triton) installs as ``ainn_fast.kernels``.
- ``csrc/`` holds the native extension (``ainn_fast._C``): C++ sources under
  ``csrc/**/cpu`` and shared files, CUDA sources (``*.cu``) under ``csrc/**/cuda``. It is
  built with ninja when torch is importable at build time (install with
  ``--no-build-isolation`` so that pip does not fetch a second torch), as CPU + CUDA when
  torch has CUDA and a CUDA toolkit that links is found (CUDA_HOME, else the real nvcc's
  toolkit), else CPU only. ``AINN_BUILD_EXT=0`` skips it (``AINN_BUILD_CUDA=0`` skips only
  the CUDA half); without it the package still works on the reference and Triton
  backends, and ``ainn_fast.native`` can JIT-build the same sources at first use.
  Without a GPU to query, CUDA code is built for sm_90 unless TORCH_CUDA_ARCH_LIST says
  otherwise.
"""

import glob
import os
import runpy

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _usable_cuda_home(default):
    """A CUDA toolkit that can compile and link (nvcc and libcudart), or None.

    torch derives CUDA_HOME from the nvcc on PATH; with a /usr/local/bin/nvcc symlink that
    gives /usr/local, where libcudart is missing and linking fails. Resolve symlinks and
    check, trying $CUDA_HOME, torch's guess, the real nvcc's toolkit and /usr/local/cuda.
    """
    import shutil

    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), default,
                  os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None, "/usr/local/cuda"]
    for home in filter(None, candidates):
        home = os.path.realpath(home)
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and glob.glob(os.path.join(home, "lib*", "libcudart.so*")):
            return home
    return None


def native_extension():
    if os.environ.get("AINN_BUILD_EXT", "1") == "0":
        return [], {}
    cpp = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    if not cpp:
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:  # isolated build without torch: ship pure Python, JIT-build later
        return [], {}
    cu = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    flags = runpy.run_path(os.path.join(HERE, "ainn_fast", "build_flags.py"))  # one home for the flags
    args = {"cxx": list(flags["CXX_FLAGS"])}  # the C++ standard: BuildExtension adds the one torch needs
    common = {"include_dirs": [os.path.join(HERE, "csrc")], "extra_link_args": list(flags["LD_FLAGS"])}
    cuda_home = _usable_cuda_home(cpp_extension.CUDA_HOME) if cu and torch.version.cuda else None
    if cuda_home and os.environ.get("AINN_BUILD_CUDA", "1") != "0":
        cpp_extension.CUDA_HOME = cuda_home  # read by CUDAExtension and BuildExtension
        os.environ["CUDA_HOME"] = cuda_home
        if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
            # No GPU to ask: build for the project's GPU host (H100, sm_90) only, instead of
            # every architecture torch supports (six times the nvcc time).
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
        args["nvcc"] = list(flags["NVCC_FLAGS"])
        ext = CUDAExtension("ainn_fast._C", cpp + cu, extra_compile_args=args, define_macros=[("WITH_CUDA", None)], **common)
    else:
        ext = CppExtension("ainn_fast._C", cpp, extra_compile_args=args, **common)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = native_extension()

setup(
    name="ainn_fast",
    version="0.1.0",
    description="A-INN learned image compression with fused Triton and CUDA kernels",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ainn_fast", "ainn_fast.*"]) + ["ainn_fast.kernels"],
    package_dir={"ainn_fast.kernels": "kernels"},
    package_data={"ainn_fast": ["weights/*.safetensors", "weights/*.json"]},
    install_requires=[
        "torch>=2.4",
        "torchvision",  # compressai imports it
        "compressai>=1.2.8,<1.3",
        "numpy<2",  # compressai 1.2.8 requires it
        "triton; platform_system == 'Linux'",
        "pytorch-msssim>=1.0",
        "safetensors>=0.4",
        "Pillow>=10",
        "tqdm",
    ],
    extras_require={
        "dev": ["pytest", "pytest-benchmark", "ninja", "scikit-image", "hypothesis", "matplotlib", "pillow-jxl-plugin"],
        # `ainn eval`: the RD plot, and JPEG XL where Debian's cjxl/djxl are not installed.
        "eval": ["matplotlib", "pillow-jxl-plugin"],
    },
    entry_points={"console_scripts": ["ainn = ainn_fast.cli:script_main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
