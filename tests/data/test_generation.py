# SPDX-License-Identifier: Apache-2.0
"""Greedy decoding that retires finished rows picks the tokens `generate` picks, on every tiny family."""

import pytest

from hf_heterofusion.data.generation import generate_all, generate_batch, greedy_batch, length_batches, plain_greedy
from hf_heterofusion.data.models import load_causal_lm, load_tokenizer
from hf_heterofusion.testing.factories import FAMILIES


def _prompts(tokenizer, n=7):
    texts = [f"Question {i}: {'why ' * (i % 4)}is the sky blue?" for i in range(n)]
    return [tokenizer(t, add_special_tokens=False)["input_ids"][: 3 + 2 * i] for i, t in enumerate(texts)]


@pytest.mark.integration
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_retiring_greedy_equals_generate(family, fixture_zoo):
    base, adapter = fixture_zoo.model(family), fixture_zoo.adapter(family)
    model, tokenizer = load_causal_lm(base, adapter).eval(), load_tokenizer(base)
    prompts = _prompts(tokenizer)  # 3 to 15 tokens: every batch is left-padded
    reference = generate_batch(model, tokenizer, prompts, max_new_tokens=9)
    for ours, theirs in zip(greedy_batch(model, tokenizer, prompts, max_new_tokens=9), reference, strict=True):
        assert (ours.token_ids, ours.text, ours.finished) == (theirs.token_ids, theirs.text, theirs.finished)
        assert ours.mean_logprob == pytest.approx(theirs.mean_logprob, abs=1e-5)
    assert [g.token_ids for g in generate_all(model, tokenizer, prompts, max_new_tokens=9, batch_size=3)] == [
        g.token_ids for p in prompts for g in generate_batch(model, tokenizer, [p], max_new_tokens=9)]


@pytest.mark.integration
def test_a_row_that_ends_early_leaves_the_batch(fixture_zoo, monkeypatch):
    """Force eos on row 0 at the first step: the next forward passes carry only the other rows."""
    base, adapter = fixture_zoo.model("llama"), fixture_zoo.adapter("llama")
    model, tokenizer = load_causal_lm(base, adapter).eval(), load_tokenizer(base)
    prompts = _prompts(tokenizer, n=3)
    eos = tokenizer.eos_token_id
    forward, widths = model.forward, []

    def spy(*args, **kwargs):
        out = forward(*args, **kwargs)
        widths.append(kwargs["input_ids"].shape[0])
        if len(widths) == 1:  # prefill: make row 0 pick eos
            out.logits[0, -1, :] = -1e9
            out.logits[0, -1, eos] = 0.0
        return out

    monkeypatch.setattr(model, "forward", spy)
    answers = greedy_batch(model, tokenizer, prompts, max_new_tokens=4)
    assert answers[0].finished and answers[0].token_ids == (eos,) and answers[0].text == ""
    assert widths == [3, 2, 2, 2] and all(len(a.token_ids) == 4 for a in answers[1:] if not a.finished)


def test_length_batches_group_similar_prompts_deterministically():
    prompts = [[1] * n for n in (5, 1, 3, 1, 4)]
    assert length_batches(prompts, 2) == [[1, 3], [2, 4], [0]]


def test_a_generation_config_that_changes_greedy_goes_through_generate(fixture_zoo):
    model = load_causal_lm(fixture_zoo.model("llama"))
    assert plain_greedy(model)
    model.generation_config.repetition_penalty = 1.3
    assert not plain_greedy(model)
