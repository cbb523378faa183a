# SPDX-License-Identifier: Apache-2.0
"""Write the benchmark's `results.json`, `results.md` and `results.png` from the collected results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .methods import METHOD_LABELS
from .regimes import REGIME_TITLES


def write_all(results: dict[str, Any], out: Path, *, chart: bool = True) -> dict[str, Path]:
    """Write the result files into `out` (each atomically; the chart only with `chart`); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    for key, text in (("json", json.dumps(results, indent=2, default=str) + "\n"), ("md", render_markdown(results))):
        tmp = paths[key].with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(paths[key])
    if chart:
        write_chart(results, paths["png"])
    return paths


# ------------------------------------------------------------------------------------------------- markdown


def _pm(mean: float, std: float, n: int) -> str:
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def _ratio(value: Any) -> str:
    return f"{value:.2f}x" if isinstance(value, (int, float)) else "-"


def _seconds(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _lr(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else "-"


def render_markdown(results: dict[str, Any]) -> str:
    grid, models = results["grid"], results.get("models", {})
    tasks = grid["tasks"]
    features = results.get("features", {})
    lines = [f"# HeteroFusion benchmark v2 (`{grid['name']}` grid)", ""]
    compute = results.get("compute_seconds") or {}
    lines += [f"Command: `{results.get('command', '')}`  ",
              f"Started {results.get('started', '?')}, finished: {results.get('finished', 'not yet (partial)')}; "
              f"torch threads {results.get('threads')}. Compute recorded in the run records (cached runs count "
              f"once): experts {compute.get('experts', 0) / 60:.0f} min, runs at the chosen lrs "
              f"{compute.get('methods_chosen_lr', 0) / 60:.0f} min.", "",
              "![results](results.png)", ""]
    lines += ["## Setup", ""]
    for role in ("target", "source"):
        m = models.get(role)
        if m:
            lines.append(f"- **{role}**: {m['name']} ({m['family']}, {m['num_layers']} layers, hidden "
                         f"{m['hidden_size']}, vocab {m['vocab_size']}; licence: {m['license']})")
    warm = ("`warmup_start: first_step`, warmup ratio 0.05" if features.get("warmup_start")
            else "no warmup (`warmup_ratio: 0`: the `warmup_start` switch is not in this checkout, and 5 % of "
                 f"{results.get('steps')} steps would be one step at lr 0)")
    sft_path = "the pipeline's `trainer: lora` (same loop, the anchor's factors trained)" \
        if features.get("lora_trainer") else "(skipped: `trainer: lora` not in this checkout)"
    lines += [
        f"- tasks (synthetic IE, `vocab={grid['vocab']}`): {', '.join(f'`{t}`' for t in tasks)}; the target's own "
        f"expert is for `{tasks[0]}`, the source family has one expert for each other task; noisy pool adds "
        f"{', '.join(f'`{n}`' for n in grid['noise'])}",
        f"- rows per task: {grid['n_train']} train (experts), {grid['n_replay']} replay, {grid['n_test']} test, "
        f"{grid['n_dev']} dev (lr choice only), {grid['n_prompts']} unlabeled prompts; all disjoint "
        f"(split seed {grid['split_seed']}); regimes other than `paper` keep {grid['n_labels']} labelled rows per "
        f"source task; `seeds_only` teachers synthesize {grid['n_synth']} prompts each",
        f"- experts: LoRA r={grid['rank']}, alpha={grid['lora_alpha']}, all seven projections, "
        f"{grid['expert_steps']} steps x batch {grid['expert_batch']} (noisy: {grid['noise_steps']}), lr "
        f"{grid['expert_lr']}; plain prompt/response text",
        f"- every trained method: {results.get('steps')} optimiser steps of batch 1 x accumulation "
        f"{grid['accumulation']}, AdamW (weight decay 0.01), cosine schedule, {warm}, no gradient clipping",
        f"- HeteroFusion: E={grid['embed_dim']}, {grid['num_heads']} heads, block size `{grid['block_size']}`, "
        f"K={grid['num_projections']}; data-only SFT through {sft_path}",
        f"- lr sweeps (seed {grid['seeds'][0]}, best dev average): anchor-adapter training "
        f"{', '.join(map(_lr, grid['sft_lrs']))}; transfer nets {', '.join(map(_lr, grid['fusion_lrs']))}; placebo "
        f"controls {'tuned the same way' if grid['tune_placebos'] else 'use the lr chosen for the method they control'}",
        f"- seeds {', '.join(map(str, grid['seeds']))} for every trained or random method (mean ± sample std); "
        "experts and splits fixed; teacher: greedy, "
        f"{grid['teacher_max_new_tokens']} new tokens at most",
        "- scores: micro-F1 (extraction) or accuracy (classification), 0-100, greedy decoding, exact match",
        "",
    ]
    if grid.get("reductions"):
        lines += ["### What was reduced, and why", ""] + [f"- {r}" for r in grid["reductions"]] + [""]
    lines += _experts_table(results)
    lines += _cells(results)
    for regime in grid["regimes"]:
        if results.get("tables", {}).get(regime):
            lines += _regime_section(results, regime)
    lines += _loso(results)
    lines += render_perf(results.get("perf"))
    lines += ["## Notes", ""] + [f"- {n}" for n in results.get("notes", [])] + [""]
    return "\n".join(lines)


def _experts_table(results: dict) -> list[str]:
    experts = results.get("experts") or []
    if not experts:
        return []
    ref = (results.get("reference") or {}).get("scores", {})
    lines = ["### Experts (score on their own base: the divisor of transfer efficiency)", ""]
    rows = []
    for e in experts:
        score = ref.get(e["task"])
        rows.append([e["label"], e["role"], f"{score:.1f}" if score is not None and e["role"] != "noise" else "-",
                     f"{e['train_seconds']:.0f}" + (" (cached)" if e.get("cached") else "")])
    return lines + _table(["expert", "role", "own-base score", "train s"], rows) + [""]


def _cells(results: dict) -> list[str]:
    cells = results.get("cells") or {}
    if not cells:
        return []
    methods = list(dict.fromkeys(m for c in cells.values() for m in c))
    rows = [[METHOD_LABELS.get(m, m), *(cells[r].get(m, "-") for r in cells)] for m in methods]
    return ["## Which cells are complete", ""] + _table(["method", *cells], rows) + [""]


def _regime_section(results: dict, regime: str) -> list[str]:
    grid = results["grid"]
    tasks, sources = grid["tasks"], grid["tasks"][1:]
    table = results["tables"][regime]
    lines = [f"## Regime {REGIME_TITLES.get(regime, regime)}", ""]
    rows = []
    for method, row in table.items():
        n = row["n_seeds"]
        ret = row.get("retention")
        eff = [v["mean"] for v in row.get("efficiency", {}).values()]
        rows.append([METHOD_LABELS.get(method, method), _lr(row.get("lr")),
                     *(_pm(row["mean"][t], row["std"][t], n) for t in tasks),
                     f"**{_pm(row['mean']['avg'], row['std']['avg'], n)}**",
                     f"{ret['mean']:.0f}" if ret else "-", f"{min(eff):.0f}" if eff else "-", str(n)])
    constant = results.get("constant")
    if constant:
        rows.append(["*always the most frequent test answer*", "-", *(f"*{constant[t]:.1f}*" for t in tasks),
                     f"*{constant['avg']:.1f}*", "-", "-", "-"])
    lines += _table(["method", "lr", *tasks, "**avg**", "anchor retention %", "min transfer eff. %", "seeds"],
                    rows) + [""]
    eff_rows = [[METHOD_LABELS.get(m, m), *(_pm(r["efficiency"][t]["mean"], r["efficiency"][t]["std"], r["n_seeds"])
                                             if t in r.get("efficiency", {}) else "-" for t in sources)]
                for m, r in table.items()]
    lines += ["Transfer efficiency per source task (% of the source expert's own score):", ""]
    lines += _table(["method", *sources], eff_rows) + [""]
    paired = (results.get("paired") or {}).get(regime) or {}
    comparisons = {paired["primary"]: paired["vs"], **(paired.get("also") or {})} if paired.get("vs") else {}
    for primary, versus in comparisons.items():
        lines += [f"Paired difference of the average, `{primary}` minus each control (per seed, 95 % t-interval):",
                  ""]
        prow = []
        for m, d in versus.items():
            ci = f"[{d['low']:+.1f}, {d['high']:+.1f}]" if d["low"] is not None else "-"
            prow.append([METHOD_LABELS.get(m, m), f"{d['mean']:+.1f}", ci, str(d["n"])])
        lines += _table(["control", "difference", "95 % interval", "pairs"], prow) + [""]
    sweeps = [(m, r) for m, r in table.items() if r.get("sweep")]
    if sweeps:
        lines += ["Learning-rate sweeps (dev average at each lr, first seed; the chosen lr in bold):", ""]
        for m, r in sweeps:
            parts = [(f"**{k}: {v['dev_avg']:.1f}**" if v["lr"] == r.get("lr") else f"{k}: {v['dev_avg']:.1f}")
                     for k, v in r["sweep"].items()]
            lines.append(f"- {METHOD_LABELS.get(m, m)}: " + ", ".join(parts))
        lines.append("")
    teacher = _teacher_counts(results, regime)
    skipped = (results.get("skipped") or {}).get(regime) or {}
    if skipped:
        lines += [f"- **{METHOD_LABELS.get(m, m)}**: SKIPPED ({why})" for m, why in skipped.items()] + [""]
    return lines + teacher


def _teacher_counts(results: dict, regime: str) -> list[str]:
    """Per source: what the teacher of the first `hf_teacher` seed was given, made, kept and dropped."""
    lines = []
    for method in ("hf_teacher", "hf_teacher_placebo"):  # the `_bal` variants label the same prompts alike
        entry = results.get("runs", {}).get(regime, {}).get(method, {})
        first = next(iter(entry.get("seeds", {}).values()), None)
        teacher = (first or {}).get("teacher") or {}
        if not teacher.get("sources"):
            continue
        rows = []
        for s in teacher["sources"]:
            dropped = ", ".join(f"{k} {v}" for k, v in (s.get("dropped") or {}).items() if v) or "-"
            sample = (s.get("samples") or [{}])[0]
            text = f"`{str(sample.get('response', ''))[:40]}`" if sample else "-"
            rows.append([str(s.get("source")), str(s.get("given", 0)), str(s.get("synthesized", 0)),
                         str(s.get("labelled", 0)), str(s.get("kept", 0)), dropped, text])
        lines += [f"Teacher rows of `{method}` (first seed; {teacher.get('rows', '?')} rows kept in all):", ""]
        lines += _table(["source", "given", "synthesized", "labelled", "kept", "dropped", "a kept answer"], rows)
        lines.append("")
    return lines


def _loso(results: dict) -> list[str]:
    loso = results.get("loso")
    if not loso or not loso.get("per_source"):
        return []
    lines = [f"## Per-source contribution: leave-one-source-out refit (`{loso['method']}`, regime `{loso['regime']}`,"
             f" lr {_lr(loso['lr'])}, seed {loso['seed']})", "",
             f"Full pool average {loso['full_avg']:.1f}. Drop = full minus refit without that source; ablation = the "
             "fusion report's held-out loss change with the source masked (no retraining), where present.", ""]
    def num(v: Any) -> str:
        return f"{v:+.4f}" if v is not None else "-"

    rows = [[k, f"{v['avg']:.1f}", f"{v['drop']:+.1f}", f"{v['task_drop']:+.1f}", num(v.get("ablation")),
             num(v.get("task_ablation"))] for k, v in loso["per_source"].items()]
    lines += _table(["source left out", "avg without it", "drop (avg)", "drop on its task",
                     "report: mean loss rise", "report: loss rise on its task"], rows)
    agree = loso.get("agreement") or {}
    rho = agree.get("spearman_drop_vs_ablation")
    if rho is not None:
        own = agree.get("spearman_task_drop_vs_task_ablation")
        lines += ["", f"Spearman rank correlation over {len(agree['with_ablation'])} sources, refit drop (average) vs "
                      f"report mean loss rise: {rho:+.2f}"
                      + (f"; drop on the source's own task vs loss rise on that task: {own:+.2f}" if own is not None
                         else "") + "."]
    else:
        lines += ["", "The fusion report of this checkout has no per-source ablation: no rank comparison."]
    return lines + [""]


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
                 _ratio(r.get("steady_ratio_to_sft")), _seconds(r.get("first_step_seconds")),
                 f"{r['peak_rss_mb']:.0f}",
                 f"{r['hypernet_parameters'] / 1e6:.1f} M" if r.get("hypernet_parameters") else "-"] for r in fit]
        lines += _table(["job", "s / example", "ratio to SFT", "after step 1", "step 1 (s)", "peak RSS (MB)",
                         "hypernet params"], rows) + [""]
        lines += ["\"after step 1\": the ratio of seconds per example once the first optimiser step (allocation, "
                  "lazy init, the optimiser state) is paid; a longer fit approaches it.", ""]
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

