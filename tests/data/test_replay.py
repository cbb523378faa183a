# SPDX-License-Identifier: Apache-2.0
"""Replay data: JSONL parsing and its errors, and `replay_balance: task` (encoding: test_encoding.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_heterofusion.data.replay import ReplayExample, balance_tasks, examples_from_rows, load_replay
from hf_heterofusion.errors import ReplayDataError


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "replay.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ load_replay


def test_load_three_shapes_and_skip_blank_lines(tmp_path):
    path = _write(
        tmp_path,
        json.dumps({"prompt": "Persons in: Ann met Bob.\n", "response": "person: Ann", "task": "ner"}),
        "",
        "   ",
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
        json.dumps({"instruction": "Translate", "input": "chat", "output": "cat"}),
        json.dumps({"instruction": "Say yes", "input": "", "output": "yes"}),
    )
    examples = load_replay(path)
    assert examples == (
        ReplayExample("Persons in: Ann met Bob.\n", "person: Ann", 1),
        ReplayExample(({"role": "user", "content": "hi"},), "hello", 4),
        ReplayExample("Translate\n\nchat", "cat", 5),
        ReplayExample("Say yes", "yes", 6),
    )
    assert [e.is_chat for e in examples] == [False, True, False, False]


def test_alpaca_with_history_becomes_chat(tmp_path):
    row = {"instruction": "Q3", "output": "A3", "system": "Be brief.", "history": [["Q1", "A1"], ["Q2", "A2"]]}
    (example,) = load_replay(_write(tmp_path, json.dumps(row)))
    assert example.prompt == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
        {"role": "user", "content": "Q3"},
    )
    assert example.response == "A3"


def test_missing_file(tmp_path):
    with pytest.raises(ReplayDataError, match=r"replay file .*nope\.jsonl does not exist"):
        load_replay(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "replay.jsonl"
    path.write_text(content)
    with pytest.raises(ReplayDataError, match=r"replay\.jsonl is empty; add at least one example"):
        load_replay(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"prompt": "a", "response": ',
            r"replay\.jsonl:2: not valid JSON \(.* at column \d+\); write one JSON object",
        ),
        ("[", r"replay\.jsonl:2: not valid JSON .*looks like a JSON array"),
        ('["a", "b"]', r"replay\.jsonl:2: expected a JSON object, got an array; expected `prompt` \+ `response`"),
        ('"text"', r"replay\.jsonl:2: expected a JSON object, got a string"),
        ('{"question": "a", "answer": "b"}', r"replay\.jsonl:2: row has keys `question`, `answer`; expected `prompt`"),
        ('{"prompt": "a"}', r"replay\.jsonl:2: row lacks `response`"),
        ('{"instruction": "a"}', r"replay\.jsonl:2: row lacks `output`"),
        ('{"prompt": "a", "response": 3}', r"replay\.jsonl:2: `response` must be a string, got a number"),
        ('{"prompt": "a", "response": ""}', r"replay\.jsonl:2: empty response"),
        ('{"prompt": "a", "response": "  "}', r"replay\.jsonl:2: empty response"),
        ('{"instruction": "a", "output": ""}', r"replay\.jsonl:2: empty response"),
        ('{"messages": []}', r"replay\.jsonl:2: `messages` must be a non-empty list"),
        ('{"messages": [{"role": "user"}]}', r"replay\.jsonl:2: `messages\[0\]` must be an object with string"),
        (
            '{"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}',
            r"replay\.jsonl:2: the last message has role `user`; it must be the `assistant` response",
        ),
        ('{"messages": [{"role": "assistant", "content": "x"}]}', r"replay\.jsonl:2: `messages` has only the"),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}',
            r"replay\.jsonl:2: empty response",
        ),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, json.dumps({"prompt": "ok", "response": "ok"}), line)
    with pytest.raises(ReplayDataError, match=message) as info:
        load_replay(path)
    assert "\n" not in str(info.value)


def test_examples_from_rows_names_row_index():
    with pytest.raises(ReplayDataError, match=r"row 2: row lacks `response`"):
        examples_from_rows([{"prompt": "a", "response": "b"}, {"prompt": "c"}])
    with pytest.raises(ReplayDataError, match="no replay examples"):
        examples_from_rows([])


# ----------------------------------------------------------------------------------------- replay_balance: task


def _rows(task: str | None, n: int) -> list[ReplayExample]:
    return [ReplayExample(f"{task} prompt {i}", f"answer {i}", task=task) for i in range(n)]


def test_balance_tasks_gives_every_task_the_largest_groups_share():
    """16 labelled anchor rows next to 48 teacher rows per source: each task ends up 48 rows, all rows kept."""
    examples = _rows("anchor", 16) + _rows("topic", 48) + _rows("sentiment", 10) + _rows(None, 5)
    rows, summary = balance_tasks(examples, seed=0)
    counts = {t: sum(r.task == t for r in rows) for t in ("anchor", "topic", "sentiment", None)}
    assert counts == {"anchor": 48, "topic": 48, "sentiment": 48, None: 48}
    assert summary == {"mode": "task", "groups": {"anchor": 16, "topic": 48, "sentiment": 10, "None": 5},
                       "rows_per_group": 48, "rows": 192}
    for task, n in (("anchor", 16), ("sentiment", 10), (None, 5)):
        mine = [r for r in rows if r.task == task]
        assert len({r.prompt for r in mine}) == n  # every row of the group, at least once
        per_row = [sum(r.prompt == p for r in mine) for p in {r.prompt for r in mine}]
        assert max(per_row) - min(per_row) <= 1  # whole repeats, then a top-up of distinct rows
    assert rows == balance_tasks(examples, seed=0)[0]
    assert rows != balance_tasks(examples, seed=1)[0]  # the top-up subset is seeded


def test_balance_tasks_leaves_a_balanced_set_as_it_is():
    examples = _rows("a", 3) + _rows("b", 3)
    assert balance_tasks(examples, seed=0)[0] == tuple(examples)


def test_task_answer_balance_draws_each_answer_kind_of_a_task_alike():
    """A teacher's works-for rows that answer `none` 27 times and find a relation 9 times: `task_answer` teaches the
    relation as often as its absence, and every task still gets one equal share."""
    rel = [ReplayExample(f"Works-for relations in: P{i} visited Acme.", "none", task="rel") for i in range(27)]
    rel += [ReplayExample(f"Works-for relations in: P{i} works for Acme.", f"works_for: P{i}, Acme", task="rel")
            for i in range(9)]
    anchor = [ReplayExample(f"Persons in: P{i} ran.", f"person: P{i}", task="anchor") for i in range(16)]
    odd = ReplayExample("Works-for relations in: Q ran.", "works_for: Q, none", task="rel")  # a teacher's odd answer
    labelled = frozenset(map(id, [rel[0], rel[-1], anchor[0]]))  # the seeds: one `none`, one found
    rows, summary = balance_tasks(rel + [odd] + anchor, seed=0, by_answer=True, labelled=labelled)
    found = [r for r in rows if r.task == "rel" and r.response.startswith("works_for: P")]
    assert len(found) == sum(r.task == "rel" and r.response == "none" for r in rows) == 27
    assert len({r.prompt for r in found}) == 9  # each found row three times
    assert rows.count(odd) == 1  # a kind no labelled row shows is not drawn up
    assert sum(r.task == "anchor" for r in rows) == 55 == summary["rows_per_group"]
    assert summary["mode"] == "task_answer"
    assert summary["answer_kinds"]["rel"] == {"none": 27, "works_for": 9, "none works_for": 1}
    assert summary["answer_kinds"]["anchor"] == {"person": 16}  # names copied from the prompt are not the kind
    plain, _ = balance_tasks(rel + anchor, seed=0)
    assert sum(r.task == "rel" and r.response != "none" for r in plain) == 9  # `task` alone keeps the 3:1 mix
    unlabelled, _ = balance_tasks(rel + anchor, seed=0, by_answer=True)
    assert sum(r.task == "rel" and r.response != "none" for r in unlabelled) == 9  # no labelled row: no kind draw
