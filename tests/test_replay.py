# SPDX-License-Identifier: Apache-2.0
"""Replay data: JSONL parsing and its errors, prompt masking for the three row shapes, truncation, collation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_heterofusion.errors import HeteroFusionWarning, ReplayDataError
from hf_heterofusion.replay import (
    IGNORE_INDEX,
    ReplayExample,
    balance_tasks,
    collate,
    encode_example,
    encode_prompt,
    encode_replay,
    examples_from_rows,
    load_replay,
    pad_token_id,
)
from hf_heterofusion.testing.factories import make_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "replay.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


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


# ------------------------------------------------------------------------------------------------- encoding


def test_plain_prompt_masking_is_exact(tokenizer):
    example = ReplayExample("Persons in: Ann met Bob.\n", "person: Ann; person: Bob")
    input_ids, labels, truncated = encode_example(example, tokenizer, max_length=512)
    prompt = [tokenizer.bos_token_id, *_ids(tokenizer, example.prompt)]
    response = [*_ids(tokenizer, example.response), tokenizer.eos_token_id]
    assert not truncated
    assert input_ids == prompt + response
    assert labels == [IGNORE_INDEX] * len(prompt) + response
    assert encode_prompt(example, tokenizer) == prompt


def test_alpaca_masking(tokenizer, tmp_path):
    (example,) = load_replay(_write(tmp_path, json.dumps({"instruction": "Sum", "input": "1 2", "output": "3"})))
    input_ids, labels, _ = encode_example(example, tokenizer, max_length=512)
    n_prompt = 1 + len(_ids(tokenizer, "Sum\n\n1 2"))
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == input_ids[n_prompt:] == [*_ids(tokenizer, "3"), tokenizer.eos_token_id]


def test_chat_masking_uses_the_template(tokenizer):
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Persons in: Ann met Bob."})
    example = ReplayExample(messages, "person: Ann; person: Bob")
    input_ids, labels, _ = encode_example(example, tokenizer, max_length=512)
    rendered = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    prompt = _ids(tokenizer, rendered)
    assert prompt.count(tokenizer.bos_token_id) == 1  # from the template, not added a second time
    assert tokenizer.decode(input_ids) == rendered + "person: Ann; person: Bob<|eos|>"
    supervised = [tok for tok, lab in zip(input_ids, labels) if lab != IGNORE_INDEX]
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert supervised == input_ids[len(prompt) :] == [*_ids(tokenizer, example.response), tokenizer.eos_token_id]


def test_chat_without_template_is_an_error(tokenizer):
    bare = make_tokenizer()
    bare.chat_template = None
    example = ReplayExample(({"role": "user", "content": "hi"},), "hello", line=7)
    with pytest.raises(ReplayDataError, match="line 7 is a chat .* has no chat template"):
        encode_example(example, bare, 64)


def test_truncation_drops_prompt_start_but_keeps_bos(tokenizer):
    example = ReplayExample("one two three four five six seven eight nine ten\n", "ok")
    full_ids, _, _ = encode_example(example, tokenizer, 512)
    response = [*_ids(tokenizer, "ok"), tokenizer.eos_token_id]
    input_ids, labels, truncated = encode_example(example, tokenizer, 8)
    assert truncated and len(input_ids) == 8
    assert input_ids[0] == tokenizer.bos_token_id
    assert input_ids[1:] == full_ids[len(full_ids) - 7 :]  # the end of the prompt survives, then the response
    assert labels == [IGNORE_INDEX] * (8 - len(response)) + response


def test_truncation_of_a_too_long_response(tokenizer):
    example = ReplayExample("hi\n", "alpha beta gamma delta epsilon zeta eta theta")
    response = _ids(tokenizer, example.response)
    input_ids, labels, truncated = encode_example(example, tokenizer, 6)
    assert truncated
    assert input_ids == [tokenizer.bos_token_id, *response[:5]]  # the response loses its end (and eos)
    assert labels == [IGNORE_INDEX, *response[:5]]


def test_encode_replay_warns_once_with_the_count(tokenizer, tmp_path):
    rows = [{"prompt": "short\n", "response": "a"}] * 3 + [{"prompt": "x " * 40, "response": "b"}] * 2
    path = _write(tmp_path, *(json.dumps(row) for row in rows))
    examples = load_replay(path)
    with pytest.warns(HeteroFusionWarning) as record:
        encoded = encode_replay(examples, tokenizer, max_length=16)
    assert len(record) == 1
    assert str(record[0].message) == (
        "2 of 5 replay examples exceed max_length=16 tokens and were truncated (lines 4, 5); "
        "raise `max_length` to keep them whole"
    )
    assert len(encoded) == 5 and all(len(ids) <= 16 for ids, _ in encoded)


def test_encode_replay_without_truncation_is_silent(tokenizer):
    examples = [ReplayExample("a\n", "b"), ReplayExample("c\n", "d")]
    encoded = encode_replay(examples, tokenizer, 64)  # pytest config turns any HeteroFusionWarning into an error
    assert [ids for ids, _ in encoded] == [encode_example(e, tokenizer, 64)[0] for e in examples]


def test_collate_right_pads(tokenizer):
    batch = [([5, 6, 7], [-100, 6, 7]), ([8, 9], [-100, 9])]
    out = collate(batch, pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert all(t.dtype == torch.long for t in out.values())
    assert pad_token_id(tokenizer) == tokenizer.pad_token_id
    with pytest.raises(ValueError, match="empty batch"):
        collate([], 0)


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
