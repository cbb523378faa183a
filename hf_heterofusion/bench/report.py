# SPDX-License-Identifier: Apache-2.0
"""Write the benchmark's `results.json`, `results.md` and `results.png` from the collected results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .run import METHOD_LABELS, SETTINGS


SETTING_TITLES = {
    "single": "Setting 1: single source family (target keeps its own expert for task 1, source experts for the rest)",
    "noisy": "Setting 2: noisy pool (setting 1 plus task-irrelevant source experts)",
}


def write_all(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write the three result files into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(results), encoding="utf-8")
    write_chart(results, paths["png"])
    return paths


# ------------------------------------------------------------------------------------------------- markdown


def _pm(mean: float, std: float, n: int) -> str:
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    grid, models = results["grid"], results.get("models", {})
    tasks = grid["tasks"]
    lines = [f"# HeteroFusion benchmark (`{grid['name']}` grid)", ""]
    compute = results.get("compute_seconds") or {}
    lines += [f"Command: `{results.get('command', '')}`  ",
              f"Finished: {results.get('finished', '?')}; torch threads {results.get('threads')}; wall time of the "
              f"last invocation {results.get('wall_seconds', 0) / 60:.0f} min. Compute recorded over all invocations "
              f"(cached results are reused): experts {compute.get('experts', 0) / 60:.0f} min, method runs incl. "
              f"scoring {compute.get('methods', 0) / 60:.0f} min.", ""]
    lines += ["## Setup", ""]
    for role in ("target", "source"):
        m = models.get(role)
        if m:
            lines.append(f"- **{role}**: {m['name']} ({m['family']}, {m['num_layers']} layers, hidden "
                         f"{m['hidden_size']}, FFN {m['intermediate_size']}, vocab {m['vocab_size']}; "
                         f"licence: {m['license']})")
    lines += [
        f"- tasks (synthetic IE, `vocab={grid['vocab']}`): {', '.join(f'`{t}`' for t in tasks)}; the target's own "
        f"expert is for `{tasks[0]}`, the source family has one expert for each other task",
        f"- noisy experts (source family): {', '.join(f'`{n}`' for n in grid['noise'])}",
        f"- splits per task: {grid['n_train']} train (experts), {grid['n_replay']} replay, {grid['n_test']} test "
        f"(disjoint prompts, split seed {grid['split_seed']})",
        f"- experts: LoRA r={grid['rank']}, alpha={grid['lora_alpha']}, all seven projections, "
        f"{grid['expert_steps']} steps x batch {grid['expert_batch']} (noisy: {grid['noise_steps']}), lr "
        f"{grid['expert_lr']}; plain prompt/response text (no chat template) for both families",
        f"- fusion: batch 1 x accumulation {grid['accumulation']}, {grid['epochs']} epochs, lr {grid['fusion_lr']}, "
        f"E={grid['embed_dim']}, {grid['num_heads']} heads, block size `{grid['block_size']}`"
        f" (= {results.get('block_size_resolved', '?')}), K={grid['num_projections']} RDM projections; SFT control: "
        f"same optimiser steps ({results.get('optimizer_steps', '?')}) x batch {grid['accumulation']}, lr {grid['sft_lr']}",
        f"- seeds: {', '.join(map(str, grid['seeds']))} for every trained or random method (mean ± sample std); "
        "the experts and splits are fixed",
        "- scores: micro-F1 (extraction) or accuracy (classification), 0-100, greedy decoding, exact match",
        "",
    ]
    if grid.get("reductions"):
        lines += ["### What was reduced, and why", ""] + [f"- {r}" for r in grid["reductions"]] + [""]

    lines += _experts_table(results)
    for setting in SETTINGS:
        table = results.get("tables", {}).get(setting)
        if not table:
            continue
        lines += [f"## {SETTING_TITLES[setting]}", ""]
        header = ["method", *tasks, "**avg**", "seeds", "fit/merge s"]
        rows = []
        for method, row in table.items():
            n = row["n_seeds"]
            cells = [_pm(row["mean"][t], row["std"][t], n) for t in tasks]
            rows.append([METHOD_LABELS.get(method, method), *cells, f"**{_pm(row['mean']['avg'], row['std']['avg'], n)}**",
                         str(n), f"{row['fit_seconds']:.0f}" if row["fit_seconds"] else "-"])
        constant = results.get("constant")
        if constant:
            rows.append(["*reference: always the most frequent test answer*", *(f"*{constant[t]:.1f}*" for t in tasks),
                         f"*{constant['avg']:.1f}*", "-", "-"])
        lines += _table(header, rows) + [""]
        contrib = _contributions(results, setting)
        if contrib:
            lines += contrib
    lines += render_perf(results.get("perf"))
    lines += ["## Notes", ""] + [f"- {n}" for n in results.get("notes", [])] + [""]
    return "\n".join(lines)


def _experts_table(results: dict) -> list[str]:
    """Every expert: its base, task, training time, and (for task experts) its score on its own base."""
    experts = results.get("experts") or []
    if not experts:
        return []
    ref = (results.get("reference") or {}).get("scores", {})
    lines = ["### Experts (score on their own base = the upper reference a fusion could carry over)", ""]
    rows = []
    for e in experts:
        score = ref.get(e["task"])
        rows.append([e["label"], e["role"], f"{score:.1f}" if score is not None and e["role"] != "noise" else "-",
                     f"{e['train_seconds']:.0f}" + (" (cached)" if e.get("cached") else "")])
    return lines + _table(["expert", "role", "own-base score", "train s"], rows) + [""]


def _contributions(results: dict, setting: str) -> list[str]:
    """Share of the transfer nets' attention mass per source (HeteroFusion report), averaged over seeds."""
    runs = results.get("runs", {}).get(setting, {})
    lines = []
    for method in ("hf_faithful", "hf_improved"):
        seeds = runs.get(method)
        if not seeds:
            continue
        shares = [r["source_contribution"] for r in seeds.values() if r.get("source_contribution")]
        if not shares:
            continue
        mean = [sum(c[i] for c in shares) / len(shares) for i in range(len(shares[0]))]
        names = results.get("source_names", {}).get(setting, [f"src{i}" for i in range(len(mean))])
        parts = ", ".join(f"{n} {100 * m:.0f}%" for n, m in zip(names, mean))
        lines.append(f"- {METHOD_LABELS[method]}: source contribution (attention mass) — {parts}")
    return lines + [""] if lines else []