_ORDER = ("anchor", "task_arithmetic", "ties", "dare_ties", "sft", "sft_teacher", "sft_teacher_bal", "hf_placebo", "hf",
          "hf_improved", "hf_teacher_placebo", "hf_teacher", "hf_teacher_placebo_bal", "hf_teacher_bal")


def _color(method: str) -> str:
    if method in ("hf_teacher", "hf_teacher_bal"):
        return "#d62728"
    if method.startswith("hf") and "placebo" not in method:
        return "#ff9896"
    if "placebo" in method:
        return "#c5b0d5"
    if method.startswith("sft"):
        return "#2ca02c"
    return "#7f7f7f"


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Bars per method (average score, mean ± std over seeds), one panel per regime."""
    # pyplot is imported here, after choosing the headless backend, and only when a chart is drawn: importing it
    # at module level would pick a backend for every importer of this module.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = results.get("tables", {})
    regimes = [r for r in results["grid"]["regimes"] if tables.get(r)] or ["paper"]
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.2 * len(regimes), 4.4), dpi=110, squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        table = tables.get(regime, {})
        methods = [m for m in _ORDER if m in table] + [m for m in table if m not in _ORDER]
        means = [table[m]["mean"]["avg"] for m in methods]
        stds = [table[m]["std"]["avg"] for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, color=[_color(m) for m in methods], capsize=3)
        constant = (results.get("constant") or {}).get("avg")
        if constant is not None:
            ax.axhline(constant, color="black", linestyle="--", linewidth=0.8, label="most frequent answer")
            ax.legend(loc="upper left", fontsize=7)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("average score over tasks (0-100)")
        ax.set_title(regime, fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"HeteroFusion benchmark v2 ({results['grid']['name']} grid; error bars: std over seeds)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
