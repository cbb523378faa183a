# SPDX-License-Identifier: Apache-2.0
"""Synthetic tasks: determinism, disjoint splits, answer formats and hand-computed scores."""

from __future__ import annotations

import random

import pytest

from hf_heterofusion.data.replay import load_replay
from hf_heterofusion.errors import ConfigError
from hf_heterofusion.examples.synthetic import (
    NONE_ANSWER,
    TASK_NAMES,
    as_chat,
    get_task,
    make_corpus,
    make_splits,
    parse_answer,
    score,
    write_jsonl,
)


def test_at_least_six_tasks_of_both_kinds():
    assert len(TASK_NAMES) >= 6
    kinds = {get_task(name).kind for name in TASK_NAMES}
    assert kinds == {"extraction", "classification"}


@pytest.mark.parametrize("vocab", ["tiny", "full"])
@pytest.mark.parametrize("name", TASK_NAMES)
def test_splits_are_deterministic_and_disjoint(name, vocab):
    task = get_task(name, vocab=vocab)
    train, replay, test = make_splits(task, seed=3, n_train=120, n_replay=30, n_test=40)
    assert (train, replay, test) == make_splits(get_task(name, vocab=vocab), 3, 120, 30, 40)
    assert (len(train), len(replay), len(test)) == (120, 30, 40)
    prompts = [row["prompt"] for row in train + replay + test]
    assert len(set(prompts)) == len(prompts)
    assert make_splits(task, 4, 120, 30, 40)[0] != train
    for row in train + replay + test:
        assert row["task"] == name and row["response"] and row["prompt"].endswith("\n")
        if task.kind == "classification":
            assert row["response"] in task.labels
        else:
            assert row["response"] == NONE_ANSWER or parse_answer(row["response"])
        assert len(row["response"]) <= 40  # short answers, so tiny models can learn them


def test_tiny_vocabulary_is_small():
    words = set()
    for name in TASK_NAMES:
        task = get_task(name, vocab="tiny")
        for row in make_splits(task, 0, 200, 0, 0)[0]:
            words.update(row["prompt"].replace(".", " ").replace("|", " ").split())
    assert len(words) < 100


def test_answer_formats():
    rng = random.Random(0)
    seen = {name: {get_task(name).sample(rng)[1] for _ in range(200)} for name in TASK_NAMES}
    assert any(a.startswith("person: ") and "; person: " in a for a in seen["ner_person"])
    assert any(a.startswith("location: ") for a in seen["ner_location"])
    assert any(a.startswith("works_for: ") and ", " in a for a in seen["relation_works_for"])
    assert any(a.startswith("lives_in: ") for a in seen["relation_lives_in"])
    assert NONE_ANSWER in seen["relation_works_for"]
    assert seen["sentiment"] == {"positive", "negative"}
    assert seen["entity_typing"] == {"person", "location", "organization"}


def test_too_many_examples_for_the_vocabulary():
    with pytest.raises(ConfigError, match="produced only .* distinct prompts, 5000 wanted"):
        make_splits(get_task("topic", vocab="tiny"), 0, 5000, 0, 0)


def test_unknown_task_and_vocab():
    with pytest.raises(ConfigError, match="unknown synthetic task `ner_animal`; choose one of ner_person"):
        get_task("ner_animal")
    with pytest.raises(ConfigError, match="unknown vocabulary `huge`"):
        get_task("topic", vocab="huge")


def test_rows_round_trip_through_jsonl(tmp_path):
    train, _, _ = make_splits(get_task("relation_works_for"), 0, 5, 0, 0)
    examples = load_replay(write_jsonl(train, tmp_path / "sub" / "train.jsonl"))
    assert [(e.prompt, e.response) for e in examples] == [(r["prompt"], r["response"]) for r in train]
    chat = load_replay(write_jsonl(as_chat(train), tmp_path / "chat.jsonl"))
    assert chat[0].prompt == ({"role": "user", "content": train[0]["prompt"].rstrip("\n")},)
    assert chat[0].response == train[0]["response"]


def test_corpus_has_no_task_answers():
    corpus = make_corpus(0, 300, vocab="tiny")
    assert corpus == make_corpus(0, 300, vocab="tiny")
    assert not any(":" in line for line in corpus)
    assert any(line.count(".") == 2 for line in corpus)  # some lines repeat their sentence


# ---------------------------------------------------------------------------------------------------- scoring


def test_parse_answer():
    assert parse_answer("person: Alice; person: Bob") == {("person", "alice"), ("person", "bob")}
    assert parse_answer(" works_for: Alice , Acme.\nperson: X") == {("works_for", "alice", "acme")}
    assert parse_answer("none") == parse_answer("") == parse_answer("garbage; :x; y:") == frozenset()


def test_perfect_scores():
    for name in TASK_NAMES:
        _, _, test = make_splits(get_task(name), 0, 0, 0, 30)
        refs = [row["response"] for row in test]
        assert score(name, refs, refs) == 100.0


def test_micro_f1_by_hand():
    references = ["person: Alice; person: Bob", "person: Carol", "none"]
    predictions = ["person: alice; person: Dan", "none", "person: Eve"]
    # tp = 1 (alice); predicted = 3 (alice, dan, eve); gold = 3 (alice, bob, carol)
    # P = 1/3, R = 1/3, F1 = 1/3
    assert score("ner_person", predictions, references) == pytest.approx(100 / 3)
    # tp = 2, predicted = 2, gold = 3: P = 1, R = 2/3, F1 = 0.8
    assert score("ner_person", ["person: Alice; person: Bob", "", ""], references) == pytest.approx(80.0)
    assert score("ner_person", ["none"], ["none"]) == 100.0
    assert score("ner_person", ["person: Bob"], ["none"]) == 0.0
    # relations must match every argument
    assert score("relation_works_for", ["works_for: Alice, Hooli"], ["works_for: Alice, Acme"]) == 0.0


def test_accuracy_by_hand():
    task = get_task("sentiment")
    assert score(task, ["Positive.", "negative", "positive\nmore"], ["positive", "positive", "positive"]) == (
        pytest.approx(200 / 3)
    )


def test_score_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score("topic", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty test set"):
        score("topic", [], [])
