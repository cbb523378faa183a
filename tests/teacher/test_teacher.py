# SPDX-License-Identifier: Apache-2.0
"""The teacher stage on tiny fixtures: provenance, cache, determinism, filters, resume, errors, 2 processes."""

import json
import os
import subprocess
import sys

import pytest
import torch

from hf_heterofusion.cli.main import main
from hf_heterofusion.config import FusionConfig
from hf_heterofusion.constants import TEACHER_REPLAY_NAME
from hf_heterofusion.data.generation import Generation
from hf_heterofusion.data.replay import answer_kind, prompt_text
from hf_heterofusion.errors import TeacherKeptLittleWarning
from hf_heterofusion.pipeline import fuse
from hf_heterofusion.prepare import prepare
from hf_heterofusion.teacher import labeller as teacher_labels
from hf_heterofusion.teacher.filters import drop_reason, is_degenerate, is_unsure
from hf_heterofusion.teacher.run import run_teachers


SMALL = dict(block_size="auto", embed_dim=32, num_heads=4, max_position_embeddings=32, num_projections=16,
             epochs=1, gradient_accumulation_steps=2, lr=1e-3, checkpoint_every=0)


LOADS = {"count": 0}  # teacher models loaded in this test (the `cache` fixture counts them)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("HF_HETEROFUSION_CACHE", str(root))
    LOADS["count"] = 0
    real = teacher_labels.load_causal_lm

    def counted(*args, **kwargs):
        LOADS["count"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(teacher_labels, "load_causal_lm", counted)
    return root


@pytest.fixture(scope="module")
def teach_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("teach")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Colour of thing {i}:"}) + "\n" for i in range(6)))
    replay = root / "replay.jsonl"
    rows = [{"prompt": f"Say {i}:", "response": f" {i}"} for i in range(4)]
    rows += [{"prompt": "Tagged thing:", "source": "qwen"}, {"prompt": "Seed thing:", "response": " x", "source": 0}]
    replay.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"prompts": prompts, "replay": replay, "root": root}


@pytest.fixture()
def teach_config(fixture_zoo, teach_inputs):
    def build(**overrides):
        source = {"adapter": str(fixture_zoo.adapter("qwen2", r=4, seed=10)), "base_model": str(fixture_zoo.model("qwen2")),
                  "name": "qwen", "prompts": str(teach_inputs["prompts"]), "synthesize": 3}
        source.update(overrides.pop("source", {}))
        data = dict(SMALL, target_model=str(fixture_zoo.model("llama")), target_adapter=str(fixture_zoo.adapter("llama")),
                    sources=[source], replay=str(teach_inputs["replay"]), teacher="sources", teacher_max_new_tokens=6,
                    teacher_batch_size=4, teacher_drop_truncated=False, max_steps=2,
                    # random tiny writers write noise that the on-task filter drops: these tests follow the rows
                    teacher_on_task_filter=False,
                    # the paper's trainer and mixing, spelled out (`teacher: sources` alone: lora, task-balanced)
                    trainer="transfer_nets", replay_balance="none")
        data.update(overrides)
        return FusionConfig.from_mapping(data)

    return build


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.integration
def test_rows_carry_provenance_and_a_rerun_is_a_cache_hit(teach_config, cache, tmp_path):
    cfg = teach_config()
    first = fuse(cfg, tmp_path / "a", show_progress=False)
    assert LOADS["count"] == 1 and first.report.teacher["sources"][0]["synthesis"]["writer"] == "source"
    rows = _rows(tmp_path / "a" / TEACHER_REPLAY_NAME)
    assert {r["origin"] for r in rows} == {"given", "replay", "synthesized"}
    assert sum(r["origin"] == "given" for r in rows) == 6 and sum(r["origin"] == "replay" for r in rows) == 1
    for r in rows:
        assert r["source"] == "qwen" and r["prompt"] and r["response"] and r["logprob"] <= 0
        assert len(r["teacher"]["base_revision"]) == 64 and len(r["teacher"]["adapter_revision"]) == 64
    stats = first.report.teacher["sources"][0]
    # a random tiny base rarely ends a line within its budget, so fewer than the 3 asked may be synthesized
    assert (stats["given"], stats["replay_tagged"]) == (6, 1) and 1 <= stats["synthesized"] <= 3
    assert sum(r["origin"] == "synthesized" for r in rows) == stats["synthesized"]
    assert stats["synthesis"]["truncated"] > 0
    assert stats["kept"] == len(rows) and stats["teacher_loaded"] and stats["cached"] == 0
    assert len(stats["samples"]) == 3
    # the fused model trained on the replay's labelled rows plus the teacher's
    assert first.report.training.replay_examples == 5 + len(rows)
    card = (tmp_path / "a" / "README.md").read_text()
    assert "## Teacher stage" in card and f"| qwen | {cfg.sources[0].base_model} | 6 | 1 | " in card
    assert card.count("(given, log-prob") + card.count("(replay, log-prob") + card.count("(synthesized, log") == 3

    second = fuse(cfg, tmp_path / "b", show_progress=False)
    assert LOADS["count"] == 1, "a rerun must not load any teacher"
    stats = second.report.teacher["sources"][0]
    assert not stats["teacher_loaded"] and stats["cached"] == stats["labelled"]
    assert _rows(tmp_path / "b" / TEACHER_REPLAY_NAME) == rows


