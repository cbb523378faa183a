# SPDX-License-Identifier: Apache-2.0
"""The benchmark: the `--quick` run goes through every regime, sweep, seed, the LOSO refits and the report, and
resumes from its run cache; the statistics, lr choice, regime data and cache keys do what they claim; the
weight-space baselines compute what they claim (crop/pad, factor addition, mergekit Task Arithmetic = delta sum)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmarks import baselines, features, models, stats
from benchmarks.features import Features
from benchmarks.grid import FULL, QUICK, REDUCED, REGIMES
from benchmarks.methods import CONTROLLED_BY, DETERMINISTIC, DISTILL, TEACHER_METHODS
from benchmarks.regimes import build_regime, labelled_rows, seed_rows
from benchmarks.run import Bench, fusion_config, methods_for, steps
from benchmarks.tuning import ablation_value, choose_lr, next_lr, run_key
from benchmarks.zoo import make_splits


# The quick grid's toy target is smaller than its transfer nets, which the size check warns about (an error under
# the suite's warning filters); that is expected of toy models, not a benchmark failure.
pytestmark = pytest.mark.filterwarnings("ignore::hf_heterofusion.errors.HeteroFusionWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from benchmarks.__main__ import main

    out = tmp_path_factory.mktemp("bench") / "results"
    assert main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    return out


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


@pytest.mark.integration
def test_quick_run_writes_every_regime_method_and_section(quick_run):
    md = (quick_run / "results.md").read_text(encoding="utf-8")
    assert md.startswith("# HeteroFusion benchmark v2 (`quick` grid)")
    for heading in ("## Which cells are complete", "## Regime paper", "## Regime few labels", "## Regime seeds only",
                    "## Regime noisy pool", "## Per-source contribution", "### What was reduced",
                    "### Fit cost per replay example", "### Export", "### Hypernet parameters",
                    "### How fit time grows", "Paired difference", "Learning-rate sweeps", "Transfer efficiency"):
        assert heading in md, heading
    assert (quick_run / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = _results(quick_run)
    teacher = results["features"]["teacher"]
    for regime in REGIMES:
        table = results["tables"][regime]
        skipped = results["skipped"].get(regime, {})
        for method in methods_for(regime, QUICK):
            if method in TEACHER_METHODS and not teacher:
                assert "not available" in skipped[method]
                assert method not in table
                continue
            row = table[method]
            assert row["n_seeds"] == (1 if method in DETERMINISTIC else len(QUICK.seeds)), (regime, method)
            assert set(row["mean"]) == {*QUICK.tasks, "avg"}
            assert all(0.0 <= v <= 100.0 for v in row["mean"].values())
            if method not in (*DETERMINISTIC, "dare_ties"):
                sweep = QUICK.sft_lrs if method.startswith("sft") else QUICK.fusion_lrs
                assert row["lr"] in sweep
                if method in CONTROLLED_BY:  # the quick grid borrows the controlled method's lr
                    assert row["lr"] == table[CONTROLLED_BY[method]]["lr"] and not row["sweep"]
                else:
                    assert len(row["sweep"]) == len(sweep)
        assert set(results["cells"][regime].values()) <= {"complete", *(f"skipped: {r}" for r in skipped.values())}
        paired = results["paired"][regime]
        assert paired["primary"] == ("hf_teacher" if teacher and regime != "paper" else "hf")
        assert "sft" in paired["vs"] and paired["vs"]["sft"]["n"] == len(QUICK.seeds)
    loso = results["loso"]
    assert loso["regime"] == QUICK.loso_regime and set(loso["per_source"]) == set(QUICK.tasks[1:])
    # The fusion report's per-source ablation (held-out dev rows) is read for every source left out.
    assert all(v["ablation"] is not None and v["task_ablation"] is not None for v in loso["per_source"].values())
    perf = results["perf"]
    assert all(r["ratio_to_sft"] > 0 for r in perf["fit_vs_sft"])
    assert not any("FAILED" in r["label"] for r in perf["export"]), [r["label"] for r in perf["export"]]
    ours = next(r for r in perf["export"] if r["label"].startswith("HeteroFusion"))
    assert ours["side_files_seconds"] > 0  # the patched side-file writer is the one the planner calls
    assert "note" not in perf["teacher"], perf["teacher"]
    assert perf["teacher"]["prompts"] == len(QUICK.tasks) * QUICK.n_replay and perf["teacher"]["speedup"] > 0
    assert len(results["experts"]) == len(QUICK.tasks) + len(QUICK.noise)


@pytest.mark.integration
def test_fusion_records_carry_the_report_fields(quick_run):
    results = _results(quick_run)
    runs = results["runs"]["few_labels"]
    plain = runs["hf"]["seeds"]["0"]
    assert plain["steps"] == results["steps"] and plain["fit_seconds"] > 0 and plain["replay_examples"] > 0
    assert plain["final_loss"] is not None and plain["first_loss"] is not None
    assert len(plain["source_contribution"]) == len(plain["ablation"]) == len(QUICK.tasks) - 1
    assert "teacher" not in plain  # no teacher stage ran
    if results["features"]["teacher"]:
        taught = runs["hf_teacher"]["seeds"]["0"]
        assert taught["teacher"]["mode"] == "sources" and taught["teacher"]["rows"] > 0
        assert runs["hf_teacher_placebo"]["seeds"]["0"]["teacher"]["mode"] == "placebo"


@pytest.mark.integration
def test_rerun_computes_nothing_and_reads_the_same_records(quick_run):
    from benchmarks.suite import run_suite

    before = _results(quick_run)
    results = run_suite(grid_name="quick", out=quick_run, threads=1, perf=False)
    assert all(e["cached"] for e in results["experts"])
    records = [r for entries in results["runs"].values() for e in entries.values() for r in e["seeds"].values()]
    assert records and all(r["cached"] for r in records)
    assert results["tables"]["few_labels"]["hf"]["mean"] == before["tables"]["few_labels"]["hf"]["mean"]


@pytest.mark.integration
def test_cached_only_computes_nothing_and_reports_a_missing_run_incomplete(quick_run, tmp_path):
    from benchmarks.suite import run_suite

    cache = quick_run / "cache"
    before = _results(quick_run)
    seed1 = next(p for p in (cache / "runs").glob("*.json")
                 if json.loads(p.read_text(encoding="utf-8"))["what"].startswith("few_labels / hf / ")
                 and json.loads(p.read_text(encoding="utf-8"))["what"].endswith("/ seed 1"))
    hidden = tmp_path / seed1.name
    seed1.rename(hidden)  # the run cache now lacks one run: HeteroFusion's second seed
    try:
        results = run_suite(grid_name="quick", out=tmp_path / "out", cache=cache, threads=1, perf=False,
                            cached_only=True)
    finally:
        hidden.rename(seed1)
    assert not seed1.with_suffix(".tmp").exists() and len(list((cache / "runs").glob("*.json"))) > 1
    records = [r for entries in results["runs"].values() for e in entries.values() for r in e["seeds"].values()]
    assert records and all(r["cached"] for r in records)
    # few_labels and seeds_only share the no-teacher fusion runs, so both lose that seed.
    for regime in ("few_labels", "seeds_only"):
        assert results["cells"][regime]["hf"] == f"1/{len(QUICK.seeds)} seeds"
        assert results["cells"][regime]["sft"] == "complete"
    assert results["cells"]["paper"] == before["cells"]["paper"]
    assert results["tables"]["paper"]["hf"]["mean"] == before["tables"]["paper"]["hf"]["mean"]


@pytest.mark.integration
def test_report_only_snapshot_rewrites_the_chart_link(quick_run, tmp_path):
    from benchmarks.__main__ import main

    assert main(["--report-only", "--out", str(quick_run), "--snapshot", str(tmp_path)]) == 0
    md = (tmp_path / "benchmark_results.md").read_text(encoding="utf-8")
    assert "(benchmark_results.png)" in md and "(results.png)" not in md
    assert (tmp_path / "benchmark_results.png").is_file()


# ------------------------------------------------------------------------------------------------- regimes


def test_splits_are_disjoint_and_keep_the_v1_rows():
    from hf_heterofusion.examples import synthetic

    splits = make_splits(REDUCED)
    for s in splits.values():
        prompts = [[r["prompt"] for r in rows] for rows in (s.train, s.replay, s.test, s.dev, s.pool)]
        assert sum(map(len, prompts)) == len(set().union(*map(set, prompts)))
        assert (len(s.dev), len(s.pool)) == (REDUCED.n_dev, REDUCED.n_prompts)
        v1 = synthetic.make_splits(s.task, REDUCED.split_seed, REDUCED.n_train, REDUCED.n_replay, REDUCED.n_test)
        assert (s.train, s.replay, s.test) == v1  # cached experts and v1 numbers stay comparable


def test_regimes_label_what_the_grid_says(tmp_path):
    splits = make_splits(QUICK)
    anchor, sources = QUICK.tasks[0], QUICK.tasks[1:]
    paper = labelled_rows(QUICK, splits, "paper")
    assert len(paper) == len(QUICK.tasks) * QUICK.n_replay
    few = labelled_rows(QUICK, splits, "few_labels")
    count = {t: sum(r["task"] == t for r in few) for t in QUICK.tasks}
    assert count[anchor] == QUICK.n_replay and all(count[t] == QUICK.n_labels for t in sources)
    built = {name: build_regime(QUICK, splits, name, tmp_path) for name in REGIMES}
    assert not built["paper"].prompts and not built["paper"].teaches
    assert built["noisy"].pool == "noisy" and built["few_labels"].pool == "single"
    for t in sources:
        rows = [json.loads(line) for line in built["few_labels"].prompts[t].read_text().splitlines()]
        assert [r["prompt"] for r in rows] == [r["prompt"] for r in splits[t].pool]
        assert all("response" not in r for r in rows)
        seeds = [json.loads(line)["prompt"] for line in built["seeds_only"].prompts[t].read_text().splitlines()]
        assert seeds == [r["prompt"] for r in splits[t].replay[:QUICK.n_labels]]
    assert built["seeds_only"].synthesize == QUICK.n_synth and built["few_labels"].synthesize == 0
    # Same labelled rows, so runs without a teacher can be shared; the prompts make the teacher runs differ.
    assert built["few_labels"].rows_fingerprint == built["seeds_only"].rows_fingerprint
    assert built["few_labels"].fingerprint != built["seeds_only"].fingerprint


def test_seeds_card_shows_each_answer_kind_a_task_has():
    """A model card's examples show the cases of a skill; the random draw of `seeds_only` may show one."""
    grid = REDUCED.with_(n_labels=4)
    splits = make_splits(grid)
    for t in grid.tasks[1:]:
        replay = splits[t].replay
        card = seed_rows(replay, t, "seeds_card", grid)
        assert len(card) == 4 and all(r in replay for r in card)
        kinds = {r["response"] if r["response"] == "none" or t in ("sentiment", "entity_typing") else "found"
                 for r in replay}
        shown = {r["response"] if r["response"] == "none" or t in ("sentiment", "entity_typing") else "found"
                 for r in card}
        assert shown == kinds or len(shown) == 4, (t, shown, kinds)
    lives_in = [r["response"] for r in seed_rows(splits["relation_lives_in"].replay, "relation_lives_in",
                                                  "seeds_only", grid)]
    assert lives_in == ["none"] * 4  # the draw the v3/v4 seeds-only rows were measured on


