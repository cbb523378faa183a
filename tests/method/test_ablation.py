# SPDX-License-Identifier: Apache-2.0
"""The per-source ablation in the report: masking a source changes the loss only through that source."""

import pytest

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.pipeline import fit


pytestmark = pytest.mark.integration


def test_report_gives_each_source_a_causal_effect_per_task(make_config):
    report = fit(make_config(max_steps=3), show_progress=False).report
    ablation = report.ablation
    assert ablation["rows"] == "training (in-sample)" and ablation["rows_per_task"] == {"all": 8}
    assert set(ablation["loss_all_sources"]) == set(ablation["loss_anchor_alone"]) == {"all"}
    effects = [s.ablation for s in report.sources]
    assert len(effects) == 2 and all(set(e["delta_loss"]) == {"all"} for e in effects)
    assert any(e["delta_loss"]["all"] != 0 for e in effects), "a trained fusion must depend on some source"


def test_a_source_of_weight_zero_has_exactly_no_effect(make_config):
    cfg = make_config(max_steps=3)
    data = cfg.model_dump(mode="json")
    data["sources"][1]["weight"] = 0.0
    report = fit(FusionConfig.model_validate(data), show_progress=False).report
    assert report.sources[1].ablation["delta_loss"] == {"all": 0.0}
    assert report.sources[0].ablation is None  # masking it would leave no source at all


def test_held_out_rows_are_used_when_given(make_config):
    from hf_heterofusion.data.replay import ReplayExample

    rows = [ReplayExample(f"Q{i}:", f" a{i}", task="t1" if i % 2 else "t2") for i in range(6)]
    report = fit(make_config(max_steps=2), show_progress=False, held_out=rows).report
    assert report.ablation["rows"] == "held-out"
    assert report.ablation["rows_per_task"] == {"t1": 3, "t2": 3}


@pytest.mark.filterwarnings("ignore")
def test_one_source_reports_no_masked_effect(make_config):
    report = fit(make_config(("qwen2",), max_steps=2), show_progress=False).report
    assert report.sources[0].ablation is None and report.ablation["loss_all_sources"]
