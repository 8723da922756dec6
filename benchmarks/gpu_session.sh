#!/bin/sh
# Everything still waiting for a GPU (issues 4, 5 and 7), on the GPU test host (H100 or
# H200, Python 3.12, torch 2.11 and triton 3.6 preinstalled, no compressai, no network).
# Written before any GPU was lent, so untried: fix what breaks, keep the steps.
#
# From the repository root, with the compressai 1.2.8 and pytorch-msssim 1.0.0 cp312
# wheels carried in .whl/ (see the developers' guide):
#     sh benchmarks/gpu_session.sh OUT [STEP ...]       # default: every step, in order
# Each step logs to OUT/STEP.txt, is cut off at its own limit (the second field of
# step below; 124 in its log means cut off) and the next one runs even when it fails.
# A session gets 15 minutes of device time in all, the machine's start included, and one
# command may run 10, so spend them in two calls on one warm machine (it stays warm 30 s;
# the extension build is cached under build/ meanwhile), with timeout_s 400 and 360:
#     1. build tests          (JIT build of the CUDA extension, then the GPU tests)
#     2. decode model         (issue 7's decode target, then issue 4's whole-model ones)
# ops_fwd, ops_bwd, decode_pytest and refine only when time is left.
set -u
OUT=${1:-benchmarks/results/gpu}
[ $# -gt 0 ] && shift
STEPS=${*:-build tests decode model ops_fwd ops_bwd decode_pytest}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
# A source checkout: the Triton kernels are installed as ainn_fast.kernels by setup.py;
# here a link does it, and the native extension JIT-builds (CPU + CUDA) on first use.
[ -e ainn_fast/kernels ] || ln -s ../kernels ainn_fast/kernels
export PYTHONPATH=/tmp/site:$PWD TRITON_INTERPRET=0 TORCH_EXTENSIONS_DIR=$PWD/build/torch_extensions

step() {  # name, limit in seconds, command...
    name=$1; limit=$2; shift 2
    echo "== $name ($(date +%T), at most $limit s)" >&2
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    echo "exit $?" >> "$OUT/$name.txt"
    tail -n 3 "$OUT/$name.txt" >&2
}

bench_ops() {  # name, -k expression
    step "$1" 180 python3 -m pytest benchmarks/bench_ops.py -q -p no:cacheprovider -k "$2" \
        --benchmark-json "$OUT/$1_h100.json" --benchmark-columns=median,iqr,rounds --benchmark-sort=name
    python3 benchmarks/gpu_table.py "$OUT/$1_h100.json" > "$OUT/$1_h100.md" 2>&1
}

for s in $STEPS; do
    case $s in
    build)
        nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
        step build 180 python3 -c "import ainn_fast.native as n; print('cpu:', n.probe('cpu'), 'cuda:', n.probe('cuda'))" ;;
    tests)  # the files with GPU cases: kernels vs reference, native CUDA, files across devices, graphs, compile
        step tests 200 python3 -m pytest tests/test_triton_ops.py tests/test_native_ops.py tests/test_wavefront.py \
            tests/test_decode_fast.py -q -rs -p no:cacheprovider --durations=15 ;;
    tests_all)
        step tests_all 580 python3 -m pytest tests -q -rs -p no:cacheprovider --durations=15 ;;
    decode)  # issue 7: decode / encode per image, lite and paper, vs CompressAI's serial mbt2018
        step decode 120 python3 -m ainn_fast.cli bench --device cuda --configs lite paper \
            --contexts serial checkerboard --cuda-graphs -o "$OUT/decode_gpu.json" --force
        step decode_bf16 40 python3 -m ainn_fast.cli bench --device cuda --configs paper \
            --precision bf16 --cuda-graphs --no-serial --no-baseline -o "$OUT/decode_gpu_bf16.json" --force ;;
    model) bench_ops model "training_step or synthesis or analysis" ;;   # issue 4's whole-model targets
    ops_fwd) bench_ops ops_fwd "test_op_forward and not backward" ;;
    ops_bwd) bench_ops ops_bwd "test_op_forward_backward" ;;
    refine)  # encoder latent refinement on the GPU: compress time with 30 steps (astronaut, q3)
        step refine 90 python3 -m ainn_fast.cli demo -o "$OUT/refine_demo" --device cuda --refine 30 --force ;;
    decode_pytest)
        step decode_pytest 200 python3 -m pytest benchmarks/bench_decode.py -q -p no:cacheprovider \
            --benchmark-json "$OUT/decode_pytest_h100.json" ;;
    *) echo "unknown step $s (build tests tests_all decode model ops_fwd ops_bwd decode_pytest refine)" >&2; exit 2 ;;
    esac
done
ls -l "$OUT"
