"""Markdown table of a bench_native_cpu.py JSON: median per case, native vs reference.

Usage: python benchmarks/native_cpu_table.py RESULTS.json > benchmarks/results/native_cpu.md
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def table(path: str) -> str:
    data = json.load(open(path))
    medians: dict[str, dict[str, float]] = defaultdict(dict)
    for b in data["benchmarks"]:
        medians[b["group"]][b["params"]["impl"]] = b["stats"]["median"]
    m = data["machine_info"]
    lines = [
        f"CPU: {m.get('cpu', {}).get('brand_raw', '?')}, {m.get('cpu', {}).get('count', '?')} logical cores, no GPU; "
        f"torch {m.get('torch', '?')}; run {data.get('datetime', '?')}.",
        "",
        "| case | reference (ms) | native (ms) | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for group in medians:
        ref, nat = medians[group].get("reference"), medians[group].get("native")
        if ref is None or nat is None:
            continue
        lines.append(f"| {group} | {ref * 1e3:.3f} | {nat * 1e3:.3f} | {ref / nat:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table(sys.argv[1]))
