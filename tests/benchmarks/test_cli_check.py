# SPDX-License-Identifier: Apache-2.0
"""`benchmarks.cli_check`: the rows it builds and the runs it asks the CLI for (the CLI itself is stubbed)."""

import json

import pytest

from benchmarks import cli_check


def test_rows_rename_the_labels_and_keep_the_anchor_rows_sourceless():
    train, test, anchor, anchor_test = cli_check._rows()
    assert {r["response"] for r in train + test} == set(cli_check.NEW_LABELS.values())
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}  # no test prompt is trained on
    assert all(r["source"] == cli_check.TASK for r in train + test)
    assert all("source" not in r and r["task"] == cli_check.ANCHOR for r in anchor + anchor_test)
    assert (len(train), len(test), len(anchor), len(anchor_test)) == (240, 60, 16, 60)


@pytest.fixture()
def no_models(tmp_path, monkeypatch):
    """Everything but the runs stubbed: no model is converted, trained or scored."""
    monkeypatch.setattr(cli_check, "ensure_model", lambda key: tmp_path / key)
    monkeypatch.setattr(cli_check, "train_lora_expert", lambda *a, **k: None)
    monkeypatch.setattr(cli_check, "_expert_score", lambda *a: 100.0)
    monkeypatch.setattr(cli_check, "_anchor_adapter", lambda: tmp_path / "anchor")


def test_every_run_gets_the_defaults_budget_and_the_same_replay(tmp_path, monkeypatch, no_models):
    calls = []

    def fuse(config, out, eval_file):
        calls.append((out.name, config))
        scores = {name: {"exact_match": 50.0} for name in (cli_check.TASK, cli_check.ANCHOR)}
        return {"training": {"optimizer_steps": 17 if out.name == "defaults" else config["max_steps"]},
                "evaluation": {"results": {"fused": scores, "anchor": scores}}}

    monkeypatch.setattr(cli_check, "_fuse", fuse)
    cli_check.main(["--seeds", "3", "--out", str(tmp_path / "out")])
    runs = dict(calls)
    assert list(runs) == ["defaults", "placebo", "seeds_alone"]
    assert "max_steps" not in runs["defaults"] and runs["defaults"]["sources"][0]["synthesize"] == 48
    assert runs["placebo"]["teacher_placebo"] is True
    assert runs["seeds_alone"].get("teacher", "none") == "none" and runs["seeds_alone"]["trainer"] == "lora"
    for name in ("placebo", "seeds_alone"):  # exactly the defaults' steps: a cap above what `epochs` would end at
        assert runs[name]["max_steps"] == 17 and runs[name]["epochs"] >= 100
    assert len({c["replay"] for c in runs.values()}) == 1 and len({c["seed"] for c in runs.values()}) == 1
    replay = [json.loads(line) for line in open(runs["defaults"]["replay"])]
    assert sum(r.get("source") == cli_check.TASK for r in replay) == 4 and len(replay) == 20
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["expert"] == 100.0 and set(results["runs"]) == {f"seed 3 / {n}" for n in runs}


def test_a_card_draw_shows_every_label_and_results_of_earlier_draws_stay(tmp_path, monkeypatch, no_models):
    train = cli_check._rows()[0]
    for seed in range(20):
        labels = [r["response"] for r in cli_check.draw_seeds(train, seed, card=True)]
        assert len(labels) == 4 and set(labels) == set(cli_check.NEW_LABELS.values())
    assert cli_check.draw_seeds(train, 0, card=True) != cli_check.draw_seeds(train, 1, card=True)
    assert {r["response"] for r in cli_check.draw_seeds(train, 0, card=False)} == {"glorp"}  # v14's seed 0

    def fuse(config, out, eval_file):
        scores = {name: {"exact_match": 50.0} for name in (cli_check.TASK, cli_check.ANCHOR)}
        return {"training": {"optimizer_steps": 5}, "evaluation": {"results": {"fused": scores, "anchor": scores}}}

    monkeypatch.setattr(cli_check, "_fuse", fuse)
    out = tmp_path / "out"
    cli_check.main(["--seeds", "1", "--out", str(out), "--runs", "defaults"])
    cli_check.main(["--seeds", "1", "--out", str(out), "--runs", "defaults", "--card"])
    assert set(json.loads((out / "results.json").read_text())["runs"]) == {"seed 1 / defaults", "card 1 / defaults"}
    assert (out / "card1" / "replay.jsonl").is_file() and (out / "seed1" / "replay.jsonl").is_file()


def test_synthesize_sets_the_writers_count(tmp_path, monkeypatch, no_models):
    asked = []

    def fuse(config, out, eval_file):
        asked.append(config["sources"][0].get("synthesize"))
        scores = {name: {"exact_match": 50.0} for name in (cli_check.TASK, cli_check.ANCHOR)}
        return {"training": {"optimizer_steps": 5}, "evaluation": {"results": {"fused": scores, "anchor": scores}}}

    monkeypatch.setattr(cli_check, "_fuse", fuse)
    cli_check.main(["--seeds", "0", "--out", str(tmp_path / "out"), "--runs", "defaults", "--synthesize", "96"])
    assert asked == [96]


def test_budget_from_gives_every_run_the_steps_of_another_checks_defaults(tmp_path, monkeypatch, no_models):
    other = tmp_path / "other" / "seed2" / "defaults"
    other.mkdir(parents=True)
    (other / "fusion_report.json").write_text(json.dumps({"training": {"optimizer_steps": 144}}))
    asked = []

    def fuse(config, out, eval_file):
        asked.append((out.name, config.get("max_steps"), config.get("epochs")))
        scores = {name: {"exact_match": 50.0} for name in (cli_check.TASK, cli_check.ANCHOR)}
        steps = config.get("max_steps", 39)
        return {"training": {"optimizer_steps": steps}, "evaluation": {"results": {"fused": scores, "anchor": scores}}}

    monkeypatch.setattr(cli_check, "_fuse", fuse)
    cli_check.main(["--seeds", "2", "--out", str(tmp_path / "out"), "--budget-from", str(tmp_path / "other")])
    assert asked == [("defaults", 144, 1000), ("placebo", 144, 1000), ("seeds_alone", 144, 1000)]
    asked.clear()
    cli_check.main(["--seeds", "2", "--out", str(tmp_path / "fixed"), "--steps", "216", "--runs", "defaults"])
    assert asked == [("defaults", 216, 1000)]
    with pytest.raises(SystemExit, match="no finished run"):
        cli_check.main(["--seeds", "3", "--out", str(tmp_path / "out"), "--budget-from", str(tmp_path / "other")])
