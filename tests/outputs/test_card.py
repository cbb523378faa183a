# SPDX-License-Identifier: Apache-2.0
"""Model card rendering: golden files (from a report the real fit produced), front matter conventions, purity,
sparse reports read through the one parser, and the alignment picture."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.errors import AdapterNotFoundError, LowEnergyWarning
from hf_heterofusion.outputs.card import draw_alignment, render_card, write_card
from hf_heterofusion.outputs.report import FusionReport
from hf_heterofusion.pipeline import fit


GOLDEN_DIR = Path(__file__).resolve().parents[2] / "model_cards"
# Set HF_HETEROFUSION_UPDATE_GOLDEN=1 to rewrite the golden cards after an intended template change.
UPDATE = os.environ.get("HF_HETEROFUSION_UPDATE_GOLDEN") == "1"

SHA_BASE = "0123456789abcdef0123456789abcdef01234567"
SHA_ANCHOR = "89abcdef0123456789abcdef0123456789abcdef"
SHA_QWEN = "fedcba9876543210fedcba9876543210fedcba98"

CONFIG_YAML = """\
merge_method: heterofusion
base_model: meta-llama/Llama-3.2-1B@0123456789abcdef0123456789abcdef01234567+alice/llama-ner-lora@v1
models:
  - model: Qwen/Qwen2.5-0.5B+alice/qwen-re-lora@main
    parameters: {weight: 1.0}
  - model: /home/alice/adapters/mistral-typing
    parameters: {weight: 0.5}
parameters:
  layer_alignment: tail
  seed: 0
"""


EVALUATION = {
    "method": "greedy generation, exact match and token F1 (0-100) against the reference responses",
    "data": "60 of 600 replay rows held out of training (10%, seed 0)",
    "rows": 60,
    "results": {
        "fused": {"all": {"exact_match": 40.0, "f1": 52.5, "rows": 60}, "ner": {"exact_match": 30.0, "f1": 45.25, "rows": 30}},
        "anchor": {"all": {"exact_match": 45.0, "f1": 60.0, "rows": 60}, "ner": {"exact_match": 60.0, "f1": 70.0, "rows": 30}},
    },
}  # fmt: skip


def example_report(output_kind: str = "adapter") -> dict:
    """A fixed report in the pipeline's schema: a Hub target, one Hub source and one local source."""
    return {
        "hf_heterofusion_version": "0.1.0",
        "created": "2026-01-02T03:04:05Z",
        "seed": 0,
        "config": {
            "target_model": "meta-llama/Llama-3.2-1B",
            "target_adapter": "alice/llama-ner-lora",
            "sources": [{"adapter": "alice/qwen-re-lora", "weight": 1.0}],
            "replay": "replay.jsonl",
            "layer_alignment": "tail",
            "transfer_ratio": 1.0,
            "block_size": 4096,
            "embed_dim": 1024,
            "mu_gate": 0.1,
            "alpha_init": 0.3,
            "update_mode": "b_only",
            "lambda_reg": 0.005,
            "training": {"lr": 5e-05, "epochs": 3},
        },
        "config_yaml": CONFIG_YAML,
        "output_kind": output_kind,
        "target": {
            "model": "meta-llama/Llama-3.2-1B", "adapter": "alice/llama-ner-lora", "model_revision": SHA_BASE,
            "adapter_revision": SHA_ANCHOR, "family": "llama", "num_layers": 16, "hidden_size": 2048, "rank": 8,
            "lora_alpha": 16.0, "target_modules": ["q_proj", "v_proj"], "license": "apache-2.0",
        },
        "sources": [
            {
                "adapter": "alice/qwen-re-lora", "revision": SHA_QWEN, "base_model": "Qwen/Qwen2.5-0.5B",
                "family": "qwen2", "num_layers": 24, "hidden_size": 896, "rank": 8, "original_rank": 16,
                "energy_kept": 0.934512, "lora_alpha": 16.0, "target_modules": ["q_proj", "v_proj"], "weight": 1.0,
                "contribution": 0.61234, "license": "apache-2.0",
            },
            {
                "adapter": "/home/alice/adapters/mistral-typing", "revision": None, "base_model": None,
                "family": "mistral", "num_layers": 12, "hidden_size": 1024, "rank": 8, "original_rank": 8,
                "energy_kept": None, "lora_alpha": 8.0, "target_modules": ["q_proj"], "weight": 0.5,
                "contribution": 0.38766, "license": None, "some_future_key": [1, 2],
            },
        ],
        "alignment": {
            "mode": "tail",
            "transfer_ratio": 1.0,
            "per_source": [
                {"source": 0, "pairs": [[t, t + 8] for t in range(16)], "unmatched_target_layers": []},
                {"source": 1, "pairs": [[t, t - 4] for t in range(4, 16)], "unmatched_target_layers": [0, 1, 2, 3]},
            ],
        },
        "modules": {"aligned": 28, "untouched": ["lm_head"]},
        "roles": {
            "v": {"rank": 8, "layers": 16, "target_tokens": 16, "source_tokens": 28, "alpha": 0.31, "gate_sparsity": 0.42,
                  "parameters": 1234567},
            "q": {"rank": 8, "layers": 16, "target_tokens": 32, "source_tokens": 40, "alpha": 0.2987,
                  "gate_sparsity": 0.5, "parameters": 1234567},
        },
        "training": {
            "replay_examples": 600, "truncated": 2, "optimizer_steps": 225, "micro_steps": 1800,
            "losses": [{"step": 1, "loss": 2.5, "ce": 2.4, "rdm": 20.0}, {"step": 2, "loss": 2.1, "ce": 2.0, "rdm": 19.0}],
            "final_loss": 2.1,
        },
        "timings": {"load_s": 1.5, "fit_s": 100.25, "export_s": 2.0},
        "versions": {"hf_heterofusion": "0.1.0", "torch": "2.13.0", "transformers": "5.23.0", "peft": "0.21.2",
                     "mergekit": "0.1.5", "huggingface_hub": "2.4.0"},
        "evaluation": EVALUATION if output_kind == "adapter" else None,
    }  # fmt: skip


