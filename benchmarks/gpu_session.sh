#!/bin/sh
# Everything still waiting for a GPU (issues 4, 5 and 7), on the GPU test host (H100,
# Python 3.12, torch and triton preinstalled, no compressai, no network). Written before
# any GPU was lent, so untried: fix what breaks, keep the steps.
#
# From the repository root, with the compressai 1.2.8 and pytorch-msssim 1.0.0 cp312
# wheels carried in .whl/ (see the developers' guide):
#     sh benchmarks/gpu_session.sh OUT [STEP ...]       # default: every step, in order
# Each step logs to OUT/STEP.txt and the next one runs even when it fails. The device
# tool allows 10 minutes a command and 30 in all, so take the steps in calls such as
#     1. build tests          (JIT build of the CUDA extension, then the GPU tests)
#     2. decode model         (ainn bench --device cuda; whole-model benchmarks)
#     3. ops_fwd ops_bwd      (per-op benchmarks; torch.compile makes these the slow ones)
#     4. decode_pytest
# on one warm machine: the extension build is cached under build/ between calls.
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

step() {  # name, command...
    name=$1; shift
    echo "== $name ($(date +%T))" >&2
    "$@" > "$OUT/$name.txt" 2>&1; echo "exit $?" >> "$OUT/$name.txt"
    tail -n 3 "$OUT/$name.txt" >&2
}

bench_ops() {  # name, -k expression
    step "$1" python3 -m pytest benchmarks/bench_ops.py -q -p no:cacheprovider -k "$2" \
        --benchmark-json "$OUT/$1_h100.json" --benchmark-columns=median,iqr,rounds --benchmark-sort=name
    python3 benchmarks/gpu_table.py "$OUT/$1_h100.json" > "$OUT/$1_h100.md" 2>&1
}

for s in $STEPS; do
    case $s in
    build)
        nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
        step build python3 -c "import ainn_fast.native as n; print('cpu:', n.probe('cpu'), 'cuda:', n.probe('cuda'))" ;;
    tests)  # the files with GPU cases: kernels vs reference, native CUDA, files across devices, graphs, compile
        step tests python3 -m pytest tests/test_triton_ops.py tests/test_native_ops.py tests/test_wavefront.py \
            tests/test_decode_fast.py -q -rs -p no:cacheprovider --durations=15 ;;
    tests_all)
        step tests_all python3 -m pytest tests -q -rs -p no:cacheprovider --durations=15 ;;
    decode)  # issue 7: decode / encode per image, lite and paper, vs CompressAI's serial mbt2018
        step decode python3 -m ainn_fast.cli bench --device cuda --configs lite paper \
            --contexts serial checkerboard --cuda-graphs -o "$OUT/decode_gpu.json" --force
        step decode_bf16 python3 -m ainn_fast.cli bench --device cuda --configs paper \
            --precision bf16 --cuda-graphs --no-serial --no-baseline -o "$OUT/decode_gpu_bf16.json" --force ;;
    model) bench_ops model "training_step or synthesis or analysis" ;;   # issue 4's whole-model targets
    ops_fwd) bench_ops ops_fwd "test_op_forward and not backward" ;;
    ops_bwd) bench_ops ops_bwd "test_op_forward_backward" ;;
    decode_pytest)
        step decode_pytest python3 -m pytest benchmarks/bench_decode.py -q -p no:cacheprovider \
            --benchmark-json "$OUT/decode_pytest_h100.json" ;;
    *) echo "unknown step $s (build tests tests_all decode model ops_fwd ops_bwd decode_pytest)" >&2; exit 2 ;;
    esac
done
ls -l "$OUT"