@pytest.mark.integration
def test_same_seed_same_rows_in_a_fresh_cache(teach_config, tmp_path, monkeypatch):
    cfg = teach_config()
    runs = []
    for name in ("one", "two"):
        monkeypatch.setenv("HF_HETEROFUSION_CACHE", str(tmp_path / name))
        runs.append([r.to_json() for r in run_teachers(prepare(cfg).teaching, cfg, show_progress=False).rows])
    assert runs[0] == runs[1]


@pytest.mark.integration
def test_teacher_none_leaves_the_faithful_fit_untouched(make_config, teach_inputs, cache):
    """`teacher: none` ignores nothing silently and changes nothing: same tensors as a config without the keys."""
    from hf_heterofusion.pipeline import fit

    a = fit(make_config(max_steps=2), show_progress=False).tensors
    b = fit(make_config(max_steps=2, teacher="none", trainer="transfer_nets"), show_progress=False).tensors
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert LOADS["count"] == 0


@pytest.mark.integration
def test_placebo_teacher_zeroes_B_and_caches_apart(teach_config, cache):
    cfg, placebo = teach_config(), teach_config(teacher_placebo=True)
    real = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    fake = run_teachers(prepare(placebo).teaching, placebo, show_progress=False)
    assert LOADS["count"] == 2 and fake.report["mode"] == "placebo"
    assert all(r.teacher["placebo"] for r in fake.rows)
    # same base and prompts (synthesis uses the base alone), different answers: the adapter is what teaches
    assert [r.prompt for r in real.rows] == [r.prompt for r in fake.rows]
    assert [r.response for r in real.rows] != [r.response for r in fake.rows]


