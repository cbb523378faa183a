# SPDX-License-Identifier: Apache-2.0
"""`python -m benchmarks --perf` (`./dev.sh bench --perf`): the performance section alone, printed.

It sets up the grid's models and experts (cached after the first run; the noisy pool is not needed), runs
`perf.run_perf` without the scaling sweep, writes `perf.json` into `--out` and prints one side-by-side table:
s/example and peak RSS of SFT and fusion, export vs mergekit `linear`, the teacher slot, and the 1B target's
memory in fp32 vs bf16.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from .grid import GRIDS
from .models import cache_root
from .perf import run_perf
from .run import setup


def run_perf_only(*, grid_name: str, out: Path, cache: Path | None, threads: int | None = None) -> dict[str, Any]:
    if threads is not None:
        torch.set_num_threads(threads)
    grid = GRIDS[grid_name].with_(noise=())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache is not None else (out / "cache" if grid.name == "quick" else cache_root())
    started = time.perf_counter()
    bench = setup(grid, out, cache)
    perf = run_perf(bench, scaling=False)
    perf["grid"] = grid.name
    perf["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / "perf.json").write_text(json.dumps(perf, indent=2) + "\n", encoding="utf-8")
    print("\n".join(perf_lines(perf)))
    return perf


def perf_lines(perf: dict[str, Any]) -> list[str]:
    """The plain-text table of one perf run (also readable in a terminal)."""
    lines = [f"performance ({perf.get('grid', '?')} grid): {perf.get('note', '')}", ""]
    lines.append(f"{'fit job':<66} {'s/example':>10} {'x SFT':>7} {'x SFT after step 1':>19} {'step 1 s':>9} "
                 f"{'peak RSS MB':>12} {'x SFT RSS':>10}")
    for r in perf.get("fit_vs_sft", []):
        lines.append(f"{r['label']:<66} {r['seconds_per_example']:>10.3f} {r['ratio_to_sft']:>6.2f}x "
                     f"{r.get('steady_ratio_to_sft', float('nan')):>18.2f}x {r.get('first_step_seconds', float('nan')):>9.1f} "
                     f"{r['peak_rss_mb']:>12.0f} {r.get('rss_to_sft', float('nan')):>9.2f}x")
    lines += ["", f"{'export job':<66} {'seconds':>10} {'peak RSS MB':>12}"]
    export = perf.get("export", [])
    for r in export:
        lines.append(f"{r['label']:<66} {r['seconds']:>10.2f} {r['peak_rss_mb']:>12.0f}")
    ours = next((r for r in export if r["label"].startswith("HeteroFusion")), None)
    linear = next((r for r in export if "linear" in r["label"]), None)
    if ours and linear and linear["seconds"] > 0:
        lines.append(f"  merged export / mergekit linear: {ours['seconds'] / linear['seconds']:.2f}x "
                     f"(of which report/config/loss-plot side files {ours.get('side_files_seconds', float('nan')):.2f} s; "
                     f"whole merge call incl. the fit task {ours.get('total_seconds', float('nan')):.2f} s)")
    if ours and linear and linear.get("process_seconds"):
        lines.append(f"  whole processes (start-up, imports, fit task with max_steps 0, export): "
                     f"{ours['process_seconds']:.2f} s vs {linear['process_seconds']:.2f} s = "
                     f"{ours['process_seconds'] / linear['process_seconds']:.2f}x")
    teacher = perf.get("teacher") or {}
    lines += ["", teacher.get("note") or "teacher rows/s: " + ", ".join(f"{k} {v}" for k, v in teacher.items())]
    mem = perf.get("target_memory") or {}
    lines += ["", f"1B target memory: {mem.get('note', '')}"]
    for r in mem.get("rows", []):
        lines.append(f"  {r['dtype']:<10} peak RSS {r['peak_rss_mb']:>8.0f} MB   (estimate {r['estimate_mb']:.0f} MB)")
    if "bf16_to_fp32" in mem:
        lines.append(f"  bf16 / fp32 peak RSS: {mem['bf16_to_fp32']:.2f}x")
    for line in (mem.get("estimate_8b") or {}).values():
        lines.append(f"  estimate: {line}")
    return lines
