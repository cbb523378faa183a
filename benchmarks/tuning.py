# SPDX-License-Identifier: Apache-2.0
"""Which runs a regime needs, in which order, and the run cache that makes the grid resumable.

Per regime and method: a deterministic method runs once; a trained method first runs its learning-rate sweep on
the first seed (extended outwards while the best lr sits at an edge, `sweep_extend` times at most), picks the lr
with the best average dev score (ties: the smaller lr), then runs the other seeds at that lr. A placebo control either gets its own sweep (`tune_placebos`) or the lr chosen for the method it
controls. Order: every method's first seed before any method's later seeds, so a cut-short grid still has every
method.

Every run is stored in `<cache>/runs/<key>.json`, `key` being the hash of everything the run depends on (the
regime's data, the experts, the grid's training fields, lr, seed, the method and the pipeline features it uses).
A rerun, a resumed background run, or another output folder with the same settings reads it back instead of
computing it. Records are written atomically, so a kill never leaves a half record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from hf_heterofusion.method.budget import RULES as BUDGET_RULES
from hf_heterofusion.teacher.filters import ON_TASK_FILTERS, ON_TASK_RULES
from hf_heterofusion.teacher.labeller import CHAT_READER_VERSION

from .methods import CONTROLLED_BY, DETERMINISTIC, DISTILL, MERGES, SFT_LIKE, SOURCE_SWITCHES, TEACHER_METHODS
from .regimes import RegimeData
from .run import RUNNERS, Bench, methods_for, unavailable


logger = logging.getLogger(__name__)

CACHE_VERSION = 3  # 3: fusion runs on the default fast path, teacher filters off
SHARED = ("reference", "anchor", *MERGES)  # runs that do not read the regime's rows (shared by its pool)
# Grid fields that change no run (report-only, which runs are made, or the performance section).
_NOT_IN_KEY = ("perf", "scaling", "reductions", "seeds", "name", "regimes", "tune_placebos", "improved_regimes",
               "loso_regime", "sft_lrs", "fusion_lrs", "sweep_extend", "sft_lr", "placebo_in_noisy", "fusion_lr",
               "distill_regimes")


class NotCached(LookupError):
    """A run that `--cached-only` would have had to compute; its cell stays incomplete."""


def run_key(bench: Bench, regime: RegimeData, method: str, lr: float | None, seed: int,
            drop_source: str | None = None) -> str:
    grid = {k: v for k, v in bench.grid.to_dict().items() if not k.startswith(_NOT_IN_KEY)}
    # What the run reads of the regime: nothing (shared runs), its labelled rows and pool (no teacher: so
    # few_labels and seeds_only share those runs, and data-only SFT, which uses no source, ignores the pool), or
    # everything (teacher methods also read the prompts and `synthesize`).
    if method in SHARED:
        regime_id = None
    elif method in TEACHER_METHODS:
        regime_id = regime.fingerprint
    elif method == "sft":
        regime_id = hashlib.sha256(regime.replay.read_bytes()).hexdigest()[:16]
    else:
        regime_id = regime.rows_fingerprint
    f = bench.features
    features = {}
    if method not in SHARED:
        features["warmup_start"] = f.warmup_start
    if method in SFT_LIKE:
        features["lora_trainer"] = f.lora_trainer
    if method in TEACHER_METHODS:
        features["teacher"] = f.teacher
    if method in DISTILL:
        features["distill"] = f.distill
        if DISTILL[method].get("step_selection"):
            features["budget_rules"] = BUDGET_RULES
        if DISTILL[method].get("replay_balance") == "task_answer":
            features["kind_rules"] = 2  # 2: only the answer kinds a labelled row shows are drawn up
    if method in TEACHER_METHODS and regime.synthesize:
        # which on-task filters judge synthesized rows: runs from before a filter existed are not reused
        features["on_task_filters"] = [*ON_TASK_FILTERS, ON_TASK_RULES]
        if SOURCE_SWITCHES.get(method, {}).get("synthesizer", "source") != "source":
            features["chat_reader"] = CHAT_READER_VERSION  # how another writer's replies are read
    data = {
        "v": CACHE_VERSION, "method": method, "lr": lr, "seed": seed if method != "anchor" else 0,
        "drop_source": drop_source, "grid": grid, "features": features,
        "pool": None if method in ("reference", "anchor", "sft") else regime.pool, "regime": regime_id,
        "models": [str(bench.target_dir), str(bench.source_dir)],
        "experts": [str(bench.anchor), *map(str, bench.task_experts.values()), *map(str, bench.noise_experts.values())],
        # CPU kernels sum in a thread-dependent order, so scores move with the thread count (README v10): a run
        # made with another count is not reused
        "threads": torch.get_num_threads(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_run(bench: Bench, regime: RegimeData, method: str, lr: float | None, seed: int,
               drop_source: str | None = None, *, dev: bool = False) -> dict:
    """The record of one run, from the cache or computed now (then cached).

    Only sweep runs are scored on the dev split too (`dev`): no other run needs it, and scoring costs as much as
    a third of a run. A cached record without dev scores is recomputed when they are asked for.
    """
    key = run_key(bench, regime, method, lr, seed, drop_source)
    path = bench.cache / "runs" / f"{key}.json"
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))["record"]
            if not dev or "dev_avg" in record:
                return dict(record, cached=True)
        except (OSError, json.JSONDecodeError, KeyError):
            pass  # unreadable: compute again
    what = f"{regime.name} / {method} / lr {lr} / seed {seed}" + (f" / minus {drop_source}" if drop_source else "")
    if bench.cached_only:
        raise NotCached(what)
    logger.info("run %s", what)
    started = time.perf_counter()
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {"drop_source": drop_source} if drop_source else {}
    if method not in SHARED:
        kwargs.update(dev=dev, key=key)  # the key names the run's work folder: concurrent grids never share one
    record = RUNNERS[method](bench, regime, lr, seed, **kwargs)
    record.update(avg=_mean(record["scores"].values()), lr=lr, seed=seed,
                  wall_seconds=round(time.perf_counter() - started, 1))
    if "dev" in record:
        record["dev_avg"] = _mean(record["dev"].values())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "what": what, "record": record}, indent=2, default=str) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    logger.info("    avg %.1f%s (%.0f s)", record["avg"],
                f", dev {record['dev_avg']:.1f}" if "dev_avg" in record else "", record["wall_seconds"])
    return dict(record, cached=False)


def sweep_of(bench: Bench, method: str) -> tuple[float, ...]:
    return bench.grid.sft_lrs if method in SFT_LIKE else bench.grid.fusion_lrs


def choose_lr(sweep: dict[str, dict]) -> float:
    """The lr with the best average dev score (ties: the smaller lr)."""
    best = max(sweep.values(), key=lambda r: (round(r["dev_avg"], 6), -r["lr"]))
    return best["lr"]


def sweep_runs(bench: Bench, regime: RegimeData, method: str, seed: int, sweep: dict[str, dict]) -> dict[str, dict]:
    """Run the method's lr sweep on `seed` (into `sweep`: lr -> dev and test average); return the records by lr.

    A best lr at the edge of the sweep says the optimum may lie beyond it: step outwards, by the sweep's own
    ratio, up to `sweep_extend` times, so no method is judged at a boundary of our choosing.
    """
    records: dict[str, dict] = {}

    def run(lr: float) -> None:
        record = cached_run(bench, regime, method, lr, seed, dev=True)
        sweep[f"{lr:g}"] = {"lr": lr, "dev_avg": record["dev_avg"], "avg": record["avg"]}
        records[f"{lr:g}"] = record

    for lr in sweep_of(bench, method):
        run(lr)
    for _ in range(bench.grid.sweep_extend):
        lr = next_lr(sweep)
        if lr is None:
            break
        run(lr)
    return records


def next_lr(sweep: dict[str, dict]) -> float | None:
    """The lr one step beyond the sweep's edge when the best dev score sits strictly at that edge, else None."""
    points = sorted(sweep.values(), key=lambda r: r["lr"])
    if len(points) < 2:
        return None
    best = choose_lr(sweep)
    low, high = points[0], points[-1]
    if best == high["lr"] and high["dev_avg"] > points[-2]["dev_avg"]:
        return high["lr"] * high["lr"] / points[-2]["lr"]
    if best == low["lr"] and low["dev_avg"] > points[1]["dev_avg"]:
        return low["lr"] * low["lr"] / points[1]["lr"]
    return None


