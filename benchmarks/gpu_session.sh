#!/bin/sh
# Everything still waiting for a GPU (issues 4-7), on the GPU test host (H100 or H200,
# Python 3.12, torch 2.11 and triton 3.6 preinstalled, no compressai, no network).
#
# From the repository root, with the compressai 1.2.8 and pytorch-msssim 1.0.0 cp312
# wheels carried in .whl/ (see the developers' guide):
#     sh benchmarks/gpu_session.sh LOGDIR [STEP ...]      # default: every step, in order
# Each step logs to LOGDIR/STEP.txt, is cut off at its own limit (the second field of
# step below; "exit 124" or "exit 130" in its log means cut off) and the next one runs even when it
# fails. With ARCHIVE=FILE.tgz set, LOGDIR is packed into FILE after every step, so a
# call cut off at its own limit still brings back what finished (the device tool returns
# at most 8 files).
# A session gets 15 minutes of device time in all, each machine start (about a minute)
# included, and one command may run 10; a machine stays warm 30 s after a call, and the
# extension build (50 s) is kept in build/ while it does. On 2026-12-04 three calls ran
# build+decode+tests (370 s), build+tests_cuda+model+ops_decode+train (200 s) and, warm,
# decode_more+ops_fwd (105 s); a later session build+tests_cuda+decode+decode_streams
# (230 s, build 47 s), and was then refused a second machine. Still unmeasured, in the
# default order: the GPU tests of the fixes since (tests_cuda), the rewritten fused
# parameter kernel and the four entropy paths (decode times them all; profile splits a
# decode into its parts), the whole model again (model) and the host time per op call
# (host) since the fused ops' host paths were cut (C++ autograd, Triton's eager path), where each
# backend's training step spends its GPU time against its wall time (profile_step),
# the training step replayed from a CUDA graph (tests_cuda: graphed == eager; model: its
# time per backend, eager and graphed; train: a graphed paper run beside the eager one),
# the bandwidth target (ops_large), the backward ops (ops_bwd), lite and bf16 decode. Put the steps that matter first: a
# second machine may not be lent. Not in the default order: finetune (issue 6), the
# shipped weights trained for FINETUNE_SECONDS at GPU speed, in a call of its own with
# photos/ carried (python -m ainn_fast.photos photos; 30 MB), e.g.
#     ARCHIVE=$OUT/gpu.tgz FINETUNE_SECONDS=420 sh benchmarks/gpu_session.sh /tmp/logs finetune
# (about 8 minutes; the weights come back as $OUT/q*.safetensors.part*, joined with cat).
set -u
LOG=${1:-benchmarks/results/gpu}
[ $# -gt 0 ] && shift
STEPS=${*:-build tests_cuda decode profile model profile_step host decode_streams ops_large ops_bwd decode_more}
mkdir -p "$LOG"
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
# A source checkout: the Triton kernels are installed as ainn_fast.kernels by setup.py;
# here a link does it, and the native extension JIT-builds (CPU + CUDA) on first use.
[ -e ainn_fast/kernels ] || ln -s ../kernels ainn_fast/kernels
export PYTHONPATH=/tmp/site:$PWD TRITON_INTERPRET=0 TORCH_EXTENSIONS_DIR=$PWD/build/torch_extensions
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}
TAG=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -cd 'A-Za-z0-9' | tr 'A-Z' 'a-z' | sed 's/^nvidia//')
TAG=${TAG:-gpu}

archive() {  # LOG packed into ARCHIVE, when set (what a cut-off call still brings back)
    [ -n "${ARCHIVE:-}" ] && tar czf "$ARCHIVE" -C "$LOG" .
}

step() {  # name, limit in seconds, command...
    name=$1; limit=$2; shift 2
    echo "== $name ($(date +%T), at most $limit s)" >&2
    t0=$(date +%s)
    # SIGINT first: pytest then still finishes its session (pytest-benchmark writes its JSON)
    timeout -s INT -k 15 "$limit" "$@" > "$LOG/$name.txt" 2>&1
    echo "exit $? after $(( $(date +%s) - t0 )) s" >> "$LOG/$name.txt"
    tail -n 4 "$LOG/$name.txt" >&2
    archive
}