def merged_report() -> dict:
    """The merged-model variant, where every input shares one licence (so the card states it)."""
    report = example_report("merged")
    report["sources"][1]["license"] = "apache-2.0"
    return report


def write_output(out_dir: Path, report: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fusion_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return out_dir


def _rounded(value):
    """Trained floats to 2 decimals: the golden card must not depend on the last bits of a CPU's float sums."""
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rounded(v) for v in value)
    return value


@pytest.fixture(scope="module")
def fitted_report(fixture_zoo, replay_file) -> FusionReport:
    """The report of a real two-step fit: a Llama anchor (rank 4), a rank-8 Qwen2 source (re-factored to 4 by SVD)
    and a Mistral source at weight 0.5. Only what names the inputs (Hub ids, pins, licences: a pull would have
    recorded them) and what depends on the machine or the clock (time, versions, timings, trained floats) is set
    here; every other field is what `pipeline.fit` produced."""
    qwen = str(fixture_zoo.adapter("qwen2", r=8, seed=10))
    mistral = str(fixture_zoo.adapter("mistral", seed=11))
    cfg = FusionConfig.from_mapping(dict(
        target_model=str(fixture_zoo.model("llama")), target_adapter=str(fixture_zoo.adapter("llama")),
        sources=[qwen, {"adapter": mistral, "weight": 0.5}], replay=str(replay_file), block_size="auto",
        embed_dim=32, num_heads=4, max_position_embeddings=32, num_projections=16, gradient_accumulation_steps=2,
        lr=1e-3, max_steps=2, checkpoint_every=0, seed=0))
    with pytest.warns(LowEnergyWarning):  # the rank-8 source keeps ~72 % of its energy at rank 4
        report = fit(cfg, show_progress=False).report
    qwen_src, mistral_src = report.sources
    config = dict(report.config, target_model="meta-llama/Llama-3.2-1B", target_adapter="alice/llama-ner-lora",
                  sources=[{"adapter": "alice/qwen-re-lora", "weight": 1.0},
                           {"adapter": "/home/alice/adapters/mistral-typing", "weight": 0.5}],
                  replay="replay.jsonl")
    return dataclasses.replace(
        report,
        created="2026-01-02T03:04:05Z",
        config=config,
        config_yaml=CONFIG_YAML,
        target=dataclasses.replace(report.target, model="meta-llama/Llama-3.2-1B", model_revision=SHA_BASE,
                                   adapter="alice/llama-ner-lora", adapter_revision=SHA_ANCHOR, license="apache-2.0"),
        sources=(
            dataclasses.replace(_rounded_source(qwen_src), adapter="alice/qwen-re-lora", revision=SHA_QWEN,
                                base_model="Qwen/Qwen2.5-0.5B", license="apache-2.0"),
            dataclasses.replace(_rounded_source(mistral_src), adapter="/home/alice/adapters/mistral-typing", base_model=None),
        ),
        roles=_rounded(report.roles),
        ablation=_rounded(report.ablation),
        training=dataclasses.replace(report.training, losses=_rounded(report.training.losses),
                                     final_loss=_rounded(report.training.final_loss)),
        timings={"load_s": 1.5, "fit_s": 100.25, "export_s": 2.0, "ablation_s": 0.5},
        versions={"hf_heterofusion": "0.1.0", "torch": "2.13.0", "transformers": "5.23.0", "peft": "0.21.2",
                  "mergekit": "0.1.5", "huggingface_hub": "2.4.0"},
        evaluation=EVALUATION,
    )