def run_regime(bench: Bench, name: str, *, only: Sequence[str] | None = None,
               on_result: Callable[[], None] | None = None) -> None:
    """Run (or read back) every run of regime `name` into `bench.results["runs"][name]`."""
    g = bench.grid
    regime = bench.regimes[name]
    runs: dict[str, dict[str, Any]] = bench.results.setdefault("runs", {}).setdefault(name, {})
    skipped: dict[str, str] = bench.results.setdefault("skipped", {}).setdefault(name, {})
    methods = [m for m in methods_for(name, g) if only is None or m in only]
    for m in list(methods):
        reason = unavailable(bench, m)
        if reason:
            skipped[m] = reason
            methods.remove(m)
            logger.info("skip %s / %s: %s", name, m, reason)

    def store(method: str, record: dict | None) -> None:
        if record is None:
            return
        entry = runs.setdefault(method, {"seeds": {}, "sweep": {}})
        entry["seeds"][str(record["seed"])] = record
        if on_result is not None:
            on_result()

    first, rest = g.seeds[0], g.seeds[1:]
    tuned = [m for m in methods if m not in DETERMINISTIC and m != "dare_ties"
             and (m not in CONTROLLED_BY or g.tune_placebos or CONTROLLED_BY[m] not in methods)]
    borrowed = [m for m in methods if m in CONTROLLED_BY and m not in tuned]
    # 1. deterministic methods and the random merge's first seed; 2. every sweep on the first seed.
    for m in [x for x in methods if x in DETERMINISTIC or x == "dare_ties"]:
        store(m, attempt(cached_run, bench, regime, m, None, first if m != "anchor" else 0))
    for m in list(tuned):
        entry = runs.setdefault(m, {"seeds": {}, "sweep": {}})
        records = attempt(sweep_runs, bench, regime, m, first, entry["sweep"])
        if records is None:  # an incomplete sweep chooses no lr: the method has no cell yet
            tuned.remove(m)
            continue
        entry["lr"] = choose_lr(entry["sweep"])
        entry["lr_rule"] = "own sweep (best dev average)"
        store(m, records[f"{entry['lr']:g}"])
    # 3. the placebo controls' first seed at the lr of the method they control.
    borrowed = [m for m in borrowed if "lr" in runs.get(CONTROLLED_BY[m], {})]
    for m in borrowed:
        lr = runs[CONTROLLED_BY[m]]["lr"]
        runs.setdefault(m, {"seeds": {}, "sweep": {}}).update(lr=lr, lr_rule=f"lr of `{CONTROLLED_BY[m]}`")
        store(m, attempt(cached_run, bench, regime, m, lr, first))
    # 4. the other seeds.
    for seed in rest:
        if "dare_ties" in methods:
            store("dare_ties", attempt(cached_run, bench, regime, "dare_ties", None, seed))
        for m in tuned + borrowed:
            store(m, attempt(cached_run, bench, regime, m, runs[m]["lr"], seed))


