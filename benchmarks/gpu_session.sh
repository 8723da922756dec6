#!/bin/sh
# Everything still waiting for a GPU (issues 4, 5 and 7), in one run on the GPU test host
# (H100, Python 3.12, torch and triton preinstalled, no compressai, no network). Written
# before any GPU was lent, so untried: fix what breaks, keep the steps.
#
# From the repository root, with the compressai 1.2.8 and pytorch-msssim 1.0.0 cp312
# wheels carried in .whl/ (see the developers' guide):
#     sh benchmarks/gpu_session.sh "$OUT"      # results land in $OUT (default below)
# Each step writes its own log and goes on when one fails; about 15 minutes in all.
set -u
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
# A source checkout: the Triton kernels are installed as ainn_fast.kernels by setup.py;
# here a link does it, and the native extension JIT-builds (CPU + CUDA) on first use.
[ -e ainn_fast/kernels ] || ln -s ../kernels ainn_fast/kernels
export PYTHONPATH=/tmp/site:$PWD TRITON_INTERPRET=0
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import ainn_fast.native as n; print(n.probe('cuda'))" > "$OUT/native_build.txt" 2>&1

step() {  # name, command...
    name=$1; shift
    echo "== $name" >&2
    "$@" > "$OUT/$name.txt" 2>&1; echo "exit $?" >> "$OUT/$name.txt"
}

# Correctness first: every test, GPU cases included (kernels vs reference, native CUDA,
# GPU-encoded files decoding on the CPU and back, CUDA graphs, compile).
step tests python3 -m pytest tests -q -rs -p no:cacheprovider
# Issue 7: decode / encode per image, lite and paper, vs CompressAI's serial mbt2018.
step bench_decode_gpu python3 -m ainn_fast.cli bench --device cuda --configs lite paper \
    --contexts serial checkerboard --cuda-graphs -o "$OUT/decode_gpu.json" --force
step bench_decode_gpu_bf16 python3 -m ainn_fast.cli bench --device cuda --configs paper \
    --precision bf16 --cuda-graphs --no-serial --no-baseline -o "$OUT/decode_gpu_bf16.json" --force
# Issues 4 and 5: per-op and whole-model benchmarks (reference vs triton vs native vs compile).
step bench_ops python3 -m pytest benchmarks/bench_ops.py -q -p no:cacheprovider \
    --benchmark-json "$OUT/ops_h100.json" --benchmark-columns=median,iqr,rounds --benchmark-sort=name
step bench_decode_pytest python3 -m pytest benchmarks/bench_decode.py -q -p no:cacheprovider \
    --benchmark-json "$OUT/decode_pytest_h100.json"
ls -l "$OUT"