def _rounded_source(source):
    return dataclasses.replace(source, energy_kept=_rounded(source.energy_kept),
                               contribution=_rounded(source.contribution), ablation=_rounded(source.ablation))


@pytest.mark.integration
@pytest.mark.parametrize(("golden", "kind"), [("example_adapter_card.md", "adapter"), ("example_merged_card.md", "merged")])
def test_card_matches_golden_file(tmp_path: Path, fitted_report: FusionReport, golden: str, kind: str) -> None:
    report = dataclasses.replace(fitted_report, output_kind=kind)
    if kind == "merged":  # every input shares one licence, so the card states it; scores only on the adapter card
        report = dataclasses.replace(report, evaluation=None, sources=tuple(
            dataclasses.replace(s, license="apache-2.0") for s in report.sources))
    out = tmp_path / "out"
    out.mkdir()
    (out / "fusion_report.json").write_text(report.dumps(), encoding="utf-8")
    text = render_card(out)
    assert text == render_card(out, report=report)  # the value and its serialisation render alike
    if UPDATE:
        (GOLDEN_DIR / golden).write_text(text, encoding="utf-8")
    assert text == (GOLDEN_DIR / golden).read_text(encoding="utf-8")


def test_card_shows_the_rank_a_source_was_fused_at_and_its_original(fitted_report: FusionReport, tmp_path) -> None:
    """A rank-8 source re-factored to the anchor's rank 4: the card says 4 (8) and the energy the SVD kept, in
    words too when it is low (below 0.8); a source kept whole gets no such sentence."""
    qwen, mistral = fitted_report.sources
    assert (qwen.rank, qwen.original_rank) == (4, 8) and 0 < qwen.energy_kept < 0.8 and mistral.energy_kept == 1
    out = tmp_path / "out"
    out.mkdir()
    text = render_card(out, report=fitted_report)
    row = next(line for line in text.splitlines() if line.startswith("| 0 | [alice/qwen-re-lora]"))
    assert f"| 4 (8) | {qwen.energy_kept:.4g} |" in row
    percent = f"{qwen.energy_kept * 100:.0f}"
    assert (f"Source 0 kept only {percent} % of its update's energy at rank 4 (re-factored from rank 8): the fusion "
            f"saw a truncated version of it.") in text
    assert "Source 1 kept only" not in text