def test_seeds_only_draws_again_per_k_and_draw_0_is_its_own(tmp_path):
    grid = REDUCED.with_(n_labels=4)
    splits = make_splits(grid)
    t = "relation_lives_in"
    replay, train = splits[t].replay, splits[t].train
    assert seed_rows(replay, t, "seeds_only@0", grid, train) == seed_rows(replay, t, "seeds_only", grid)
    draws = [seed_rows(replay, t, f"seeds_only@{k}", grid, train) for k in (1, 2, 3)]
    assert draws[0] == seed_rows(replay, t, "seeds_only@1", grid, train)  # seeded
    assert all(len(d) == 4 and all(r in replay or r in train for r in d) for d in draws)
    assert len({tuple(r["prompt"] for r in d) for d in draws}) == 3
    assert any(r["response"] != "none" for d in draws for r in d)  # the all-`none` draw is the rare one
    built = build_regime(grid, splits, "seeds_only@1", tmp_path)
    assert built.teaches and built.synthesize == grid.n_synth
    assert built.fingerprint != build_regime(grid, splits, "seeds_only", tmp_path).fingerprint
    assert build_regime(grid, splits, "seeds_only@0", tmp_path).fingerprint == \
        build_regime(grid, splits, "seeds_only", tmp_path).fingerprint  # so its runs are shared
    for bad in ("seeds_card@1", "seeds_only@x"):
        with pytest.raises(ValueError, match="seeds_only@K"):
            build_regime(grid, splits, bad, tmp_path)


