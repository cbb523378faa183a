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


@pytest.mark.integration
def test_top_k_log_probs_come_from_the_same_pass_and_change_no_token(fixture_zoo):
    """`top_k` adds each step's k best log-probs (what token-level distillation reads) without changing a label;
    the retiring path and `generate` agree on them, and the chosen token is the first candidate (greedy)."""
    base, adapter = fixture_zoo.model("qwen2"), fixture_zoo.adapter("qwen2")
    model, tokenizer = load_causal_lm(base, adapter).eval(), load_tokenizer(base)
    prompts = _prompts(tokenizer, n=5)
    plain = greedy_batch(model, tokenizer, prompts, max_new_tokens=7)
    ours = greedy_batch(model, tokenizer, prompts, max_new_tokens=7, top_k=4)
    theirs = generate_batch(model, tokenizer, prompts, max_new_tokens=7, top_k=4)
    for p, o, t in zip(plain, ours, theirs, strict=True):
        assert p.token_ids == o.token_ids == t.token_ids and not p.top_ids
        assert len(o.top_ids) == len(o.token_ids) == len(o.token_logprobs) and all(len(c) == 4 for c in o.top_ids)
        assert [c[0] for c in o.top_ids] == list(o.token_ids)
        assert o.top_ids == t.top_ids
        assert [v for c in o.top_logprobs for v in c] == pytest.approx([v for c in t.top_logprobs for v in c], abs=1e-4)
        assert sum(o.token_logprobs) / len(o.token_logprobs) == pytest.approx(o.mean_logprob)


@pytest.mark.integration
def test_score_answers_gives_the_log_probs_generation_saw(fixture_zoo):
    from hf_heterofusion.data.generation import score_answers

    base, adapter = fixture_zoo.model("llama"), fixture_zoo.adapter("llama")
    model, tokenizer = load_causal_lm(base, adapter).eval(), load_tokenizer(base)
    prompts = _prompts(tokenizer, n=4)
    gens = greedy_batch(model, tokenizer, prompts, max_new_tokens=6, top_k=1)
    scored = score_answers(model, tokenizer, prompts, [g.token_ids for g in gens])
    for g, s in zip(gens, scored, strict=True):
        assert s == pytest.approx(list(g.token_logprobs), abs=1e-4)


@pytest.mark.integration
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_prefill_projects_only_the_last_prompt_position(family, fixture_zoo):
    """The vocabulary projection of the prefill gets one contiguous row per prompt (a strided slice would make
    `F.linear` a batched matmul over a copy of the weight per row), and every decoding step one row per live row."""
    base, adapter = fixture_zoo.model(family), fixture_zoo.adapter(family)
    model, tokenizer = load_causal_lm(base, adapter).eval(), load_tokenizer(base)
    prompts = _prompts(tokenizer, n=4)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: seen.append((tuple(args[0].shape), args[0].is_contiguous())))
    try:
        greedy_batch(model, tokenizer, prompts, max_new_tokens=3)
    finally:
        hook.remove()
    assert seen and all(shape[1] == 1 and contiguous for shape, contiguous in seen)
    assert seen[0][0][0] == len(prompts)
