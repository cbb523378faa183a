# SPDX-License-Identifier: Apache-2.0
"""The benchmark's numbers from the per-seed run records: means, spreads, transfer efficiency, anchor retention,
paired differences with 95 % t-intervals, and the rank agreement of two per-source contribution measures.

* transfer efficiency of source task t: fused score on t / the source expert's score on its own base, x 100;
* anchor retention: fused score on the anchor's task / the anchor's own score, x 100;
* paired difference A - B: per seed, A's average minus B's average on the same seed (a method that runs once,
  being deterministic, is the same on every seed); mean and the 95 % interval `mean ± t(0.975, n-1) s / sqrt(n)`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


# Two-sided 95 % Student-t quantiles t(0.975, df): no scipy needed for the few seeds a benchmark has.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    if df in _T975:
        return _T975[df]
    below = max(k for k in _T975 if k <= df) if df > 1 else 1
    return _T975[below] if df <= 30 else 1.96


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_interval(diffs: Sequence[float]) -> dict[str, Any]:
    """Mean paired difference and its 95 % t-interval (`None` bounds with fewer than two pairs)."""
    diffs = list(diffs)
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": None, "high": None, "n": len(diffs)}
    half = t975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)}


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson on ranks); None when undefined (fewer than 2 points, constant)."""
    if len(x) != len(y) or len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    if sx == 0 or sy == 0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(rx, ry)) / (sx * sy)


def summarise_regime(entries: dict[str, dict], tasks: Sequence[str], reference: dict[str, float]) -> dict:
    """Per method: seeds, lr, mean/std per task and average, efficiency per source task, anchor retention."""
    anchor_task, source_tasks = tasks[0], tasks[1:]
    table = {}
    for method, entry in entries.items():
        records = list(entry.get("seeds", {}).values())
        if not records:
            continue
        cols = {t: [r["scores"][t] for r in records] for t in tasks}
        cols["avg"] = [r["avg"] for r in records]
        row: dict[str, Any] = {"n_seeds": len(records), "lr": entry.get("lr"), "lr_rule": entry.get("lr_rule"),
                               "sweep": entry.get("sweep") or {}, "mean": {}, "std": {}}
        for k, v in cols.items():
            row["mean"][k], row["std"][k] = mean_std(v)
        eff = {}
        for t in source_tasks:
            ref = reference.get(t)
            if ref:
                eff[t] = mean_std([100.0 * s / ref for s in cols[t]])
        row["efficiency"] = {t: {"mean": m, "std": s} for t, (m, s) in eff.items()}
        ref = reference.get(anchor_task)
        if ref:
            m, s = mean_std([100.0 * v / ref for v in cols[anchor_task]])
            row["retention"] = {"mean": m, "std": s}
        row["fit_seconds"] = statistics.fmean(r.get("fit_seconds") or r.get("merge_seconds") or 0.0 for r in records)
        table[method] = row
    return table


def paired_table(entries: dict[str, dict], primary: str) -> dict[str, dict]:
    """`primary` minus every other method, paired over the seeds both have (or against a one-run method)."""
    base = entries.get(primary, {}).get("seeds", {})
    if not base:
        return {}
    out = {}
    for method, entry in entries.items():
        if method == primary or not entry.get("seeds"):
            continue
        other = entry["seeds"]
        if len(other) == 1:
            (only,) = other.values()
            diffs = [r["avg"] - only["avg"] for r in base.values()]
        else:
            diffs = [base[s]["avg"] - other[s]["avg"] for s in base if s in other]
        if diffs:
            out[method] = paired_interval(diffs)
    return out


def loso_agreement(loso: dict) -> dict:
    """Spearman between the refit's per-source drop and the report's ablation (where the report has one)."""
    per = loso.get("per_source", {})
    names = [k for k, v in per.items() if v.get("ablation") is not None]
    result = {"sources": list(per), "with_ablation": names}
    if len(names) >= 2:
        result["spearman_drop_vs_ablation"] = spearman([per[k]["drop"] for k in names],
                                                       [per[k]["ablation"] for k in names])
    tasks = [k for k, v in per.items() if v.get("task_ablation") is not None]
    if len(tasks) >= 2:
        result["spearman_task_drop_vs_task_ablation"] = spearman([per[k]["task_drop"] for k in tasks],
                                                                 [per[k]["task_ablation"] for k in tasks])
    return result