def test_seeds_phrasings_show_each_phrasing_of_a_relation_once_and_card_seeds_elsewhere():
    from benchmarks.phrasings import patterns, phrasing_of
    from hf_heterofusion.examples.synthetic import PHRASINGS

    grid = REDUCED.with_(n_labels=4)
    splits = make_splits(grid)
    for t in grid.tasks[1:]:
        rows = seed_rows(splits[t].replay, t, "seeds_phrasings", grid, splits[t].train)
        if t not in PHRASINGS:
            assert rows == seed_rows(splits[t].replay, t, "seeds_card", grid)
            continue
        positive, negative = PHRASINGS[t]
        assert [phrasing_of(r["prompt"], patterns(t)) for r in rows] == [*positive, *negative]
        assert all(r in splits[t].replay or r in splits[t].train for r in rows)
        assert not {r["prompt"] for r in rows} & {r["prompt"] for r in splits[t].test}


def test_methods_per_regime():
    assert "hf_teacher" not in methods_for("paper", REDUCED) and "hf_improved" in methods_for("paper", FULL)
    assert "hf_improved" not in methods_for("paper", REDUCED)  # the reduced grid spends those runs elsewhere
    for regime in ("few_labels", "seeds_only", "noisy"):
        methods = methods_for(regime, REDUCED)
        assert {"anchor", "task_arithmetic", "ties", "dare_ties", "sft", "sft_teacher", "hf", "hf_teacher",
                "hf_teacher_placebo", "hf_placebo", "sft_teacher_bal", "hf_teacher_bal",
                "hf_teacher_placebo_bal"} <= set(methods)
        assert set(DISTILL) <= set(methods)  # the full and reduced grids run every switch in every teacher regime
    # The quick grid runs the switches where they all act (synthesis and labels): seeds_only; the core teacher
    # methods everywhere.
    assert set(DISTILL) <= set(methods_for("seeds_only", QUICK))
    for regime in ("few_labels", "noisy"):
        methods = set(methods_for(regime, QUICK))
        assert not set(DISTILL) & methods and {"sft_teacher_bal", "hf_teacher", "hf_teacher_placebo_bal"} <= methods


