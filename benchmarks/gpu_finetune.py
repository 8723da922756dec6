"""Fine-tune the shipped lite weights on the GPU host inside a fixed time (issue 6).

Minutes of an H200 are more training than every CPU round so far together (more than 15
hours of 2-core VMs, docs/training-history.md), so a short lease is best spent on the
shipped weights' own recipe at GPU speed: the qualities side by side on the one GPU, each
from its shipped weights (``--init``), ``--quantization mixed --context-passes 16``,
batch 16 of 256x256, lr / 10 for the last 15 % of the steps, validated on real files of
the held-out photos (``best.safetensors``: the lowest ``val_file_loss``), each step
replayed from a CUDA graph (``--cuda-graphs``: three runs share the host's cores).

How many steps fit is measured, not guessed: a short calibration run of every quality at
once gives the steps per second, and the real runs are sized to the time left. What comes
back: each quality's best weights as fp16 in pieces of at most 15 MiB (the device tool
returns files of at most 16 MiB: ``cat q3.safetensors.part* > lite_mse_q3.safetensors``)
and the logs (kept apart: the tool returns at most 8 files). Whether they ship is decided on the CPU afterwards, on the same held-out
photos and on scikit-image's (``ainn eval``), as for every CPU round.

    python3 benchmarks/gpu_finetune.py --photos photos --out $OUT --logs LOGDIR --seconds 420
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_STEPS = 30
PIECE = 15 * 2**20


def train_command(args, quality: int, out: Path, steps: int, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "ainn_fast.cli", "train", str(args.photos / "train"), "--val", str(args.photos / "val"),
        "-o", str(out), "--init", str(ROOT / "ainn_fast" / "weights" / f"lite_mse_q{quality}.safetensors"),
        "--config", "lite", "--quality", str(quality), "--device", args.device, "--steps", str(steps),
        "--batch-size", str(args.batch_size), "--patch-size", str(args.patch_size), "--quantization", "mixed",
        "--context-passes", "16", "--lr", str(args.lr), "--seed", str(100 + quality),
        *(["--cuda-graphs"] if args.cuda_graphs and args.device.startswith("cuda") else []), *extra,
    ]  # fmt: skip


def run_all(commands: dict[int, list[str]], logs: Path, limit: float) -> None:
    """The commands side by side (one GPU), each logging to logs/q{N}.txt; killed at ``limit``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 4) // (len(commands) + 1)))}
    procs = {}
    for q, cmd in commands.items():
        with open(logs / f"q{q}.txt", "a") as f:
            procs[q] = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + limit
    for q, p in procs.items():
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()
            p.wait()
        print(f"q{q}: exit {p.returncode}", flush=True)


def steps_per_second(log: Path, batch_size: int) -> float:
    """Median steady rate of a run's log (its first steps include warm-up); 0 if none ran."""
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    rates = [r["images_per_s"] for r in rows[len(rows) // 3 :] if "val_file_loss" not in r]
    return statistics.median(rates) / batch_size if rates else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=ROOT / "photos", help="train/ and val/ folders")
    parser.add_argument("--out", type=Path, required=True, help="the weights, fp16 in pieces")
    parser.add_argument("--logs", type=Path, required=True, help="logs and each run's log.jsonl")
    parser.add_argument("--seconds", type=float, default=420, help="the whole budget, calibration included")
    parser.add_argument("--qualities", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)  # CompressAI's usual training batch
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="ainn train --cuda-graphs: each step one graph launch (default on a GPU)")
    args = parser.parse_args()
    start = time.monotonic()
    work, logs = Path("/tmp/ainn_finetune"), args.logs
    shutil.rmtree(work, ignore_errors=True)  # ainn train would resume an earlier call's runs
    logs.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    calibration = {q: work / f"calibrate_q{q}" for q in args.qualities}
    run_all({q: train_command(args, q, calibration[q], CALIBRATION_STEPS, ["--val-every", "1000000"])
             for q in args.qualities}, logs, args.seconds / 4)  # fmt: skip
    rate = min(steps_per_second(calibration[q] / "log.jsonl", args.batch_size) for q in args.qualities)
    if rate <= 0:
        sys.exit(f"calibration ran no steps: see {logs}/q*.txt")
    spent = time.monotonic() - start
    done = min(len((calibration[q] / "log.jsonl").read_text().splitlines()) for q in args.qualities)
    startup = max(5.0, spent - done / rate)  # imports, photos, model, CUDA and Triton warm-up
    # Left for steps: the budget less what went, the next start-up, and the three real-file
    # validations with the export (a margin of 30 s).
    left = args.seconds - spent - startup - 30
    steps = max(CALIBRATION_STEPS, int(rate * left * 0.9))
    plan = {"steps_per_second": rate, "startup_s": startup, "steps": steps, "milestone": int(steps * 0.85),
            "val_every": max(1, steps // 3)}  # fmt: skip
    print(json.dumps(plan), flush=True)
    (logs / "plan.json").write_text(json.dumps(plan))
    runs = {q: work / f"q{q}" for q in args.qualities}
    extra = ["--milestones", str(plan["milestone"]), "--val-every", str(plan["val_every"]),
             "--ckpt-every", str(plan["val_every"])]  # fmt: skip
    run_all({q: train_command(args, q, runs[q], steps, extra) for q in args.qualities}, logs,
            args.seconds - (time.monotonic() - start) - 10)  # fmt: skip
    sys.path.insert(0, str(ROOT))
    from ainn_fast.checkpoint import export_weights

    for q, run in runs.items():
        (logs / f"q{q}_log.jsonl").write_bytes((run / "log.jsonl").read_bytes() if (run / "log.jsonl").exists() else b"")
        chosen = run / "best.safetensors" if (run / "best.safetensors").exists() else run / "last.safetensors"
        if not chosen.exists():
            continue
        shipped = work / f"lite_mse_q{q}.safetensors"
        export_weights(chosen, shipped)
        data = shipped.read_bytes()
        for k in range(0, len(data), PIECE):
            (args.out / f"q{q}.safetensors.part{k // PIECE}").write_bytes(data[k : k + PIECE])
        print(f"q{q}: {chosen.name} exported, {len(data)} bytes", flush=True)


if __name__ == "__main__":
    main()
