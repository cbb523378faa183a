# SPDX-License-Identifier: Apache-2.0
"""The demo shows what the README says it shows: on the task no replay row labels, the teacher carries the skill.

Runs the real demo (not `--quick`: the claim is about the demo a newcomer runs; about 2 minutes on 2 cores).
"""

import json

import pytest
from huggingface_hub import ModelCard

from hf_heterofusion.cli.main import main
from hf_heterofusion.examples.demo import TAUGHT


@pytest.mark.integration
@pytest.mark.filterwarnings("default::hf_heterofusion.errors.HeteroFusionWarning")
def test_the_demos_teacher_column_beats_fused_and_placebo_on_the_untaught_task(tmp_path, capsys):
    assert main(["demo", "--out-dir", str(tmp_path / "demo")]) == 0
    scores = json.loads((tmp_path / "demo" / "demo_scores.json").read_text())["scores"][TAUGHT]
    assert scores["fused_teacher"] >= scores["fused"] + 20, scores
    assert scores["fused_teacher"] >= scores["fused_placebo"] + 20, scores
    card = ModelCard.load(tmp_path / "demo" / "fused_teacher" / "README.md").text
    assert "Not evaluated" not in card and f"| {TAUGHT} (accuracy, 60 test prompts) |" in card
