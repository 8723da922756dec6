"""Markdown tables of a bench_ops.py JSON (GPU): per op and per model case, every
implementation's median time, the fused ones' GB/s and fraction of copy bandwidth, and
their speed-ups over the eager reference and over torch.compile(reference).

Usage: python benchmarks/gpu_table.py RESULTS.json > RESULTS.md
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

FUSED = ("triton", "native")


def _impl(bench: dict) -> str:
    params = bench.get("params") or {}
    return params.get("impl") or params.get("backend") or bench["name"]


def table(path: str) -> str:
    data = json.load(open(path))
    m = data["machine_info"]
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for b in data["benchmarks"]:
        groups[b["group"]][_impl(b)] = b
    copy = next((b["extra_info"]["copy_gbps"] for b in data["benchmarks"] if "copy_gbps" in b["extra_info"]), None)
    lines = [
        f"GPU: {m.get('gpu', '?')}, CUDA {m.get('cuda', '?')}, torch {m.get('torch', '?')}, "
        f"triton {m.get('triton', '?')}; measured copy bandwidth "
        f"{f'{copy:.0f} GB/s' if copy else '?'}; run {data.get('datetime', '?')}.",
        "",
        "Ops: time per call (median, µs); for the fused kernels GB/s, fraction of copy "
        "bandwidth, and speed-up over the eager reference / torch.compile(reference).",
        "",
        "| case | reference | compile | triton | native | triton GB/s (of copy) | native GB/s (of copy) "
        "| triton vs ref / compile | native vs ref / compile |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    models = []
    for group, impls in groups.items():
        if group.startswith("model"):
            models.append((group, impls))
            continue
        sec = {k: b["extra_info"].get("seconds_per_call") for k, b in impls.items()}
        cells = [f"{sec[k] * 1e6:.1f}" if sec.get(k) else "-" for k in ("reference", "compile", *FUSED)]
        for k in FUSED:
            info = impls[k]["extra_info"] if k in impls else {}
            cells.append(f"{info['gbps']:.0f} ({info['fraction_of_copy_bandwidth']:.0%})" if "gbps" in info else "-")
        for k in FUSED:
            if sec.get(k):
                ref = sec.get("reference")
                comp = sec.get("compile")
                cells.append(f"{ref / sec[k]:.2f}x / {comp / sec[k]:.2f}x" if ref and comp else "-")
            else:
                cells.append("-")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    if models:
        lines += [
            "",
            "Whole model (paper configuration): median time per call, speed-up over the reference backend.",
            "",
            "| case | backend | median (ms) | vs reference | vs eager reference | images/s | peak memory (GiB) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for group, impls in models:
            ref = impls.get("reference", {}).get("stats", {}).get("median")
            # A graphed group's cases against the eager reference of the same layout too.
            eager = groups.get(group.removesuffix(" graphed"), {}).get("reference", {}).get("stats", {}).get("median")
            for k, b in impls.items():
                med = b["stats"]["median"]
                info = b["extra_info"]
                ips = f"{info['images_per_second']:.1f}" if "images_per_second" in info else "-"
                mem = f"{info['peak_memory_gib']:.2f}" if "peak_memory_gib" in info else "-"
                speed = f"{ref / med:.2f}x" if ref else "-"
                vs_eager = f"{eager / med:.2f}x" if eager else "-"
                lines.append(f"| {group} | {k} | {med * 1e3:.2f} | {speed} | {vs_eager} | {ips} | {mem} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table(sys.argv[1]))