def test_alignment_table_counts_target_layers_without_a_partner(fitted_report: FusionReport, tmp_path) -> None:
    """The tail plan of the 3-layer Qwen2 source leaves target layer 0 alone: a count and the layer, never a bare
    `0` that reads as "none"."""
    assert [list(p["unmatched_target_layers"]) for p in fitted_report.alignment["per_source"]] == [[0], []]
    text = render_card(tmp_path, report=fitted_report)
    assert "| Source | Target layers ← source layers | Pairs | Target layers without a partner (count: layers) |" in text
    assert "| 0 | 1-3 ← 0-2 | 3 | 1: layer 0 |" in text
    assert "| 1 | 0-3 ← 1-4 | 4 | none |" in text


def test_report_json_round_trips_through_the_one_parser(fitted_report: FusionReport) -> None:
    data = json.loads(fitted_report.dumps())
    assert FusionReport.from_json(data).to_json() == data
    assert "mergekit" not in data and data["ablation"] is not None  # empty optional sections are left out


def test_adapter_front_matter_follows_hub_conventions(tmp_path: Path) -> None:
    data = ModelCard(render_card(write_output(tmp_path, example_report()))).data.to_dict()
    assert data["base_model"] == "meta-llama/Llama-3.2-1B"
    assert data["base_model_relation"] == "adapter"
    assert data["library_name"] == "peft"
    assert data["pipeline_tag"] == "text-generation"
    assert {"heterofusion", "merge", "mergekit", "lora", "peft"} <= set(data["tags"])
    assert "license" not in data  # the local source has no licence: the inputs do not agree


def test_merged_front_matter_lists_hub_sources_only(tmp_path: Path) -> None:
    text = render_card(write_output(tmp_path, merged_report()))
    data = ModelCard(text).data.to_dict()
    assert data["base_model"] == ["meta-llama/Llama-3.2-1B", "alice/llama-ner-lora", "alice/qwen-re-lora"]
    assert data["base_model_relation"] == "merge"
    assert data["library_name"] == "transformers"
    assert data["license"] == "apache-2.0"
    # Local inputs appear by folder name only (the YAML block is the exact config, paths included).
    assert "/home/alice" not in text.split("```yaml")[0]
    assert "`mistral-typing` (local)" in text


def test_card_body_names_pins_alignment_and_yaml(tmp_path: Path) -> None:
    text = render_card(write_output(tmp_path, example_report()))
    assert SHA_QWEN[:12] in text and SHA_BASE[:12] in text
    assert "| 0 | 0-15 ← 8-23 | 16 | none |" in text
    assert "| 1 | 4-15 ← 0-11 | 12 | 4: layers 0-3 |" in text
    assert "![Layer alignment](alignment.png)" in text
    assert CONFIG_YAML.rstrip() in text
    assert "PeftModel.from_pretrained" in text and "hf download" in text
    assert "@article{chen2026heterofusion" in text
    assert "| ner | 30 | 45.25 | 30 | 70 | 60 |" in text
    assert "F1 52.5 against 60.0 for the anchor adapter alone: worse than the anchor." in text
    assert "keeps the anchor adapter's task and gains" not in text  # no claim the scores contradict


def test_card_says_plainly_when_not_evaluated_and_shows_flat_scores(tmp_path: Path) -> None:
    report = example_report()
    report["evaluation"] = None
    text = render_card(write_output(tmp_path / "none", report))
    assert "This adapter was not evaluated" in text and "Not evaluated." in text
    report["evaluation"] = {"ner_f1": 71.38, "re_f1": 64.2}  # benchmark / demo style: task -> score
    text = render_card(write_output(tmp_path / "flat", report))
    assert "| ner_f1 | 71.38 |" in text and "Measured scores are in the Evaluation section." in text


def test_render_is_pure_and_write_card_draws_pictures(tmp_path: Path) -> None:
    out = write_output(tmp_path / "out", example_report())
    first = render_card(out)
    assert render_card(out) == first
    assert "loss_curve.png" not in first
    (out / "loss_curve.png").write_bytes(b"\x89PNG fake")
    path = write_card(out)
    assert path == out / "README.md" and (out / "alignment.png").read_bytes().startswith(b"\x89PNG")
    assert "![Training loss](loss_curve.png)" in path.read_text(encoding="utf-8")