ALL_FEATURES = Features(teacher=True, lora_trainer=True, warmup_start=False)


def test_features_are_read_from_the_config_fields():
    # The benchmark ships with the library: every feature it can switch on exists in this checkout.
    assert features.detect() == Features(teacher=True, lora_trainer=True, warmup_start=True, distill=True)
    assert "sources" in features._choices("teacher") and "lora" in features._choices("trainer")
    assert features._choices("no_such_key") == ()


def test_constraints_file_is_the_repository_lock():
    assert models._constraints_file() == Path(__file__).resolve().parents[2] / "constraints.txt"


def _fake_bench(tmp_path, features=ALL_FEATURES):
    grid = QUICK
    bench = Bench(grid, tmp_path, tmp_path / "cache", features=features)
    bench.splits = make_splits(grid)
    bench.target_dir, bench.source_dir, bench.anchor = tmp_path / "t", tmp_path / "s", tmp_path / "a"
    bench.task_experts = {t: tmp_path / f"e_{t}" for t in grid.tasks[1:]}
    bench.noise_experts = {n: tmp_path / f"n_{i}" for i, n in enumerate(grid.noise)}
    bench.regimes = {name: build_regime(grid, bench.splits, name, tmp_path) for name in REGIMES}
    return bench


def test_one_config_for_every_trained_method(tmp_path):
    bench = _fake_bench(tmp_path)
    few = bench.regimes["few_labels"]
    n = steps(QUICK)
    for method in ("sft", "hf", "hf_teacher", "hf_teacher_placebo", "sft_teacher"):
        cfg = fusion_config(bench, few, 1, 1e-3, method=method)
        assert (cfg.max_steps, cfg.lr, cfg.seed, cfg.warmup_ratio) == (n, 1e-3, 1, 0.0)
        assert cfg.gradient_accumulation_steps == QUICK.accumulation and cfg.batch_size == 1
        assert (cfg.teacher == "sources") == (method in TEACHER_METHODS)
        assert cfg.teacher_placebo == (method == "hf_teacher_placebo")
        assert (cfg.trainer == "lora") == method.startswith("sft")
    # a method's name means one run whatever `teacher: sources` defaults to: clipping only where a method says so
    assert fusion_config(bench, few, 0, 1e-3, method="sft_teacher_bal").max_grad_norm is None
    assert fusion_config(bench, few, 0, 1e-3, method="sft_clip_bal").max_grad_norm == 1.0
    cfg = fusion_config(bench, few, 0, 1e-3, method="hf_teacher")
    assert [s.name for s in cfg.sources] == list(QUICK.tasks[1:])
    assert all(s.base_model == str(bench.source_dir) and Path(s.prompts).is_file() for s in cfg.sources)
    noisy = fusion_config(bench, bench.regimes["noisy"], 0, 1e-3, method="hf")
    assert len(noisy.sources) == len(QUICK.tasks) - 1 + len(QUICK.noise)
    minus = fusion_config(bench, few, 0, 1e-3, method="hf", drop_source=QUICK.tasks[1])
    assert len(minus.sources) == len(QUICK.tasks) - 2


