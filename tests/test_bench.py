# SPDX-License-Identifier: Apache-2.0
"""The benchmark: the `--quick` run writes results.{md,json,png} end to end and resumes from its caches; the
weight-space baselines compute what they claim (crop/pad, factor addition, mergekit Task Arithmetic = delta sum)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_heterofusion.bench import baselines
from hf_heterofusion.bench.grid import GRIDS, QUICK
from hf_heterofusion.bench.run import METHODS, SETTINGS, plan


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from hf_heterofusion.bench.__main__ import main

    out = tmp_path_factory.mktemp("bench") / "results"
    assert main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    return out


def test_quick_run_writes_all_outputs(quick_run):
    md = (quick_run / "results.md").read_text(encoding="utf-8")
    assert md.startswith("# HeteroFusion benchmark (`quick` grid)")
    for heading in ("## Setting 1", "## Setting 2", "### What was reduced", "### Fit cost per replay example",
                    "### Export", "### Hypernet parameters", "### How fit time grows"):
        assert heading in md
    assert (quick_run / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = json.loads((quick_run / "results.json").read_text(encoding="utf-8"))
    assert results["grid"]["name"] == "quick"
    for setting in SETTINGS:
        table = results["tables"][setting]
        assert set(table) == set(METHODS), f"{setting}: missing {set(METHODS) - set(table)}"
        for method, row in table.items():
            expected = 1 if method in ("anchor", "naive", "task_arithmetic", "ties") else len(QUICK.seeds)
            assert row["n_seeds"] == expected, method
            assert set(row["mean"]) == {*QUICK.tasks, "avg"}
            assert all(0.0 <= v <= 100.0 for v in row["mean"].values())
    perf = results["perf"]
    assert [r["label"] for r in perf["fit_vs_sft"]][0].startswith("LoRA SFT")
    assert all(r["ratio_to_sft"] > 0 for r in perf["fit_vs_sft"])
    assert not any("FAILED" in r["label"] for r in perf["export"]), [r["label"] for r in perf["export"]]
    assert {p["axis"] for p in perf["scaling"]} == {"sources", "rank", "block size"}
    assert len(results["experts"]) == len(QUICK.tasks) + len(QUICK.noise)


def test_rerun_reuses_experts_and_runs(quick_run):
    from hf_heterofusion.bench.suite import run_suite

    results = run_suite(grid_name="quick", out=quick_run, threads=1, perf=False)
    assert all(e["cached"] for e in results["experts"])
    first = json.loads((quick_run / "runs" / "single" / "hf_faithful" / "seed0.json").read_text())
    assert results["runs"]["single"]["hf_faithful"]["0"] == first["record"]


def test_plan_covers_every_method_setting_and_seed():
    jobs = plan(_FakeBench(GRIDS["reduced"]))
    seeded = {(s, m) for s, m, seed in jobs if seed == 2}
    assert ("shared", "sft") in seeded and ("noisy", "hf_faithful") in seeded and ("single", "placebo") in seeded
    assert ("single", "ties") not in seeded  # deterministic baselines run once
    assert len(jobs) == len(set(jobs))


class _FakeBench:
    def __init__(self, grid):
        self.grid = grid


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
    from hf_heterofusion.adapters import load_adapter

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
