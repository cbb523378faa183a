# SPDX-License-Identifier: Apache-2.0
"""Model card rendering: golden files, front matter conventions, purity and the alignment picture."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_heterofusion.card import draw_alignment, render_card, write_card
from hf_heterofusion.errors import AdapterNotFoundError


GOLDEN_DIR = Path(__file__).resolve().parent.parent / "model_cards"
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


@pytest.mark.parametrize(
    ("golden", "make_report"), [("example_adapter_card.md", example_report), ("example_merged_card.md", merged_report)]
)
def test_card_matches_golden_file(tmp_path: Path, golden: str, make_report) -> None:
    out = write_output(tmp_path / "out", make_report())
    text = render_card(out)
    if UPDATE:
        (GOLDEN_DIR / golden).write_text(text, encoding="utf-8")
    assert text == (GOLDEN_DIR / golden).read_text(encoding="utf-8")


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
    assert "| 1 | 4-15 ← 0-11 | 12 | 0-3 |" in text
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
    assert draw_alignment(report, tmp_path / "a.png") is None


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