def test_run_keys_share_what_reads_the_same_data(tmp_path):
    bench = _fake_bench(tmp_path)
    r = bench.regimes
    key = lambda regime, method, lr=1e-3, seed=0: run_key(bench, r[regime], method, lr, seed)  # noqa: E731
    assert key("few_labels", "sft") == key("seeds_only", "sft") == key("noisy", "sft") != key("paper", "sft")
    assert key("few_labels", "hf") == key("seeds_only", "hf") != key("noisy", "hf")
    assert key("few_labels", "hf_teacher") != key("seeds_only", "hf_teacher")
    assert key("paper", "anchor", None) == key("noisy", "anchor", None)
    assert key("paper", "ties", None) == key("few_labels", "ties", None) != key("noisy", "ties", None)
    assert key("few_labels", "hf", 1e-3) != key("few_labels", "hf", 5e-5) != key("few_labels", "hf", 5e-5, 1)
    later = _fake_bench(tmp_path, Features(teacher=True, lora_trainer=False, warmup_start=False))
    assert run_key(later, r["few_labels"], "sft", 1e-3, 0) != key("few_labels", "sft")  # another trainer
    assert run_key(later, r["few_labels"], "hf", 1e-3, 0) == key("few_labels", "hf")


# ------------------------------------------------------------------------------------------------ statistics