bench_ops() {  # name, limit, -k expression
    step "$1" "$2" python3 -m pytest benchmarks/bench_ops.py -v -p no:cacheprovider -k "$3" \
        --benchmark-json "$LOG/$1_$TAG.json" --benchmark-columns=median,iqr,rounds --benchmark-sort=name
    python3 benchmarks/gpu_table.py "$LOG/$1_$TAG.json" > "$LOG/$1_$TAG.md" 2>&1
    archive
}

for s in $STEPS; do
    case $s in
    build)
        { nvidia-smi; echo "CUDA_HOME=$CUDA_HOME"; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } > "$LOG/machine.txt" 2>&1
        step build 180 python3 -c "import ainn_fast.native as n; print('cpu:', n.probe('cpu'), 'cuda:', n.probe('cuda'), n.extension_origin())" ;;
    decode)  # issue 7: encode / decode per image vs CompressAI's serial mbt2018, in one run
        step decode 120 python3 -m ainn_fast.cli bench --device cuda --configs paper \
            --contexts serial checkerboard --cuda-graphs -o "$LOG/decode_paper_$TAG.json" --force ;;
    decode_streams)  # format 4's stream count: half the default (two positions a front per stream) and one;
        # then the default without CUDA graphs (the per-step device path, and a figure if capture fails)
        step decode_streams 90 sh -c "python3 -m ainn_fast.cli bench --device cuda --configs paper --cuda-graphs \
            --no-serial --no-baseline --streams 8 -o $LOG/decode_paper_k8_$TAG.json --force; \
            python3 -m ainn_fast.cli bench --device cuda --configs paper --cuda-graphs --no-serial --no-baseline \
            --streams 1 -o $LOG/decode_paper_k1_$TAG.json --force; \
            python3 -m ainn_fast.cli bench --device cuda --configs paper --no-serial --no-baseline \
            -o $LOG/decode_paper_eager_$TAG.json --force" ;;
    profile)  # issue 7: where a GPU latent decode spends its time, each entropy path and each part
        step profile 150 sh -c "python3 benchmarks/profile_decode.py; \
            python3 benchmarks/profile_decode.py --context checkerboard --no-profiler" ;;
    decode_more)
        step decode_lite 40 python3 -m ainn_fast.cli bench --device cuda --configs lite --no-serial --no-baseline \
            --contexts serial checkerboard --cuda-graphs -o "$LOG/decode_lite_$TAG.json" --force
        step decode_bf16 40 python3 -m ainn_fast.cli bench --device cuda --configs paper lite \
            --precision bf16 --cuda-graphs --no-serial --no-baseline -o "$LOG/decode_bf16_$TAG.json" --force ;;
    tests)  # the files with GPU cases: kernels vs reference, native CUDA, files across devices, graphs, compile
        step tests 230 python3 -m pytest tests/test_wavefront.py tests/test_decode_fast.py tests/test_triton_ops.py \
            tests/test_native_ops.py "tests/test_training.py::test_validation_codes_with_the_cdf_tables_a_file_gets[cuda]" -v -rs -p no:cacheprovider --timeout 120 --durations=20 ;;
    tests_cuda)  # only the cases that need the GPU (native CUDA kernels, triton on cuda tensors)
        step tests_cuda 120 python3 -m pytest tests/test_native_ops.py tests/test_triton_ops.py tests/test_wavefront.py \
            tests/test_decode_fast.py tests/test_row_streams.py tests/test_training.py -k "(cuda or gpu or squeeze_folded \
            or saturated or exact_and_refuses or aot_eager or tiny_model_matches or registered) and not bf16_on_gpu \
            and not emulated" \
            --deselect tests/test_triton_ops.py::test_compiled_model_on_gpu_matches_eager \
            -v -rs -p no:cacheprovider --timeout 50 --durations=10 ;;
    tests_all)
        step tests_all 580 python3 -m pytest tests -q -rs -p no:cacheprovider --timeout 120 --durations=20 ;;
    model) bench_ops model 160 "training_step or synthesis or analysis" ;;   # issue 4's whole-model targets, eager and graphed
    profile_step)  # issue 4: why a backend's training step and synthesis take what they do (kernel time by kind, wall time)
        step profile_step 150 sh -c "python3 benchmarks/profile_step.py --config paper; \
            python3 benchmarks/profile_step.py --part synthesis --config paper --steps 10" ;;
    ops_fwd) bench_ops ops_fwd 150 "test_op_forward and not backward and fp32" ;;
    ops_large) bench_ops ops_large 120 "test_op_forward and large" ;;  # the bandwidth target (forward; fwd+bwd)
    ops_decode) bench_ops ops_decode 75 "test_op_forward and not backward and fp32 and decode" ;;  # issue 5's batch-1 shapes
    ops_fwd_bf16) bench_ops ops_fwd_bf16 150 "test_op_forward and not backward and bf16" ;;
    ops_bwd) bench_ops ops_bwd 150 "test_op_forward_backward" ;;
    host)  # host time per op call, real launches (results/host_overhead.md has the CPU's)
        step host 60 python3 -m pytest benchmarks/bench_host_overhead.py -q -p no:cacheprovider \
            --benchmark-json "$LOG/host_overhead_$TAG.json" ;;
    train)  # issue 6: the paper configuration trains with the same command (loss, memory, images/s)
        python3 -c "
