# SPDX-License-Identifier: Apache-2.0
"""Replay encoding: prompt masking for the three row shapes, truncation, the counted warning, collation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_heterofusion.data.encoding import collate, encode_example, encode_prompt, encode_replay, pad_token_id
from hf_heterofusion.data.replay import IGNORE_INDEX, ReplayExample, load_replay
from hf_heterofusion.errors import HeteroFusionWarning, ReplayDataError
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