def test_choose_lr_takes_the_best_dev_score_and_the_smaller_lr_on_ties():
    sweep = {"a": {"lr": 1e-3, "dev_avg": 50.0}, "b": {"lr": 3e-4, "dev_avg": 50.0}, "c": {"lr": 3e-3, "dev_avg": 49}}
    assert choose_lr(sweep) == 3e-4
    sweep["c"]["dev_avg"] = 60.0
    assert choose_lr(sweep) == 3e-3


def test_sweep_extends_past_an_edge_only_when_the_edge_wins():
    def sweep(*pairs):
        return {f"{lr:g}": {"lr": lr, "dev_avg": d} for lr, d in pairs}

    assert next_lr(sweep((1e-4, 10), (1e-3, 20), (1e-2, 30))) == pytest.approx(1e-1)
    assert next_lr(sweep((1e-4, 30), (1e-3, 20), (1e-2, 10))) == pytest.approx(1e-5)
    assert next_lr(sweep((1e-4, 10), (1e-3, 30), (1e-2, 20))) is None  # interior optimum
    assert next_lr(sweep((1e-4, 0), (1e-3, 0))) is None  # a flat sweep says nothing about beyond


def test_paired_interval_is_a_t_interval():
    d = stats.paired_interval([1.0, 2.0, 3.0])
    half = 4.303 * 1.0 / math.sqrt(3)
    assert d["mean"] == pytest.approx(2.0) and d["low"] == pytest.approx(2 - half) and d["high"] == pytest.approx(2 + half)
    assert stats.paired_interval([5.0])["low"] is None


def test_paired_table_pairs_by_seed_and_uses_one_run_methods_as_constants():
    def rec(avg):
        return {"avg": avg}

    entries = {"hf_teacher": {"seeds": {"0": rec(50), "1": rec(60), "2": rec(70)}},
               "sft": {"seeds": {"0": rec(40), "1": rec(40), "2": rec(50)}},
               "anchor": {"seeds": {"0": rec(10)}}}
    table = stats.paired_table(entries, "hf_teacher")
    assert table["sft"]["mean"] == pytest.approx((10 + 20 + 20) / 3)
    assert table["anchor"]["mean"] == pytest.approx(50) and table["anchor"]["n"] == 3


def test_spearman_and_ranks():
    assert stats.ranks([3.0, 1.0, 2.0, 1.0]) == [4.0, 1.5, 3.0, 1.5]
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert stats.spearman([1, 1, 1], [1, 2, 3]) is None


def test_summary_gives_efficiency_and_retention():
    tasks = ("a", "b", "c")
    entries = {"hf": {"lr": 1e-3, "seeds": {"0": {"scores": {"a": 90, "b": 40, "c": 80}, "avg": 70},
                                            "1": {"scores": {"a": 100, "b": 60, "c": 80}, "avg": 80}}}}
    row = stats.summarise_regime(entries, tasks, {"a": 100.0, "b": 80.0, "c": 80.0})["hf"]
    assert row["retention"]["mean"] == pytest.approx(95.0)
    assert row["efficiency"]["b"]["mean"] == pytest.approx(62.5) and row["efficiency"]["c"]["mean"] == 100.0
    assert row["std"]["avg"] == pytest.approx(math.sqrt(50))


REPORT_ABLATION = {"loss_without": {"t1": 2.0, "t2": 3.0}, "delta_loss": {"t1": 0.1, "t2": 0.5},
                   "mean_delta_loss": 0.3}