import os, skimage.data as d, PIL.Image as I
os.makedirs('/tmp/train', exist_ok=True)
for n in ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry'):
    I.fromarray(getattr(d, n)()).save(f'/tmp/train/{n}.png')
" > "$LOG/train_data.txt" 2>&1
        step train 45 python3 -m ainn_fast.cli train /tmp/train -o /tmp/train_out --config paper -q 3 --steps 60 \
            --batch-size 8 --patch-size 256 --amp bf16 --channels-last --backend triton --device cuda \
            --val-every 1000 --ckpt-every 1000
        cp /tmp/train_out/log.jsonl "$LOG/train_log.jsonl" 2>/dev/null
        # the same run with every step after the third replayed from a CUDA graph
        step train_graphs 45 python3 -m ainn_fast.cli train /tmp/train -o /tmp/train_graphs_out --config paper -q 3 \
            --steps 60 --batch-size 8 --patch-size 256 --amp bf16 --channels-last --backend triton --device cuda \
            --val-every 1000 --ckpt-every 1000 --cuda-graphs
        cp /tmp/train_graphs_out/log.jsonl "$LOG/train_graphs_log.jsonl" 2>/dev/null
        archive ;;
    finetune)  # issue 6: the shipped lite weights fine-tuned for FINETUNE_SECONDS (default 420), every quality
        # at once; the fp16 weights come back in pieces under $OUT (carry photos/ too: ainn_fast.photos' set)
        step finetune $(( ${FINETUNE_SECONDS:-420} + 60 )) python3 benchmarks/gpu_finetune.py --photos photos \
            --out "${OUT:-$LOG/weights}" --logs "$LOG/finetune" --seconds "${FINETUNE_SECONDS:-420}" ;;
    refine)  # encoder latent refinement on the GPU: compress time with 30 steps (astronaut, q3)
        step refine 90 python3 -m ainn_fast.cli demo -o /tmp/refine_demo --device cuda --refine 30 --force ;;
    decode_pytest)
        step decode_pytest 200 python3 -m pytest benchmarks/bench_decode.py -q -p no:cacheprovider \
            --benchmark-json "$LOG/decode_pytest_$TAG.json" ;;
    *) echo "unknown step $s (build decode profile decode_streams decode_more tests tests_cuda tests_all ops_large ops_decode model profile_step host ops_fwd ops_fwd_bf16 ops_bwd train finetune refine decode_pytest)" >&2; exit 2 ;;
    esac
done
ls -l "$LOG"
