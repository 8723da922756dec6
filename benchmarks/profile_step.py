"""Where a training step (or the synthesis) spends its time, per backend: the step of
``ainn train`` itself (``Trainer``: forward, RD loss, backward, clipping, both optimizers),
or with ``--part synthesis`` g_s of one 768x512 image's latent, timed on the wall clock,
then profiled, its device time split by what the kernels do (convolutions, layout
copies, BatchNorm, the fused ainn_fast ops, optimizer, other elementwise work) and set
against the wall time: a step whose kernels add up to far less than its wall time waits
on the host. Not a benchmark suite (bench_ops.py's training step is); a tool for finding
why a backend's step is as fast as it is:

    python benchmarks/profile_step.py [--part step|synthesis] [--config paper] [--backends reference triton native]
        [--batch-size 8] [--patch-size 256] [--amp bf16] [--no-channels-last] [--cuda-graphs]

On a CPU (``--device cpu``, a dry run) the same split is of the aten ops' own CPU time.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from ainn_fast import bench, use_backend, zoo
from ainn_fast.train_graphs import WARMUP_STEPS
from ainn_fast.training import TrainConfig, Trainer

# First match wins: kernel names (cuDNN, cuBLAS, CUTLASS, torch, Triton, csrc/) and aten op
# names (the CPU dry run).
CATEGORIES: tuple[tuple[str, re.Pattern], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("fused ainn_fast ops", r"ainn_fast::|^_?(coupling|decompose|blend|squeeze|group_mean)\w*kernel"),
        ("batch norm", r"batch_norm|bn_fw|bn_bw|welford"),
        ("layout and copies", r"nchwToNhwc|nhwcToNchw|transpose|copy|memcpy|memset|CatArray|::cat\b|contiguous|permute"),
        ("convolution and GEMM", r"conv|gemm|xmma|cutlass|cudnn|implicit|wgrad|dgrad|fprop|\bmm\b|addmm|::mm$|bmm"),
        ("optimizer", r"multi_tensor|adam|foreach"),
        ("linear algebra", r"linalg|lu_factor|getr[fis]|cusolver|magma|potr"),
        ("reductions", r"reduce|::sum|::mean|norm"),
        ("elementwise", r"elementwise|vectorized|unrolled|^aten::"),
    )
)


def category(name: str) -> str:
    """What a kernel (or, on a CPU, an aten op) of this name does."""
    for label, pattern in CATEGORIES:
        if pattern.search(name):
            return label
    return "other"


def _self_time_us(event) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):  # the name moved in torch 2.4
        if hasattr(event, attr):
            return float(getattr(event, attr))
    return 0.0


def split(prof, device: torch.device, steps: int) -> tuple[dict[str, float], list[tuple[str, float, int]], int]:
    """Per step: time (ms) by category, the busiest kernels (name, ms, calls) and the kernel
    (or op) count. On a GPU the kernels' device time; on a CPU the ops' own CPU time."""
    by_category: dict[str, float] = defaultdict(float)
    rows = []
    count = 0
    for e in prof.key_averages():
        if device.type == "cuda":
            if e.device_type != DeviceType.CUDA:
                continue
            us = _self_time_us(e)
        else:
            if e.device_type != DeviceType.CPU or not e.key.startswith(("aten::", "ainn_fast::")):
                continue
            us = float(e.self_cpu_time_total)
        by_category[category(e.key)] += us / 1e3 / steps
        rows.append((e.key, us / 1e3 / steps, e.count // steps))
        count += e.count
    rows.sort(key=lambda r: -r[1])
    return dict(by_category), rows, count // steps


def trainer(args: argparse.Namespace, backend: str, data: Path, out: Path) -> Trainer:
    return Trainer(TrainConfig(
        train_dirs=[str(data)], out_dir=str(out / backend), config=args.config, quality=args.quality,
        patch_size=args.patch_size, batch_size=args.batch_size, amp=args.amp, channels_last=args.channels_last,
        backend=backend, device=args.device, cuda_graphs=args.cuda_graphs, val_every=10**9, ckpt_every=10**9,
    ))  # fmt: skip


def synthesis(args: argparse.Namespace, backend: str) -> Callable[[], object]:
    """g_s of one 768x512 image's latent, as bench_ops.py's synthesis case runs it."""
    device = torch.device(args.device)
    model = zoo.ainn(args.quality, config=args.config).to(device).eval()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    y_hat = torch.randn(1, model.M, 512 // 16, 768 // 16, device=device).round()  # y: a 16th of the image
    y_hat = y_hat.contiguous(memory_format=fmt)

    def run() -> None:
        with use_backend(backend), torch.no_grad():
            model.g_s(y_hat)

    return run


def profile_backend(args: argparse.Namespace, backend: str, data: Path, out: Path) -> dict:
    device = torch.device(args.device)
    run = trainer(args, backend, data, out).train_step if args.part == "step" else synthesis(args, backend)
    for _ in range(WARMUP_STEPS + 2):  # a graphed step: the eager steps, the capture and a replay
        run()
    bench._sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        run()  # a training step reads its losses back: one sync a step, as a training run has
    bench._sync(device)
    wall_ms = (time.perf_counter() - start) * 1e3 / args.steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            run()
        bench._sync(device)
        profiled_ms = (time.perf_counter() - start) * 1e3 / args.steps
    by_category, rows, count = split(prof, device, args.steps)
    return {
        "wall_ms": wall_ms, "profiled_ms": profiled_ms, "by_category": by_category, "top": rows[: args.top],
        "count": count,
    }  # fmt: skip


def report(backend: str, result: dict, device: torch.device) -> str:
    busy = sum(result["by_category"].values())
    what = "kernels" if device.type == "cuda" else "aten ops"
    lines = [
        f"== {backend}: {result['wall_ms']:.2f} ms a step (wall; {result['profiled_ms']:.2f} ms profiled), "
        f"{what} {busy:.2f} ms ({100 * busy / result['profiled_ms']:.0f} % of the profiled steps' wall time), "
        f"{result['count']} {what} a step",
        "| what | ms a step | share |",
        "|---|---:|---:|",
    ]
    for label, ms in sorted(result["by_category"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {ms:.2f} | {100 * ms / busy:.1f} % |")
    lines.append(f"busiest {what} (ms a step, calls a step):")
    lines += [f"  {ms:8.3f}  {calls:5d}  [{category(name)}] {name[:110]}" for name, ms, calls in result["top"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", default="step", choices=["step", "synthesis"], help="a training step, or g_s alone")
    p.add_argument("--config", default="paper")
    p.add_argument("--quality", type=int, default=6)
    p.add_argument("--backends", nargs="+", default=["reference", "triton", "native"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--cuda-graphs", action="store_true", help="replayed steps (the profiler may not see their kernels)")
    p.add_argument("--steps", type=int, default=3, help="steps timed, then steps profiled")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "photos"
        data.mkdir()
        bench.photo(768, 512).save(data / "astronaut.png")
        print(
            (
                f"training step, {args.config} q{args.quality}, batch {args.batch_size} x {args.patch_size}x"
                f"{args.patch_size}, amp {args.amp}, cuda_graphs {args.cuda_graphs}"
                if args.part == "step"
                else f"synthesis of a 768x512 latent, {args.config} q{args.quality}, float32"
            )
            + f", channels_last {args.channels_last}, {device}"
            + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        )
        for backend in args.backends:
            results[backend] = profile_backend(args, backend, data, Path(tmp))
            print(report(backend, results[backend], device), flush=True)
    return results


if __name__ == "__main__":
    main()