@pytest.mark.parametrize("value,task,expected", [
    (REPORT_ABLATION, None, 0.3), (REPORT_ABLATION, "t2", 0.5), (REPORT_ABLATION, "t9", None),
    ({"delta_loss": {"t1": 0.1, "t2": 0.3}}, None, 0.2), (0.25, None, 0.25), ({"delta": 0.5, "loss": 3.0}, None, 0.5),
    (None, None, None), ("n/a", None, None), (True, None, None), ({"loss_without": {"t1": 2.0}}, None, None),
])
def test_ablation_value_reads_the_report_defensively(value, task, expected):
    got = ablation_value(value, task)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_loso_agreement_ranks_sources():
    per = {f"s{i}": {"drop": d, "task_drop": d, "ablation": a, "task_ablation": -a} for i, (d, a) in
           enumerate([(5.0, 0.5), (1.0, 0.1), (3.0, 0.2)])}
    agree = stats.loso_agreement({"per_source": per})
    assert agree["spearman_drop_vs_ablation"] == pytest.approx(1.0)
    assert agree["spearman_task_drop_vs_task_ablation"] == pytest.approx(-1.0)
    assert "spearman_drop_vs_ablation" not in stats.loso_agreement(
        {"per_source": {k: dict(v, ablation=None, task_ablation=None) for k, v in per.items()}})


# ------------------------------------------------------------------------------------------------ baselines


def test_fit_rows_crops_and_pads():
    x = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(baselines.fit_rows(x, 2), x[:2])
    padded = baselines.fit_rows(x, 5)
    assert padded.shape == (5, 2) and torch.equal(padded[:3], x) and not padded[3:].any()


def _unit(d_out=6, d_in=4, r=2, n_sources=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sources = tuple((torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g), 0.5 + i)
                    for i in range(n_sources))
    return baselines.AlignedUnit("w", None, torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g),
                                 2.0, sources)


def test_naive_adds_factors_and_task_arithmetic_sums_deltas():
    unit = _unit()
    a = unit.A + sum(s[0] for s in unit.sources)
    b = unit.B + sum(s[1] * s[2] / unit.scale for s in unit.sources)
    assert torch.allclose(baselines.merged_delta(unit, "naive", density=1.0), unit.scale * b @ a)
    total = unit.scale * unit.B @ unit.A + sum(s * bb @ aa for aa, bb, s in unit.sources)
    ta = baselines.merged_delta(unit, "task_arithmetic", density=1.0)
    assert torch.allclose(ta, total, atol=1e-5)
    ties = baselines.merged_delta(unit, "ties", density=0.5)
    assert ties.shape == total.shape and not torch.allclose(ties, total)


def test_unit_without_sources_keeps_the_anchor_delta():
    unit = _unit(n_sources=0)
    anchor = unit.scale * unit.B @ unit.A
    for method in ("naive", "task_arithmetic"):
        assert torch.allclose(baselines.merged_delta(unit, method, density=1.0), anchor, atol=1e-6)


def test_placebo_keeps_shapes_and_scale_but_not_content(tmp_path, fixture_zoo):
    src = fixture_zoo.adapter("qwen2", r=4, seed=3)
    placebo = baselines.make_placebo(src, tmp_path / "placebo", seed=0)
    real, fake = load_file(src / "adapter_model.safetensors"), load_file(placebo / "adapter_model.safetensors")
    assert real.keys() == fake.keys()
    for key in real:
        assert real[key].shape == fake[key].shape
        assert not torch.equal(real[key], fake[key])
        assert fake[key].std() == pytest.approx(real[key].std(), rel=0.5)
    assert json.loads((placebo / "adapter_config.json").read_text()) == json.loads(
        (src / "adapter_config.json").read_text())


def test_align_units_pairs_tail_layers_by_role(fixture_zoo):
    from hf_heterofusion.method.adapters import load_adapter

    target = load_adapter(fixture_zoo.adapter("llama", r=4, seed=0))
    source = load_adapter(fixture_zoo.adapter("qwen2", r=4, seed=1))
    units = baselines.align_units(target, [source])
    assert len(units) == len(target.modules)
    offset = target.num_layers - source.num_layers
    by_weight = {u.weight: u for u in units}
    for m in target.modules:
        unit = by_weight[m.module.removeprefix("base_model.model.") + ".weight"]
        assert len(unit.sources) == (1 if m.layer >= offset else 0)
        for a, b, _ in unit.sources:
            assert a.shape == m.A.shape and b.shape == m.B.shape


