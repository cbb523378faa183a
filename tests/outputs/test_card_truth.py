# SPDX-License-Identifier: Apache-2.0
"""The card says what ran, from real tiny fits: `trainer: lora` is described as data-only LoRA SFT (no transfer
nets, no source weights, A trained), a teacher run names the source bases it used, and the teacher's outcome is
worded from its counts (including the run where no answer was kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.errors import TeacherKeptLittleWarning
from hf_heterofusion.outputs.card import write_card
from hf_heterofusion.pipeline import fit


pytestmark = pytest.mark.integration

TINY = dict(block_size="auto", embed_dim=32, num_heads=4, max_position_embeddings=32, num_projections=16, epochs=1,
            gradient_accumulation_steps=2, lr=1e-3, max_steps=2, checkpoint_every=0, seed=0)
NETS_CLAIMS = ("Only the transfer networks", "target-basis preservation", "Transfer networks per module role",
               "Contribution", "never their base models", "## Fusion method")


def _card(tmp_path: Path, report) -> str:
    out = tmp_path / "out"
    out.mkdir(parents=True)
    (out / "fusion_report.json").write_text(report.dumps(), encoding="utf-8")
    return write_card(out).read_text(encoding="utf-8")


def test_lora_trainer_card_describes_anchor_sft_not_transfer_nets(make_config, tmp_path):
    cfg = make_config(trainer="lora", max_steps=2)
    result = fit(cfg, show_progress=False)
    anchor = load_file(Path(cfg.target_adapter) / "adapter_model.safetensors")
    a_keys = [k for k in anchor if ".lora_A." in k]
    assert any(not result.tensors[k].equal(anchor[k]) for k in a_keys)  # the anchor's A really changed
    report = result.report
    assert report.config["trainer"] == "lora"
    # No nets were built: the report records no net sizes, scales or attention shares (not zeros).
    assert report.roles == {} and report.hypernet_parameters_total is None
    assert all(s.contribution is None for s in report.sources)

    text = _card(tmp_path, report)
    for claim in NETS_CLAIMS:
        assert claim not in text, claim
    assert "the anchor adapter's own factors, A and B, were trained directly on the replay rows" in text
    assert "(`trainer: lora`, data-only LoRA SFT)" in text
    assert "no weight of the 2 source expert(s) listed below entered the adapter" in text
    assert "the target's basis is not preserved" in text
    assert "- **Trainer:** `lora`: the anchor adapter's own factors (A and B)" in text
    assert not (tmp_path / "out" / "alignment.png").exists()  # no alignment was used: none is pictured


def test_transfer_nets_card_keeps_the_method_description(make_config, tmp_path):
    text = _card(tmp_path, fit(make_config(max_steps=1), show_progress=False).report)
    assert "keeping the target's `A` (target-basis preservation)" in text
    assert "needs only the source adapters' tensors, never their base models" in text
    assert "- **Trainer:** `transfer_nets`" in text and "| Contribution |" in text


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Colour of thing {i}:"}) + "\n" for i in range(4)))
    return path


def _teacher_config(fixture_zoo, replay_file, prompts_file, **overrides) -> FusionConfig:
    source = {"adapter": str(fixture_zoo.adapter("qwen2", r=4, seed=10)), "base_model": str(fixture_zoo.model("qwen2")),
              "name": "qwen", "prompts": str(prompts_file)}
    return FusionConfig.from_mapping(dict(
        TINY, target_model=str(fixture_zoo.model("llama")), target_adapter=str(fixture_zoo.adapter("llama")),
        sources=[source], replay=str(replay_file), teacher="sources", teacher_max_new_tokens=4, teacher_batch_size=4,
        **{"trainer": "transfer_nets", "replay_balance": "none", **overrides}))


def test_teacher_card_names_the_bases_it_loaded_and_the_kept_count(fixture_zoo, replay_file, prompts_file, tmp_path):
    cfg = _teacher_config(fixture_zoo, replay_file, prompts_file, teacher_drop_truncated=False)
    report = fit(cfg, show_progress=False).report
    counts = report.teacher["sources"][0]
    assert counts["kept"] > 0

    text = _card(tmp_path, report)
    base = Path(cfg.sources[0].base_model)
    assert "never their base models" not in text
    assert (f"Source base models used to label prompts (teacher stage): `{base.name}` (local) with the adapter of "
            f"source `qwen`") in text
    assert f"{counts['kept']} of {counts['labelled']} labelled answers were kept and joined the replay set" in text


def test_teacher_card_says_so_when_no_answer_was_kept(fixture_zoo, replay_file, prompts_file, tmp_path):
    cfg = _teacher_config(fixture_zoo, replay_file, prompts_file, teacher_min_logprob=0.0)  # no answer is that sure
    with pytest.warns(TeacherKeptLittleWarning, match="kept 0 of"):
        report = fit(cfg, show_progress=False).report
    assert report.teacher["rows"] == 0

    text = _card(tmp_path, report)
    assert "joined the replay set" not in text
    labelled = report.teacher["sources"][0]["labelled"]
    assert (f"No answer was kept (all {labelled} labelled answers were dropped, see the counts below), so the run "
            f"trained on the labelled replay rows only.") in text



def test_card_states_the_distillation_and_the_selected_step(fixture_zoo, replay_file, prompts_file, tmp_path):
    """Every switch that changed the training shows on the card with what it did: the teachers' token signal and
    the anchor rows distilled (counted), and under `max_steps: auto` the kept step and the curve."""
    cfg = _teacher_config(fixture_zoo, replay_file, prompts_file, teacher_drop_truncated=False, trainer="lora",
                          teacher_kd_weight=1.0, teacher_token_weighting="skill", anchor_kd_weight=1.0,
                          max_steps="auto", epochs=2)
    report = fit(cfg, show_progress=False).report
    signals, budget = report.training.signals, report.training.budget
    assert 0 < signals["teacher_rows"] <= report.teacher["rows"]  # one may be in the held-out slice
    assert signals["anchor_rows"] > 0  # the replay's untagged rows are the anchor's task
    text = _card(tmp_path, report)
    assert (f"{signals['teacher_rows']} teacher rows carry the teachers' token signal ({signals['exact']} of "
            f"{signals['teacher_tokens']} answer tokens aligned exactly") in text
    assert f"{signals['anchor_rows']} anchor-task rows distilled" in text
    assert f"kept the adapter of step {budget['chosen_step']} of {budget['total_steps']}" in text
    assert "(of the last step; the adapter is step" in text and "\n- **Time:**" in text


def test_card_shows_a_loss_that_ended_far_above_its_best_stretch(make_config, tmp_path):
    """A blown-up fit (benchmark v10, seed 7: ~0.2 for a stretch, then ~9 and never back) is named on the card; a
    healthy curve gets the same two means and no alarm; under 10 steps the card says nothing more than before."""
    import dataclasses

    from hf_heterofusion.outputs.report import loss_stretches

    report = fit(make_config(trainer="lora", max_steps=2), show_progress=False).report
    assert report.training.loss_stretch is None and "consecutive steps" not in _card(tmp_path / "short", report)

    def card_for(values: list[float], where: str) -> str:
        losses = tuple({"step": i + 1, "loss": v} for i, v in enumerate(values))
        training = dataclasses.replace(report.training, losses=losses, final_loss=values[-1],
                                       loss_stretch=loss_stretches(losses))
        return _card(tmp_path / where, dataclasses.replace(report, training=training))

    healthy = [2.0 / (1 + i) for i in range(20)]
    assert loss_stretches([{"step": i + 1, "loss": v} for i, v in enumerate(healthy)])["lowest_from"] == 19
    text = card_for(healthy, "healthy")
    assert "lowest mean of 2 consecutive steps 0.1026 (steps 19-20)" in text and "blew up" not in text
    text = card_for([0.2] * 10 + [9.0] * 10, "blown")
    assert "mean of the last 2 steps 9" in text and "lowest mean of 2 consecutive steps 0.2 (steps 1-2)" in text
    assert "a sign the fit blew up (try `max_grad_norm: 1.0` or a lower `lr`)" in text


def test_a_fit_whose_loss_blew_up_says_so_on_stderr_too(make_config, monkeypatch):
    """A diverged fit still writes an adapter, so the pipeline warns as well as the card. The tiny fixtures never get
    a loss low enough to blow up from (it hovers near 5.8 at any lr), so a real fit's loss record is replaced by v10's
    seed-7 shape; the hint names clipping only where it is off. A NaN ending counts as blown up (it compares false to
    any threshold), and a NaN stretch is never the lowest."""
    import dataclasses

    import hf_heterofusion.pipeline as pipeline
    from hf_heterofusion.errors import LossBlewUpWarning
    from hf_heterofusion.outputs.report import loss_stretches

    real_train = pipeline.train

    def blown_up(*args, **kwargs):
        result = real_train(*args, **kwargs)
        curve = [0.2] * 10 + [9.0] * 10
        return dataclasses.replace(result, losses=tuple({"step": i + 1, "loss": v} for i, v in enumerate(curve)))

    monkeypatch.setattr(pipeline, "train", blown_up)
    with pytest.warns(LossBlewUpWarning, match=r"ended at 9 \(mean of the last 2 steps\), far above its lowest "
                                               r"stretch \(0.2, steps 1-2\): the fit likely blew up; set "
                                               r"`max_grad_norm: 1.0` or lower `lr` and run again"):
        report = fit(make_config(trainer="lora", max_steps=2), show_progress=False).report
    assert report.training.loss_stretch["blew_up"]
    with pytest.warns(LossBlewUpWarning, match=r"blew up; lower `lr` and run again"):
        fit(make_config(trainer="lora", max_steps=2, max_grad_norm=1.0), show_progress=False)
    monkeypatch.setattr(pipeline, "train", real_train)
    fit(make_config(trainer="lora", max_steps=20, epochs=20, lr=1.0), show_progress=False)  # no warning: an error here
    nan_end = [{"step": i + 1, "loss": v} for i, v in enumerate([1.0] * 18 + [float("nan")] * 2)]
    assert loss_stretches(nan_end)["blew_up"] and loss_stretches(nan_end)["lowest"] == 1.0