@pytest.mark.integration
def test_a_killed_labelling_resumes_at_the_first_unfinished_batch(teach_config, cache, monkeypatch):
    cfg = teach_config(source={"synthesize": 0})
    reference = [r.to_json() for r in run_teachers(prepare(cfg).teaching, cfg, show_progress=False).rows]
    for path in (cache / "teacher").glob("*/part-*.jsonl"):
        path.unlink()
    real, calls = teacher_labels.greedy_batch, []

    def dies_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(teacher_labels, "greedy_batch", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    monkeypatch.setattr(teacher_labels, "greedy_batch", real)
    resumed = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    assert resumed.report["sources"][0]["cached"] == cfg.teacher_batch_size  # the first batch survived the kill
    assert [r.to_json() for r in resumed.rows] == reference


@pytest.mark.parametrize(("gen", "overrides", "reason"), [
    (Generation("  ", (5,), True, -0.1), {}, "empty"),
    (Generation("cut", (5, 6), False, -0.1), {"teacher_drop_truncated": True}, "truncated"),
    (Generation("cut", (5, 6), False, -0.1), {"teacher_drop_truncated": False}, None),
    (Generation("a b a b", (1, 2) * 6, True, -0.1), {"teacher_repeat_ngram": 2}, "degenerate"),
    (Generation("a b a b", (1, 2) * 6, True, -0.1), {"teacher_repeat_ngram": 0}, None),
    (Generation("unsure", (7, 8), True, -3.0), {"teacher_min_logprob": -1.0}, "low_logprob"),
    (Generation("sure", (7, 8), True, -0.5), {"teacher_min_logprob": -1.0}, None),
])
def test_each_filter_drops_what_it_should(teach_config, gen, overrides, reason):
    assert drop_reason(gen, teach_config(**overrides)) == reason


def test_degenerate_needs_three_occurrences():
    assert not is_degenerate((1, 2, 3, 1, 2, 3), 3) and is_degenerate((1, 2, 3) * 3, 3)


@pytest.mark.integration
def test_filter_counts_reach_the_report(teach_config, cache):
    """A teacher that keeps under a quarter of its answers says so, with the counts and the fix."""
    cfg = teach_config(teacher_drop_truncated=True, teacher_max_new_tokens=2, source={"synthesize": 0})
    with pytest.warns(TeacherKeptLittleWarning) as caught:
        result = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    stats = result.report["sources"][0]
    assert stats["dropped"]["truncated"] > 0
    assert stats["kept"] + sum(stats["dropped"].values()) == stats["labelled"] == 7
    message = next(str(w.message) for w in caught if w.category is TeacherKeptLittleWarning)
    assert f"teacher `qwen` kept {stats['kept']} of 7 answers (dropped: truncated {stats['dropped']['truncated']}" \
        in message and "raise `teacher_max_new_tokens`" in message


def _write_yaml(path, data):
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"source": {"base_model": None}},
     "source `qwen` teaches but has no base model; write it as `source_base+adapter` (mergekit YAML) or give it "
     "`base_model:` (its adapter alone cannot generate)"),
    ({"teacher": "none", "replay": "{replay_plain}"},
     "source `qwen` has `prompts` but `teacher` is `none`; set `teacher: sources` to let it label them (or remove "
     "them)"),
    ({"source": {"synthesize": 2, "prompts": None}, "replay": "{replay_plain}"},
     "source `qwen` has `synthesize: 2` but no seed prompts; give it `prompts: FILE` or tag a few replay rows with "
     "`\"source\": \"qwen\"`"),
    ({"source": {"prompts": None, "synthesize": 0}, "replay": "{replay_plain}"},
     "`teacher: sources` but no source has anything to label; give a source `prompts: FILE`, `synthesize: N`, or "
     "tag replay rows with `\"source\": NAME` and no response"),
    ({"source": {"prompts": "/nonexistent/p.jsonl"}},
     "prompts file /nonexistent/p.jsonl does not exist; pass a JSONL file with one prompt per line"),
    ({"replay": "{replay_bad_source}"},
     "{replay_bad_source}:1: `source: 'gemma'` names no source; use a source index 0-0 or one of: qwen"),
    ({"source": {"synthesizer": "/nonexistent/writer"}},
     "synthesizer of source `qwen` `/nonexistent/writer` does not exist locally; check the path, or run "
     "`hf-heterofusion pull` for Hub ids (it writes heterofusion.lock.json next to the config)"),
    ({"source": {"synthesizer": "{root}"}},
     "synthesizer of source `qwen` ({root}) has no config.json; give a transformers causal LM folder or Hub id, or "
     "`synthesizer: target` / `source`"),
    ({"teacher_discriminator": True},
     "source `qwen` has 8 seed prompts but `teacher_discriminator` needs 16 or more (a classifier of fewer real "
     "prompts is noise); give more seeds or set `teacher_discriminator: false`"),
    ({"source": {"base_model": "{llama_base}"}},
     "source `qwen`: its adapter does not fit the base model {llama_base} (`model.layers.0.mlp.down_proj.weight` "
     "is 64x176, the adapter's update is 48x128); give the base the adapter was trained on"),
])
def test_teacher_input_errors_are_one_line_exit_2_and_write_nothing(teach_config, teach_inputs, fixture_zoo,
                                                                     tmp_path, capsys, change, message):
    root = teach_inputs["root"]
    plain = root / "plain.jsonl"
    plain.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n")
    bad = root / "bad_source.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "source": "gemma"}) + "\n")
    subs = {"replay_plain": str(plain), "replay_bad_source": str(bad), "llama_base": str(fixture_zoo.model("llama")),
            "root": str(root)}
    data = teach_config().model_dump(mode="json")
    source = {**data["sources"][0], **{k: (v.format(**subs) if isinstance(v, str) else v)
                                       for k, v in change.get("source", {}).items()}}
    data.update({k: (v.format(**subs) if isinstance(v, str) else v) for k, v in change.items() if k != "source"})
    data["sources"] = [source]
    cfg_path = _write_yaml(tmp_path / "cfg.yml", data)
    out = tmp_path / "out"
    capsys.readouterr()  # building the fixtures may print progress
    code = main(["fuse", str(cfg_path), str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"error: {message.format(**subs)}", err
    assert "Traceback" not in err and not out.exists()
    assert not list(tmp_path.glob(".out*"))


@pytest.mark.integration
def test_accelerate_two_process_labelling_equals_one_process(teach_config, tmp_path):
    cfg = teach_config()
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")))
    outputs = {}
    for procs in (1, 2):
        env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1",
                   HF_HETEROFUSION_CACHE=str(tmp_path / f"cache{procs}"))
        out = tmp_path / f"rows{procs}.jsonl"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu" if procs > 1 else "--cpu",
               "--num_processes", str(procs), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", "29531",
               "-m", "hf_heterofusion.testing.teacher_script", str(cfg_path), str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"world_size={procs}" in proc.stdout
        outputs[procs] = _rows(out)
    assert outputs[1] == outputs[2] and len(outputs[1]) >= 8
    # both processes wrote their own batches to the cache
    assert len(list((tmp_path / "cache2" / "teacher").glob("*/part-1.jsonl"))) == 1


def test_check_lists_the_teaching_sources_prompts_and_an_estimate(teach_config, tmp_path, capsys):
    cfg_path = _write_yaml(tmp_path / "cfg.yml", teach_config().model_dump(mode="json"))
    assert main(["check", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    assert "teacher stage (`teacher: sources`; greedy, batches of 4, at most 6 new tokens)" in out
    assert "source 0 `qwen` teaches from" in out and "6 given prompts, 1 tagged in the replay, 3 to synthesize" in out
    assert "10 rows to label" in out and "labelling in all ~" in out


@pytest.mark.integration
def test_mergekit_yaml_teaches_through_merge(teach_config, fixture_zoo, teach_inputs, tmp_path, capsys, cache):
    """The same stage from an ordinary mergekit YAML: per-source keys under `models[i].parameters`."""
    import yaml

    cfg = teach_config()
    src = cfg.sources[0]
    params = {k: v for k, v in cfg.model_dump(mode="json").items()
              if k not in ("target_model", "target_adapter", "sources")}
    doc = {"merge_method": "heterofusion", "base_model": f"{cfg.target_model}+{cfg.target_adapter}",
           "models": [{"model": f"{src.base_model}+{src.adapter}",
                       "parameters": {"name": "qwen", "prompts": src.prompts, "synthesize": 2}}],
           "parameters": params, "dtype": "float32"}
    path = tmp_path / "merge.yml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["merge", str(path), str(tmp_path / "out")]) == 0
    rows = _rows(tmp_path / "out" / TEACHER_REPLAY_NAME)
    assert sum(r["origin"] == "given" for r in rows) == 6 and {r["source"] for r in rows} == {"qwen"}
    report = json.loads((tmp_path / "out" / "fusion_report.json").read_text())
    assert report["teacher"]["sources"][0]["given"] == 6


@pytest.mark.integration
def test_a_writer_of_noise_is_filtered_and_the_card_data_says_why(teach_config, cache):
    """The tiny random writer writes noise; with the filter on (the default) none of it reaches training, the
    given prompts are never judged by it, and the report counts and shows what went."""
    cfg = teach_config(teacher_on_task_filter=True, source={"synthesize": 4, "synthesizer": "target"})
    result = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    stats = result.report["sources"][0]
    off = stats["dropped"]["off_shape"] + stats["dropped"]["off_label"] + stats["dropped"]["off_skill"]
    assert stats["synthesized"] >= 1 and off >= 1
    assert sum(r.origin == "synthesized" for r in result.rows) == stats["synthesized"] - off
    assert sum(stats["synthesized_kinds"].values()) == stats["synthesized"] - off  # at most 6 kinds: noise has more
    assert {r.origin for r in result.rows} >= {"given"}  # given prompts are not judged by the on-task filters
    assert stats["seed_profile"] is not None
    assert any(s["reason"] in ("off_shape", "off_label", "off_skill") and s["origin"] == "synthesized"
               for s in stats["dropped_samples"])


def test_an_answer_is_unsure_when_its_least_likely_token_is():
    sure = Generation("works_for: Ann, Globex", (1, 2, 3), True, -0.01, token_logprobs=(-0.0, -0.02, -0.01))
    hesitant = Generation("works_for: Ann, Ann", (1, 2, 3), True, -0.08, token_logprobs=(-0.0, -0.22, -0.01))
    assert not is_unsure(sure, 0.9) and is_unsure(hesitant, 0.9) and not is_unsure(hesitant, 0.7)
    assert is_unsure(Generation("old cache", (1,), True, -0.5), 0.9)  # no per-token log-probs: the mean judges


@pytest.mark.integration
@pytest.mark.parametrize("min_prob", [None, 0.5])
def test_unsure_answers_on_synthesized_prompts_are_dropped_and_counted(teach_config, cache, min_prob):
    """The tiny random expert is unsure of every answer: at 0.5 each synthesized row goes as `unsure` (and is
    counted, with a sample), the given prompts all stay; unset, the filter is not there at all."""
    cfg = teach_config(teacher_on_task_filter=False, teacher_min_token_prob=min_prob,
                       source={"synthesize": 4, "synthesizer": "target"})
    result = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    stats = result.report["sources"][0]
    given = sum(p.origin == "given" for p in prepare(cfg).teaching[0].prompts)
    assert sum(r.origin == "given" for r in result.rows) == given
    if min_prob is None:
        assert "unsure" not in stats["dropped"] and any(r.origin == "synthesized" for r in result.rows)
    else:
        assert stats["dropped"]["unsure"] >= 1 and not any(r.origin == "synthesized" for r in result.rows)
        assert "unsure" in {s["reason"] for s in stats["dropped_samples"]}


@pytest.mark.integration
def test_spared_answer_kinds_pass_the_unsure_filter_and_the_others_do_not(teach_config, cache):
    """Sparing one kind of the unsure random expert's answers keeps exactly the synthesized rows of that kind."""
    def synthesized_kinds(**switches):
        cfg = teach_config(teacher_on_task_filter=False, source={"synthesize": 4, "synthesizer": "target"},
                           **switches)
        result = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
        kinds = [answer_kind(r.response, prompt_text(r.prompt)) for r in result.rows if r.origin == "synthesized"]
        return kinds, result.report["sources"][0]["dropped"]

    every, _ = synthesized_kinds()
    spared = every[0]
    kept, dropped = synthesized_kinds(teacher_min_token_prob=0.5, teacher_unsure_spares=[spared])
    assert kept == [k for k in every if k == spared]
    assert dropped["unsure"] == len(every) - len(kept)


@pytest.mark.integration
def test_the_preview_shows_the_least_token_probability_the_unsure_filter_judges(teach_config, tmp_path, capsys,
                                                                                 cache):
    cfg = teach_config(teacher_on_task_filter=False, teacher_min_token_prob=0.5,
                       source={"synthesize": 4, "synthesizer": "target"})
    assert main(["check", str(_write_yaml(tmp_path / "cfg.yml", cfg.model_dump(mode="json"))),
                 "--teacher-preview", "4"]) == 0
    preview = capsys.readouterr().out.split("teacher preview:", 1)[1]
    lines = [line for line in preview.splitlines() if line.startswith("  [")]
    assert lines and all("least token p 0." in line for line in lines)
    assert any(line.startswith("  [unsure] (synthesized)") for line in lines)
    assert not any(line.startswith("  [unsure] (given)") for line in lines)


@pytest.mark.integration
def test_sources_on_one_base_load_it_once_and_label_as_if_alone(teach_config, fixture_zoo, cache, monkeypatch,
                                                                tmp_path):
    plain = tmp_path / "plain.jsonl"  # no rows tagged for a source: each source labels its given prompts only
    plain.write_text(json.dumps({"prompt": "Say 1:", "response": " 1"}) + "\n")
    data = teach_config(source={"synthesize": 0}, replay=str(plain)).model_dump(mode="json")
    data["sources"].append({**data["sources"][0], "name": "qwen_b",
                            "adapter": str(fixture_zoo.adapter("qwen2", r=4, seed=11))})
    both = FusionConfig.from_mapping(data)
    together = run_teachers(prepare(both).teaching, both, show_progress=False)
    assert LOADS["count"] == 1  # the second source swapped its adapter onto the resident base
    assert teacher_labels._RESIDENT.base is None  # released before the target would be trained
    alone = []
    for i, source in enumerate(data["sources"]):
        monkeypatch.setenv("HF_HETEROFUSION_CACHE", str(tmp_path / f"alone{i}"))  # nothing cached
        one = FusionConfig.from_mapping({**data, "sources": [source]})
        alone += [r.response for r in run_teachers(prepare(one).teaching, one, show_progress=False).rows
                  if r.origin == "given"]
    assert LOADS["count"] == 3
    assert [r.response for r in together.rows if r.origin == "given"] == alone
    assert len({r.source for r in together.rows}) == 2
    assert alone[:6] != alone[6:]  # the adapters answer differently: one left on the base would show


@pytest.mark.integration
def test_the_discriminator_judges_synthesized_prompts_against_16_seeds(teach_config, teach_inputs, cache):
    seeds = teach_inputs["root"] / "seeds16.jsonl"
    seeds.write_text("".join(json.dumps({"prompt": f"Colour of thing {i}:"}) + "\n" for i in range(16)))
    cfg = teach_config(teacher_discriminator=True, source={"prompts": str(seeds), "synthesize": 4})
    result = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    stats = result.report["sources"][0]
    assert "unlike_seeds" in stats["dropped"] and 0 < stats["synthesis"]["discriminator_threshold"] < 1
    synthesized = sum(r.origin == "synthesized" for r in result.rows)
    assert synthesized == stats["synthesized"] - sum(stats["dropped"].values())  # given prompts: never judged
    assert sum(r.origin == "given" for r in result.rows) == 16


@pytest.mark.integration
def test_teacher_preview_labels_a_sample_with_verdicts_and_writes_nothing(teach_config, tmp_path, capsys, cache):
    cfg = teach_config(teacher_on_task_filter=True, source={"synthesize": 3})
    cfg_path = _write_yaml(tmp_path / "cfg.yml", cfg.model_dump(mode="json"))
    assert main(["check", str(cfg_path), "--teacher-preview", "2"]) == 0
    out = capsys.readouterr().out
    preview = out.split("teacher preview:", 1)[1]
    assert "source `qwen`" in preview and "prompts written by: source" in preview
    lines = [line for line in preview.splitlines() if line.startswith("  [")]
    assert sum("(given)" in line for line in lines) == 2  # N of its own prompts
    # a random tiny writer may finish no item within the query budget of 2 prompts
    assert sum("(synthesized)" in line for line in lines) <= 2
    assert f"{sum('[kept]' in line for line in lines)} of {len(lines)} kept" in preview
    assert all(line.split("]")[0][3:] in ("kept", "empty", "truncated", "degenerate", "low_logprob", "off_shape",
                                          "off_label", "off_skill") for line in lines)
    assert not list(tmp_path.glob("out*"))
    assert main(["check", str(cfg_path), "--teacher-preview", "-1"]) == 2


@pytest.mark.integration
def test_the_target_can_write_the_prompts_and_its_prompts_are_cached_apart(teach_config, cache):
    """`synthesizer: target`: a second model (the target base, asked through its chat template) writes; the
    teacher still labels; a rerun reads both the prompts and the labels from the cache."""
    cfg = teach_config(source={"synthesizer": "target", "synthesize": 3})
    first = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    assert LOADS["count"] == 2 and first.report["sources"][0]["synthesis"]["writer"] == "target"
    again = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    assert LOADS["count"] == 2 and [r.prompt for r in again.rows] == [r.prompt for r in first.rows]
    own = teach_config(source={"synthesize": 3})
    mine = run_teachers(prepare(own).teaching, own, show_progress=False)
    assert mine.report["sources"][0]["synthesis"]["writer"] == "source"


@pytest.mark.integration
def test_base_scores_are_added_to_cached_answers_without_relabelling(teach_config, cache):
    """Labels are cached without the base's scores unless something reads them; asking later (skill weighting)
    scores the cached answers with the base and keeps every label as it was."""
    plain = teach_config(teacher_drop_truncated=False, source={"synthesize": 0})
    first = run_teachers(prepare(plain).teaching, plain, show_progress=False)
    assert all(r.excess is None for r in first.rows)
    skill = teach_config(teacher_drop_truncated=False, source={"synthesize": 0}, trainer="lora",
                         teacher_token_weighting="skill")
    second = run_teachers(prepare(skill).teaching, skill, show_progress=False)
    assert [r.response for r in second.rows] == [r.response for r in first.rows]
    assert all(r.excess is not None for r in second.rows) and all(r.signal is not None for r in second.rows)
    assert LOADS["count"] == 2  # the first labelling, then the base pass (answers read from the cache)
    run_teachers(prepare(skill).teaching, skill, show_progress=False)
    assert LOADS["count"] == 2  # now everything is cached
