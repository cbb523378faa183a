# SPDX-License-Identifier: Apache-2.0
"""How the writer is asked, on tiny fixtures. `synthesis_steer: answer`: each writer query shows seeds of one answer
kind, kinds share the prompts, the seeds' own answers decide the kinds (else the expert's), and steered prompts are
cached apart. `synthesis_style: paraphrase`: each query asks a chat writer to rewrite one seed, the seeds in turn.
`synthesis_rounds`: later rounds show the writer kept prompts of earlier rounds, answer kinds drawn alike."""

import json
import random
import re

import pytest

from hf_heterofusion.cli.preview import teacher_preview
from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.replay import prompt_text
from hf_heterofusion.errors import ConfigError
from hf_heterofusion.prepare import prepare
from hf_heterofusion.teacher import labeller as teacher_labels
from hf_heterofusion.teacher.run import run_teachers
from hf_heterofusion.teacher.synthesis import SeedTemplate, Written


FOUND = {"Ann works for Acme.": "Ann, Acme", "Globex hired Bob.": "Bob, Globex", "Cy joined Initech in Rome.": "Cy, Initech"}
NONE = ["Dee visited Acme.", "Eve sued Globex."]


@pytest.fixture()
def steer_config(fixture_zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HETEROFUSION_CACHE", str(tmp_path / "cache"))
    replay = tmp_path / "replay.jsonl"
    rows = [{"prompt": f"Works-for relations in: {t}\n", "response": f"works_for: {pair}", "source": "qwen"}
            for t, pair in FOUND.items()]
    rows += [{"prompt": f"Works-for relations in: {t}\n", "response": "none", "source": "qwen"} for t in NONE]
    replay.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def build(**overrides):
        data = dict(target_model=str(fixture_zoo.model("llama")), target_adapter=str(fixture_zoo.adapter("llama")),
                    sources=[{"adapter": str(fixture_zoo.adapter("qwen2", r=4, seed=10)), "name": "qwen",
                              "base_model": str(fixture_zoo.model("qwen2")), "synthesize": 5}],
                    replay=str(replay), teacher="sources", teacher_max_new_tokens=4, teacher_batch_size=4,
                    teacher_drop_truncated=False, teacher_on_task_filter=False, synthesis_steer="answer")
        data.update(overrides)
        return FusionConfig.from_mapping(data)

    return build


@pytest.fixture()
def shown(monkeypatch):
    """The seed parts each writer query showed (as a list to continue, or in a chat turn), in query order."""
    queries: list[list[str]] = []
    for name in ("list_context", "chat_request"):
        real = getattr(SeedTemplate, name)

        def record(self, shots, real=real):
            queries.append(list(shots))
            return real(self, shots)

        monkeypatch.setattr(SeedTemplate, name, record)
    return queries


def test_each_query_shows_one_answer_kind_and_kinds_share_the_prompts(steer_config, shown, monkeypatch):
    labelled = []
    real_label = teacher_labels.Labeller.label
    monkeypatch.setattr(teacher_labels.Labeller, "label",
                        lambda self, prompts, **kw: labelled.append(len(prompts)) or real_label(self, prompts, **kw))
    cfg = steer_config()
    result = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    stats = result.report["sources"][0]["synthesis"]
    assert shown and all(set(q) <= set(FOUND) or set(q) <= set(NONE) for q in shown)
    assert [set(q) <= set(FOUND) for q in shown[:4]] == [True, False, True, False]  # kinds in turn
    assert set(stats["steered"]) == {"works_for", "none"}
    assert stats["steered"]["works_for"] <= 3 and stats["steered"]["none"] <= 2  # 5 shared out: 3 + 2
    assert sum(stats["steered"].values()) + stats["topped_up"] == result.report["sources"][0]["synthesized"]
    # every seed row has its answer: the kinds come from them, the expert's first labels are the written prompts
    assert labelled == [result.report["sources"][0]["synthesized"]]


def test_unsteered_queries_mix_the_kinds_and_steered_prompts_are_cached_apart(steer_config, shown):
    plain = steer_config(synthesis_steer="none")
    first = run_teachers(prepare(plain).teaching, plain, show_progress=False)
    assert any(set(q) & set(FOUND) and set(q) & set(NONE) for q in shown)
    steered = steer_config()
    second = run_teachers(prepare(steered).teaching, steered, show_progress=False)
    assert "steered" not in first.report["sources"][0]["synthesis"]
    assert "steered" in second.report["sources"][0]["synthesis"]  # not the unsteered prompts read from the cache


def test_seeds_without_answers_get_their_kinds_from_the_expert(steer_config, tmp_path, monkeypatch, shown):
    prompts = tmp_path / "prompts.jsonl"  # a `response` in a prompts file is ignored: the expert answers them
    prompts.write_text("".join(json.dumps({"prompt": f"Works-for relations in: {t}\n", "response": "none"}) + "\n"
                               for t in [*FOUND, *NONE]))
    answers = {f"Works-for relations in: {t}\n": "none" for t in NONE}
    kinds = []
    real = teacher_labels.answer_kind
    monkeypatch.setattr(teacher_labels, "answer_kind", lambda a, p: kinds.append((a, p)) or real(a, p))
    cfg = steer_config(replay=None, sources=[{**steer_config().sources[0].model_dump(), "prompts": str(prompts)}])
    run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    assert [p for _, p in kinds] == [f"Works-for relations in: {t}\n" for t in [*FOUND, *NONE]]
    assert [a for a, _ in kinds] != [answers.get(p, "works_for") for _, p in kinds]  # the tiny expert's, not given


def test_the_preview_says_which_kinds_the_writer_imitated(steer_config):
    text = teacher_preview(steer_config(), 4)
    assert "written from seeds of each answer kind: works_for " in text and ", none " in text
    assert "written from seeds" not in teacher_preview(steer_config(synthesis_steer="none"), 4)


@pytest.fixture()
def rewritten(monkeypatch):
    """The seed part each paraphrase query asked the writer to reword (in a chat turn or as pairs to continue)."""
    parts: list[str] = []
    for name in ("paraphrase_request", "paraphrase_context"):
        real = getattr(SeedTemplate, name)

        def record(self, part, real=real):
            parts.append(part)
            return real(self, part)

        monkeypatch.setattr(SeedTemplate, name, record)
    return parts


def test_paraphrase_rewrites_one_seed_per_query_in_turn(steer_config, shown, rewritten):
    cfg = steer_config(synthesis_steer="none", synthesis_style="paraphrase",
                       sources=[{**steer_config().sources[0].model_dump(), "synthesizer": "target"}])
    result = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    seeds = [*FOUND, *NONE]
    assert not shown and len(rewritten) >= len(seeds)  # no list of shots: one seed per query
    assert rewritten == [seeds[i % len(seeds)] for i in range(len(rewritten))]
    assert result.report["sources"][0]["synthesis"]["writer"] == "target"
    # the list style's prompts are not read back for paraphrases (nor the other way round)
    listed = steer_config(synthesis_steer="none", sources=cfg.sources)
    run_teachers(prepare(listed).teaching, listed, show_progress=False)
    assert shown


def test_paraphrase_with_steering_rewrites_the_seeds_of_each_kind_in_turn(steer_config, rewritten):
    cfg = steer_config(synthesis_style="paraphrase")  # the source base writes: pairs to continue, no chat turn
    run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    found, none = list(FOUND), NONE
    assert rewritten[:6] == [found[0], none[0], found[1], none[1], found[2], none[0]]


def test_mixed_alternates_lists_and_rewordings_by_batch(steer_config, shown, rewritten):
    cfg = steer_config(synthesis_steer="none", synthesis_style="mixed", teacher_batch_size=2)
    run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    seeds = [*FOUND, *NONE]
    assert rewritten and len(shown) in (len(rewritten), len(rewritten) + 2)  # batches of 2: list, reword, list, ...
    assert rewritten == [seeds[i % len(seeds)] for i in range(len(rewritten))]


def test_the_paraphrase_request_holds_the_seed_and_its_reply_is_read_back():
    template = SeedTemplate.from_seeds([f"Works-for relations in: {t}\n" for t in [*FOUND, *NONE]])
    request = template.paraphrase_request(template.parts[0])
    assert "Text: Ann works for Acme." in request and "one line" in request
    assert template.read_paraphrase("Rewritten text: Acme employs Ann.\nSure!", chat=True) == "Acme employs Ann."
    assert template.read_paraphrase('Text: "Ann is on the staff of Acme."', chat=True) == "Ann is on the staff of Acme."
    assert template.read_paraphrase("  ", chat=True) is None
    context = template.paraphrase_context(template.parts[0])  # a base writer continues the last pair
    assert context.endswith("Text: Ann works for Acme.\nSame meaning, other words:") and context.count("Text:") == 5
    assert template.read_paraphrase(" Acme employs Ann.\n\nText: The cat sat.", chat=False) == "Acme employs Ann."


def test_the_preview_and_report_count_the_reworded_prompts(steer_config, rewritten, tmp_path):
    cfg = steer_config(synthesis_steer="none", synthesis_style="mixed", teacher_batch_size=2)
    text = teacher_preview(cfg, 4)
    assert re.search(r"written by rewording a seed: \d+ of \d+ synthesized", text)
    assert "rewording" not in teacher_preview(steer_config(synthesis_steer="none"), 4)
    reword = steer_config(synthesis_steer="none", synthesis_style="paraphrase")
    source = run_teachers(prepare(reword).teaching, reword, show_progress=False).report["sources"][0]
    assert source["synthesis"]["reworded"] == source["synthesized"] > 0


# --- `synthesis_rounds`: later rounds show the writer what it wrote before and the filters kept -------------------


def test_written_shots_draw_answer_kinds_alike_and_never_one_part_twice():
    written = Written.from_kept([(f"common {i}", "none") for i in range(9)] + [("rare", "works_for")])
    seeds = ["seed a", "seed b", "seed c", "seed d"]
    draws = [written.shots(random.Random(i), seeds, 4) for i in range(400)]
    assert all(len(d) == 4 and len(set(d)) == 4 and len(set(d) & set(seeds)) == 2 for d in draws)
    rare = sum("rare" in d for d in draws) / len(draws)
    assert 0.6 < rare < 0.9  # kinds alike: 1 - 1/2 * 1/2 = 0.75 (by rows it would be about 0.2)
    assert draws == [written.shots(random.Random(i), seeds, 4) for i in range(400)]  # seeded
    assert Written.from_kept([]) is None


def test_a_part_is_read_back_only_from_a_prompt_of_the_template():
    template = SeedTemplate.from_seeds([f"Works-for relations in: {t}\n" for t in FOUND])
    assert template.part_of(template.prompt("Zed works for Soylent.")) == "Zed works for Soylent."
    assert template.part_of("Sentiment of: great\n") is None
    assert template.part_of(template.prefix + template.suffix) is None


def test_later_rounds_show_kept_prompts_and_are_reproducible(steer_config, shown, tmp_path, monkeypatch):
    cfg = steer_config(synthesis_steer="none", synthesis_rounds=2,
                       sources=[{**steer_config().sources[0].model_dump(), "synthesize": 6}])
    first = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    report = first.report["sources"][0]
    rounds = report["synthesis"]["rounds"]
    assert len(rounds) == 2 and all(0 < r["written"] <= 3 for r in rounds)  # 6 asked: 3 a round
    assert sum(r["written"] for r in rounds) == report["synthesized"]
    assert rounds[0]["shown_kinds"] == {} and sum(rounds[1]["shown_kinds"].values()) == rounds[0]["kept"] > 0
    seeds = set(FOUND) | set(NONE)
    written = [q for q in shown if not set(q) <= seeds]
    assert written and all(len(set(q) - seeds) == 2 for q in written)  # 2 written parts + 2 seeds per later query
    kept_round_one = {prompt_text(r.prompt).removeprefix("Works-for relations in: ").removesuffix("\n")
                      for r in first.rows if r.origin == "synthesized"}
    assert all(set(q) - seeds <= kept_round_one for q in written)  # only kept rows are shown again
    assert all(set(q) <= seeds for q in shown[:len(shown) - len(written)])  # round 1: seeds only
    monkeypatch.setenv("HF_HETEROFUSION_CACHE", str(tmp_path / "fresh"))
    again = run_teachers(prepare(cfg).teaching, cfg, show_progress=False)
    assert [r.prompt for r in again.rows] == [r.prompt for r in first.rows]


def test_the_preview_shows_each_round(steer_config):
    text = teacher_preview(steer_config(synthesis_steer="none", synthesis_rounds=2), 4)
    assert re.search(r"round 1: \d written, \d kept; shown besides seeds: the seeds only", text)
    assert re.search(r"round 2: \d written, \d kept; shown besides seeds: \S", text)
    assert "round 1" not in teacher_preview(steer_config(synthesis_steer="none"), 4)


def test_rounds_need_list_synthesis_without_steering(steer_config):
    with pytest.raises(ConfigError, match="synthesis_rounds"):
        steer_config(synthesis_rounds=2)  # the fixture steers
    with pytest.raises(ConfigError, match="synthesis_style: list"):
        steer_config(synthesis_steer="none", synthesis_style="paraphrase", synthesis_rounds=3)


def test_the_preview_says_when_every_seed_got_one_answer(steer_config, monkeypatch):
    """The fit warns (`SeedsOneAnswerWarning`); the preview, which a user runs before paying for it, says so too."""
    from hf_heterofusion.data.generation import Generation
    from hf_heterofusion.teacher import run as teacher_run
    from hf_heterofusion.teacher.filters import SeedProfile

    cfg = steer_config(synthesis_steer="none", teacher_on_task_filter=True)
    assert "to all" not in teacher_preview(cfg, 3)  # the tiny expert's answers differ between seeds
    alike = SeedProfile.from_answers([Generation("none", (1,), True, -0.1) for _ in range(4)], ratio=0.5)
    monkeypatch.setattr(teacher_run, "_seed_profile", lambda *a: alike)
    text = teacher_preview(cfg, 3)
    assert re.search(r"teacher `qwen`: the expert answers `none` to all 5 seeds; .*\(\d+ of \d+ kept rows", text)