def attempt(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`, or None for a run `--cached-only` does not compute (only ever raised in that mode)."""
    try:
        return fn(*args)
    except NotCached as missing:
        logger.info("not in the run cache, left incomplete: %s", missing)
        return None


def run_loso(bench: Bench, on_result: Callable[[], None] | None = None) -> None:
    """Leave-one-source-out refits of the primary method in `grid.loso_regime` (first seed, chosen lr)."""
    g = bench.grid
    name = g.loso_regime
    runs = bench.results.get("runs", {}).get(name or "", {})
    method = "hf_teacher" if "hf_teacher" in runs else "hf"
    if not name or method not in runs or "lr" not in runs[method]:
        return
    regime, lr, seed = bench.regimes[name], runs[method]["lr"], g.seeds[0]
    full = runs[method]["seeds"][str(seed)]
    out: dict[str, Any] = {"regime": name, "method": method, "lr": lr, "seed": seed, "full_avg": full["avg"],
                           "per_source": {}}
    bench.results["loso"] = out
    for i, task in enumerate(g.tasks[1:]):
        record = attempt(cached_run, bench, regime, method, lr, seed, task)
        if record is None:
            continue
        ablation = full.get("ablation") or []
        out["per_source"][task] = {
            "avg": record["avg"], "task_score": record["scores"][task], "drop": full["avg"] - record["avg"],
            "task_drop": full["scores"][task] - record["scores"][task],
            "ablation": ablation_value(ablation[i] if i < len(ablation) else None),
            "task_ablation": ablation_value(ablation[i] if i < len(ablation) else None, task),
        }
        if on_result is not None:
            on_result()


def ablation_value(value: Any, task: str | None = None) -> float | None:
    """One number from the fusion report's per-source ablation (`FusionReport.sources[k].ablation`, kept in the
    run record), read defensively: larger = the fusion relies more on that source.

    The report gives `{"delta_loss": {task: loss without k - loss with all}, "mean_delta_loss": x, ...}`; with
    `task`, that task's delta; else the mean delta. A bare number, or a mapping with `delta` / `loss_increase` /
    `mean`, is read as the delta too; anything else (None, a note) is None.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, dict):
        return None
    per_task = value.get("delta_loss")
    if isinstance(per_task, dict):
        if task is not None and _is_number(per_task.get(task)):
            return float(per_task[task])
        numbers = [float(v) for v in per_task.values() if _is_number(v)]
        if task is None and _is_number(value.get("mean_delta_loss")):
            return float(value["mean_delta_loss"])
        return statistics.fmean(numbers) if numbers and task is None else None
    for key in ("mean_delta_loss", "delta", "loss_increase", "mean"):
        if _is_number(value.get(key)):
            return float(value[key])
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
