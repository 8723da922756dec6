"""Packaging for ainn_fast.

- ``ainn_fast/`` is the package; ``kernels/`` (Triton) installs as ``ainn_fast.kernels``.
- ``csrc/`` holds the native extension (``ainn_fast._C``): C++ sources under
  ``csrc/**/cpu`` and shared files, CUDA sources (``*.cu``) under ``csrc/**/cuda``. It is
  built with ninja when torch is importable at build time (install with
  ``--no-build-isolation`` so that pip does not fetch a second torch), as CPU + CUDA when
  torch has CUDA and nvcc is found (CUDA_HOME), else CPU only. ``AINN_BUILD_EXT=0``
  skips it; without it the package still works on the reference and Triton backends.
"""

import glob
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def native_extension():
    if os.environ.get("AINN_BUILD_EXT", "1") == "0":
        return [], {}
    cpp = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    if not cpp:
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:  # isolated build without torch: ship pure Python, JIT-build later
        return [], {}
    cu = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    args = {"cxx": ["-O3", "-std=c++17"]}
    if cu and torch.version.cuda and CUDA_HOME:
        args["nvcc"] = ["-O3", "--use_fast_math"]
        ext = CUDAExtension("ainn_fast._C", cpp + cu, extra_compile_args=args, define_macros=[("WITH_CUDA", None)])
    else:
        ext = CppExtension("ainn_fast._C", cpp, extra_compile_args=args)
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
        "dev": ["pytest", "pytest-benchmark", "ninja", "scikit-image", "hypothesis", "matplotlib"],
    },
    entry_points={"console_scripts": ["ainn = ainn_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
