# SPDX-License-Identifier: Apache-2.0
"""The teacher's token signal crosses tokenizers through characters: tokenizer pairs that split digits,
whitespace and multi-byte characters differently."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hf_heterofusion.data.soft_targets import (
    EXACT,
    ULD,
    PieceMap,
    TokenSignal,
    align_signal,
    build_signal,
    skill_token_weights,
)
from hf_heterofusion.testing.tokenizer import make_tokenizer


def _sentencepiece_like() -> PreTrainedTokenizerFast:
    """A Metaspace BPE (word pieces carry their leading space, as Gemma's and Llama-2's do)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Metaspace(), decoders.ByteFallback(), decoders.Fuse()])
    words = ["Paris lives in Berlin", "born 1984 in Madrid", "John Smith works for Acme", "positive negative"] * 20
    tok.train_from_iterator(words, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "</s>"],
                                                      show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")


BYTES = make_tokenizer(vocab_size=262)  # no merges: one token per byte (digits, and half a multi-byte char)
MERGED = make_tokenizer(vocab_size=600)
PIECES = _sentencepiece_like()


def _signal(tokenizer, text, *, excess=None):
    """A teacher signal whose top-1 candidate is the token it produced (log-prob -0.1) plus two others."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    tops = [[i, (i + 1) % 200, (i + 2) % 200] for i in ids]
    lps = [[-0.1, -2.5, -3.5]] * len(ids)
    excess = excess or [0.5] * len(ids)
    return build_signal(tokenizer, ids, tops, lps, excess, finished=True), tokenizer.decode(ids[:-1],
                                                                                      skip_special_tokens=True)


def _align(signal, response, target, **kw):
    ids = target(response, add_special_tokens=False)["input_ids"] + [target.eos_token_id]
    start = 2  # as if two prompt tokens came first
    return align_signal(signal, response, target, ids, start, start + len(ids), pieces=PieceMap(target),
                        **{"kd_scale": 1.0, "skill_weights": False, **kw}), ids, start


@pytest.mark.parametrize("teacher", [BYTES, MERGED, PIECES], ids=["bytes", "bpe", "metaspace"])
def test_spans_cover_the_answer_text_in_order(teacher):
    text = "born 1984 in Madrid"
    signal, decoded = _signal(teacher, text)
    covered = "".join(decoded[s:e] for s, e in (sp for sp in signal.spans if sp))
    assert covered.strip() == decoded.strip() == text
    assert len(signal.spans) == len(signal.top_pieces) == len(signal.excess)


def test_the_same_tokenizer_aligns_every_token_exactly_and_maps_candidates_back():
    signal, text = _signal(MERGED, "John Smith works for Acme")
    row, ids, start = _align(signal, text, MERGED)
    for j, token in enumerate(ids[:-1]):
        if MERGED.decode([token]).strip():  # a token of whitespace alone has nothing to align
            assert row.kind[start + j] == EXACT
            assert row.ids[start + j][0] == token  # the produced token is its own first candidate
            assert row.logprobs[start + j][0] == pytest.approx(-0.1)
    assert row.kind[start + len(ids) - 1] == 0  # eos: the label's cross-entropy only


def test_digits_split_differently_get_uld_where_they_start_together_and_nothing_inside():
    """The byte tokenizer writes 1984 as four tokens; if the merged one has `19`+`84` or `1984`, their first
    digit starts together (ULD) and the inner digits have no teacher token of the same characters."""
    text = "born 1984 in Madrid"
    signal, decoded = _signal(BYTES, text)
    row, ids, start = _align(signal, decoded, MERGED)
    offsets = MERGED(decoded, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    teacher_spans = {sp for sp in signal.spans if sp}
    for j, (s, e) in enumerate(offsets):
        piece = decoded[s:e].strip()
        if not piece:
            continue
        kind = row.kind[start + j]
        lo = s + (len(decoded[s:e]) - len(decoded[s:e].lstrip()))
        if (lo, e) in teacher_spans:
            assert kind == EXACT, piece
        elif any(a == lo for a, _ in teacher_spans):
            assert kind == ULD and all(i == -1 for i in row.ids[start + j]), piece
        else:
            assert kind == 0, piece
    assert ULD in row.kind  # the pair does split some words differently


def test_leading_space_inside_or_outside_the_token_still_aligns():
    """Metaspace pieces hold their leading space (`▁Paris`), byte-level BPE offsets leave it out."""
    signal, text = _signal(PIECES, "Paris lives in Berlin")
    row, ids, start = _align(signal, text, MERGED)
    words = {text[s:e].strip(): row.kind[start + j]
             for j, (s, e) in enumerate(MERGED(text, add_special_tokens=False,
                                               return_offsets_mapping=True)["offset_mapping"])}
    whole = [w for w in ("Paris", "lives", "in", "Berlin") if w in words]
    assert whole and all(words[w] == EXACT for w in whole), words


def test_a_token_ending_inside_a_multibyte_character_has_no_span():
    signal, text = _signal(BYTES, "Köln und Zürich")
    assert text == "Köln und Zürich"
    assert None in signal.spans  # the first byte of ö and of ü
    assert all("\ufffd" not in text[s:e] for s, e in (sp for sp in signal.spans if sp))
    row, ids, start = _align(signal, text, MERGED)
    assert len(row.kind) == start + len(ids)


def test_skill_weights_follow_the_adapters_excess_and_keep_the_mean():
    weights = skill_token_weights([2.0, 0.0, -1.0, 2.0])
    assert sum(weights) / len(weights) == pytest.approx(1.0)
    assert weights[0] == weights[3] > weights[1] == weights[2] == 0.5
    assert skill_token_weights([0.0, 0.0, -0.3]) == [1.0, 1.0, 1.0]  # a placebo teacher: plain SFT


def test_skill_weights_reach_the_target_tokens_through_characters():
    text = "positive negative"
    ids = PIECES(text, add_special_tokens=False)["input_ids"]
    excess = [3.0 if "negative" in PIECES.decode(ids[:i + 1]) and "negative" not in PIECES.decode(ids[:i]) else 0.0
              for i in range(len(ids))] + [0.0]
    signal, decoded = _signal(PIECES, text, excess=excess)
    row, t_ids, start = _align(signal, decoded, MERGED, skill_weights=True, kd_scale=0.0)
    heavy = {decoded[s:e].strip() for j, (s, e) in enumerate(MERGED(decoded, add_special_tokens=False,
             return_offsets_mapping=True)["offset_mapping"]) if row.weights[start + j] > 1.0}
    assert heavy and all(h in "negative" for h in heavy), heavy
    assert set(row.kind) == {0}  # kd_scale 0: weights only


def test_signal_round_trips_through_json():
    signal, _ = _signal(MERGED, "Paris; London")
    again = TokenSignal.from_json(signal.to_json())
    assert again.spans == signal.spans and again.top_pieces == signal.top_pieces
    assert [round(x, 3) for t in again.top_logprobs for x in t] == [round(x, 3) for t in signal.top_logprobs
                                                                     for x in t]


def test_a_slow_tokenizer_is_a_clear_error():
    from hf_heterofusion.errors import ConfigError

    class Slow:
        is_fast = False

    signal, text = _signal(MERGED, "x")
    with pytest.raises(ConfigError, match="fast"):
        align_signal(signal, text, Slow(), [1], 0, 1, kd_scale=1.0, skill_weights=False, pieces=PieceMap(Slow()))