def test_teacher_row_stats_flag_made_up_arguments_and_foreign_prompts(capsys, tmp_path):
    from benchmarks import teacher_rows

    rows = [
        {"source": "ner_location", "prompt": "Locations in: Alice flew to Paris.\n", "response": "location: Paris"},
        {"source": "ner_location", "prompt": "Locations in: 1728 (The world of merchants)\n",
         "response": "location: London"},  # not in the prompt: made up
        {"source": "ner_location", "prompt": "Locations in: 800\n", "response": "none"},
        {"source": "ner_location", "prompt": "Locations in: Bob met Carol.\n", "response": "no idea"},  # unparsable
        {"source": "sentiment", "prompt": "Sentiment of: The soup was awful.\n", "response": "negative"},
    ]
    stats = teacher_rows.row_stats(rows)
    loc = stats["ner_location"]
    assert loc["rows"] == 4 and loc["lexicon"] == 50.0 and loc["none"] == 25.0
    assert loc["grounded"] == pytest.approx(100.0 / 3)
    assert stats["sentiment"] == {"rows": 1, "lexicon": 0.0, "none": 0.0}  # classification: no `grounded`
    works = teacher_rows.row_stats([
        {"source": "relation_works_for", "prompt": "Works-for relations in: Hooli hired Ann.\n",
         "response": "works_for: Ann, Hooli"},
        {"source": "relation_works_for", "prompt": "Works-for relations in: Ann works for Hooli.\n",
         "response": "works_for: Ann, Hooli"},
        {"source": "relation_works_for", "prompt": "Works-for relations in: Ann loves her job at Hooli.\n",
         "response": "works_for: Ann, Hooli"},
        {"source": "relation_works_for", "prompt": "Works-for relations in: He hired a lawyer at Hooli.\n",
         "response": "none"},  # free text in a wording's words: slots are names, so not `{org} hired {person}.`
    ])["relation_works_for"]["phrasings"]
    assert works["{org} hired {person}."] == works["{person} works for {org}."] == 1 and works["other"] == 2
    assert works["{person} joined {org} in {loc}."] == 0 and sum(works.values()) == 4
    path = tmp_path / "teacher_replay.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert teacher_rows.main([str(path)]) == 0
    assert "grounded  33.3 %" in capsys.readouterr().out


def test_phrasings_name_every_generated_relation_prompt_and_count_rows(capsys, tmp_path):
    from benchmarks import phrasings
    from hf_heterofusion.examples.synthetic import NONE_ANSWER, PHRASINGS, get_task, make_splits

    for task, (positive, negative) in PHRASINGS.items():
        table = phrasings.patterns(task)
        _, _, test = make_splits(get_task(task), seed=1, n_train=0, n_replay=0, n_test=80)
        named = [(phrasings.phrasing_of(r["prompt"], table), r["response"]) for r in test]
        assert {n for n, _ in named} == set(positive) | set(negative)  # every phrasing met, none left `other`
        assert all((a == NONE_ANSWER) == (n in negative) for n, a in named)  # a phrasing decides the answer kind
    table = phrasings.patterns("relation_works_for")
    assert phrasings.phrasing_of("Works-for relations in: Bob is employed by Vandelay.\n", table) == "other"
    rows = [{"source": "relation_works_for", "prompt": "Works-for relations in: Stark hired Bob Lee.\n"},
            {"source": "relation_works_for", "prompt": "Works-for relations in: Bob had lunch.\n"},
            {"source": "relation_lives_in", "prompt": "Lives-in relations in: Ann lives in Rome.\n"}]
    path = tmp_path / "teacher_replay.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert phrasings.main(["--task", "relation_works_for", "--rows", str(path)]) == 0
    assert "'{org} hired {person}.' 1, 'other' 1" in capsys.readouterr().out