def test_card_tolerates_a_sparse_report(tmp_path: Path) -> None:
    report = {
        "output_kind": "adapter",
        "target": {"model": "/models/base", "adapter": "/models/anchor"},
        "sources": [],
    }
    text = render_card(write_output(tmp_path, report))
    assert "base_model" not in ModelCard(text).data.to_dict()
    assert draw_alignment(FusionReport.from_json(report), tmp_path / "a.png") is None


def test_card_without_report_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AdapterNotFoundError, match="has no fusion_report.json"):
        render_card(tmp_path)


def test_config_copy_is_used_when_report_has_no_yaml(tmp_path: Path) -> None:
    report = copy.deepcopy(example_report())
    report["config_yaml"] = None
    out = write_output(tmp_path, report)
    (out / "heterofusion_config.yml").write_text("target_model: x\n", encoding="utf-8")
    assert "```yaml\ntarget_model: x\n```" in render_card(out)


def test_card_states_the_task_balance_only_when_it_was_on(tmp_path: Path) -> None:
    report = example_report()
    assert "replay_balance" not in render_card(write_output(tmp_path / "plain", report))
    report["training"]["replay_balance"] = {"mode": "task", "groups": {"ner": 16, "re": 48}, "rows_per_group": 48,
                                            "rows": 96}
    text = render_card(write_output(tmp_path / "balanced", report))
    assert "`replay_balance: task`: each of 2 tasks drawn to 48 rows per epoch, 96 in all)" in text


def test_card_counts_the_discriminator_and_the_steering_only_when_they_ran_and_the_kinds_kept(tmp_path: Path) -> None:
    report = example_report()
    dropped = {"empty": 0, "truncated": 0, "degenerate": 0, "low_logprob": 0, "off_shape": 1, "off_label": 0,
               "off_skill": 2}
    source = {"source": "qwen", "index": 0, "base": "Qwen/Qwen2-0.5B", "given": 16, "replay_tagged": 0,
              "synthesized": 8, "synthesis": {"writer": "source"}, "labelled": 24, "kept": 19, "dropped": dropped,
              "samples": [], "dropped_samples": []}
    report["teacher"] = {"mode": "sources", "rows": 19, "sources": [source], "settings": {}}
    off = render_card(write_output(tmp_path / "off", report))
    assert "discriminator" not in off and "steered" not in off and "reword" not in off and "rounds" not in off
    source["dropped"] = {**dropped, "unlike_seeds": 2}
    source["synthesis"] = {"writer": "source", "steered": {"works_for": 4, "none": 3}, "topped_up": 1, "reworded": 5}
    source["kept"] = 17
    source["synthesized_kinds"] = {"none": 27, "works_for": 16}
    text = render_card(write_output(tmp_path / "on", report))
    assert "| 1 / 0 / 2; unlike the seeds (discriminator): 2 |" in text
    assert "| 8 (writer: source; 5 reword a seed) |" in text
    assert "Synthesized rows of `qwen` kept, by answer kind (the answer's words its prompt lacks): `none` 27, " \
           "`works_for` 16." in text
    assert "prompts written from seeds of each kind: `works_for` 4, `none` 3; 1 more from kinds already full" in text
    assert "gave one answer" not in text
    source["seed_profile"] = {"only_answer": "none", "labels": ["none"], "judges_shape": False}
    one = render_card(write_output(tmp_path / "one", report))
    assert "**The expert of `qwen` gave one answer, `none`, to every seed.**" in one
    source["synthesis"] = {"writer": "source", "rounds": [{"written": 4, "kept": 3, "shown_kinds": {}},
                                                          {"written": 4, "kept": 2, "shown_kinds": {"none": 2, "works_for": 1}}]}
    rounds = render_card(write_output(tmp_path / "rounds", report))
    assert "wrote in 2 rounds (`synthesis_rounds`)" in rounds
    assert "round 1 4 written, 3 kept; round 2 4 written, 2 kept (shown: `none` 2, `works_for` 1)." in rounds