def render_perf(perf: dict | None) -> list[str]:
    if not perf:
        return []
    lines = ["## Performance (measured side by side in this run)", ""]
    if perf.get("note"):
        lines += [perf["note"], ""]
    fit = perf.get("fit_vs_sft")
    if fit:
        lines += ["### Fit cost per replay example vs plain LoRA SFT (same model, data, sequence length)", ""]
        rows = [[r["label"], f"{r['seconds_per_example']:.2f}", f"{r['ratio_to_sft']:.2f}x",
                 f"{r['peak_rss_mb']:.0f}",
                 f"{r['hypernet_parameters'] / 1e6:.1f} M" if r.get("hypernet_parameters") else "-"] for r in fit]
        lines += _table(["job", "s / example", "ratio to SFT", "peak RSS (MB)", "hypernet params"], rows) + [""]
    export = perf.get("export")
    if export:
        lines += ["### Export: writing a merged full checkpoint of the target", ""]
        rows = [[r["label"], f"{r['seconds']:.1f}", f"{r['peak_rss_mb']:.0f}", f"{r.get('size_mb', 0):.0f}"]
                for r in export]
        lines += _table(["job", "seconds", "peak RSS (MB)", "output MB"], rows) + [""]
    params = perf.get("hypernet_parameters")
    if params:
        lines += ["### Hypernet parameters per preset (closed form, all roles of the target)", ""]
        rows = [[r["preset"], str(r["block_size"]), str(r["embed_dim"]), f"{r['per_role'] / 1e6:.2f} M",
                 f"{r['total'] / 1e6:.1f} M"] for r in params]
        lines += _table(["preset", "block size", "E", "per role", "total (7 roles)"], rows) + [""]
    scaling = perf.get("scaling")
    if scaling:
        lines += ["### How fit time grows (paper preset, amortize off; seconds per replay example)", ""]
        rows = [[r["axis"], str(r["value"]), f"{r['seconds_per_example']:.2f}", f"{r['net_seconds_per_pass']:.2f}"]
                for r in scaling]
        lines += _table(["axis", "value", "s / example", "net pass s"], rows) + [""]
    return lines


# ---------------------------------------------------------------------------------------------------- chart


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Bar chart: average score per method (mean ± std over seeds), one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = results.get("tables", {})
    settings = [s for s in SETTINGS if tables.get(s)] or ["single"]
    fig, axes = plt.subplots(1, len(settings), figsize=(6.5 * len(settings), 4.2), dpi=110, squeeze=False)
    for ax, setting in zip(axes[0], settings):
        table = tables.get(setting, {})
        methods = list(table)
        means = [table[m]["mean"]["avg"] for m in methods]
        stds = [table[m]["std"]["avg"] for m in methods]
        colors = ["#d62728" if m.startswith("hf_") else "#7f7f7f" if m in ("anchor", "sft") else "#1f77b4"
                  for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, color=colors, capsize=3)
        constant = (results.get("constant") or {}).get("avg")
        if constant is not None:
            ax.axhline(constant, color="black", linestyle="--", linewidth=0.8,
                       label="always the most frequent answer")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("average score over tasks (0-100)")
        ax.set_title(SETTING_TITLES[setting].split(":")[0] + f": {setting}", fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"HeteroFusion benchmark ({results['grid']['name']} grid)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
