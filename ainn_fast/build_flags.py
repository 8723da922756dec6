"""Compiler flags of the native extension, shared by setup.py and the JIT build.

Plain data with no imports: setup.py reads this file by path, before the package (or
torch's extension machinery) is importable.
"""

# -fopenmp: at::parallel_for is inlined from ATen's headers as an OpenMP region, so
# without it the CPU kernels would run on one thread (it binds to the libgomp torch has
# already loaded).
# -fno-trapping-math: lets GCC vectorise the float loops that clamp (fast_exp's range
# check) in the AVX2 and baseline clones; only AVX-512's masked moves escaped the
# "could trap" rule, so AVX2-only CPUs ran those loops scalar, 3-4x slower than eager
# PyTorch (measured on an AMD EPYC, benchmarks/results/native_cpu.md). It changes no
# value: IEEE results are the same, only FP exception flags may differ, and nothing
# reads them.
CXX_FLAGS = ["-O3", "-fopenmp", "-fno-trapping-math"]
LD_FLAGS = ["-fopenmp"]
# No --use_fast_math: the kernels are memory-bound, and exact expf and division keep the
# CUDA results as close to the reference as the CPU ones.
NVCC_FLAGS = ["-O3"]
