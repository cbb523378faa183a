# SPDX-License-Identifier: Apache-2.0
"""The teacher's per-token signal, carried across tokenizers through characters.

A source teacher answers in *its* tokenizer; the target learns in another. Between them the only common ground is
the answer's text, so the teacher's signal is stored per character span (`TokenSignal`, tokenizer-free) and laid
onto the target's tokens of the same text (`align_signal`):

* **exact** positions: a target token covers exactly the characters of one teacher token (whitespace at either end
  ignored: byte-level BPE puts a word's leading space outside its offsets, SentencePiece inside). There the
  teacher's top-k candidates are mapped to target ids by their text (a candidate whose text is one target token)
  and the loss is an exact KL over those pieces plus one bucket for the rest of the mass;
* **uld** positions: the target token starts where a teacher token starts but ends elsewhere (the tokenizers split
  a number or a word differently). Ids cannot be matched, so the loss compares the two sorted distributions (ULD:
  Boizard et al. 2024, "Towards cross-tokenizer distillation");
* anything else gets no distillation term, only the label's cross-entropy.

The signal also carries, per teacher token, how much the expert's adapter raised its probability over the
expert's own base (`excess`, TiTok's skill signal); `align_signal` turns it into per-token loss weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hf_heterofusion.errors import ConfigError


EXACT, ULD = 1, 2  # `RowSignal.kind` values (0: no distillation term at that position)


@dataclass(frozen=True)
class TokenSignal:
    """One teacher answer, token by token, in characters of the (stripped) answer text."""

    spans: tuple[tuple[int, int] | None, ...]  # characters of each teacher token; None where a token ends mid-char
    excess: tuple[float, ...]  # log p(expert) - log p(expert's base) of each token (0.0 when unknown)
    top_pieces: tuple[tuple[str, ...], ...]  # text of each step's top-k candidates, best first
    top_logprobs: tuple[tuple[float, ...], ...]
    eos_excess: float | None = None  # the same for the eos token that ended the answer (None: no eos)
    eos_logprob: float | None = None  # the teacher's log p(eos) at the end (its confidence that the answer ends)

    def to_json(self) -> dict[str, Any]:
        return {"spans": [list(s) if s else None for s in self.spans], "excess": [round(x, 4) for x in self.excess],
                "pieces": [list(p) for p in self.top_pieces],
                "logprobs": [[round(v, 3) for v in lp] for lp in self.top_logprobs],
                "eos_excess": self.eos_excess, "eos_logprob": self.eos_logprob}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TokenSignal:
        return cls(tuple(tuple(s) if s else None for s in d["spans"]), tuple(d["excess"]),
                   tuple(tuple(p) for p in d["pieces"]), tuple(tuple(v) for v in d["logprobs"]),
                   d.get("eos_excess"), d.get("eos_logprob"))


def build_signal(tokenizer: Any, token_ids: Sequence[int], top_ids: Sequence[Sequence[int]],
                 top_logprobs: Sequence[Sequence[float]], excess: Sequence[float], *, finished: bool) -> TokenSignal:
    """The teacher-side signal of one generated answer (`token_ids` as generated, eos last when `finished`).

    Spans come from decoding growing prefixes: token i covers the characters its prefix added. A token that ends
    inside a multi-byte character decodes to U+FFFD; it and the tokens up to the one that completes the character
    get no span (they cannot line up with a target token). Candidate texts are decoded in context (the prefix plus
    the candidate), so a SentencePiece word piece keeps its leading space.
    """
    n = len(token_ids) - (1 if finished else 0)
    ids = list(token_ids[:n])
    text = tokenizer.decode(ids, skip_special_tokens=True)
    lead = len(text) - len(text.lstrip())
    spans: list[tuple[int, int] | None] = []
    pieces: list[tuple[str, ...]] = []
    prev = ""
    for i in range(n):
        cur = tokenizer.decode(ids[:i + 1], skip_special_tokens=True)
        clean = cur.startswith(prev) and not cur.endswith("\ufffd")
        spans.append((len(prev) - lead, len(cur) - lead) if clean else None)
        pieces.append(tuple(_continuation(tokenizer, ids[:i], prev, cand) for cand in top_ids[i]))
        if clean:
            prev = cur
    eos = (excess[n], top_logprobs[n][0] if top_logprobs[n] else None) if finished and len(excess) > n else (None, None)
    return TokenSignal(tuple(spans), tuple(excess[:n]), tuple(pieces), tuple(tuple(v) for v in top_logprobs[:n]),
                       eos[0], eos[1])


def _continuation(tokenizer: Any, prefix: list[int], prefix_text: str, candidate: int) -> str:
    full = tokenizer.decode(prefix + [candidate], skip_special_tokens=True)
    return full[len(prefix_text):] if full.startswith(prefix_text) else tokenizer.decode([candidate])


@dataclass(frozen=True)
class RowSignal:
    """Per input position of one encoded row (same length as its `input_ids`): what the loss adds to the label's
    cross-entropy. Labels shift inside the loss, as transformers' does: entry j is about predicting token j."""

    weights: tuple[float, ...]  # cross-entropy weight of the label at j (1.0 = plain SFT)
    kind: tuple[int, ...]  # 0 none, EXACT or ULD
    ids: tuple[tuple[int, ...], ...]  # target ids of the teacher's candidates (-1: no single target token)
    logprobs: tuple[tuple[float, ...], ...]  # the teacher's log-probs of those candidates
    scale: tuple[float, ...]  # weight of the distillation term at j

    @classmethod
    def plain(cls, length: int) -> RowSignal:
        return cls((1.0,) * length, (0,) * length, ((),) * length, ((),) * length, (0.0,) * length)


def _trim(text: str, span: tuple[int, int]) -> tuple[int, int] | None:
    s, e = span
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return (s, e) if s < e else None


class PieceMap:
    """Teacher candidate text -> the target id it is, when it is exactly one target token (memoised)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer, self.memo = tokenizer, {}

    def __call__(self, piece: str) -> int:
        if piece not in self.memo:
            ids = self.tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
            self.memo[piece] = int(ids[0]) if len(ids) == 1 else -1
        return self.memo[piece]


def align_signal(signal: TokenSignal, response: str, tokenizer: Any, response_ids: Sequence[int], start: int,
                 length: int, *, kd_scale: float, skill_weights: bool, pieces: PieceMap) -> RowSignal:
    """Lay `signal` (on `response`'s characters) onto the target row whose response tokens start at `start`.

    `response_ids` are the target's response tokens as `encoding.encode_example` made them (eos last when the
    tokenizer has one). Needs a fast tokenizer (character offsets).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("token-level distillation needs a fast (Rust) tokenizer for the target, to map characters "
                          "to tokens; set `teacher_kd_weight: 0` and `teacher_token_weighting: none`")
    enc = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    offsets = list(enc["offset_mapping"])
    teacher = {}
    starts = {}
    for i, span in enumerate(signal.spans):
        trimmed = _trim(response, span) if span and 0 <= span[0] <= span[1] <= len(response) else None
        if trimmed:
            teacher.setdefault(trimmed, i)
            starts.setdefault(trimmed[0], i)
    weights, kind, ids, logprobs, scale = ([1.0] * length, [0] * length, [()] * length, [()] * length,
                                           [0.0] * length)
    excess = [0.0] * length
    has_eos = len(response_ids) == len(offsets) + 1
    for j, span in enumerate(offsets[:len(response_ids)]):
        pos = start + j
        trimmed = _trim(response, tuple(span)) if pos < length else None
        if trimmed is None:
            continue
        excess[pos] = max((signal.excess[i] for (a, b), i in teacher.items() if a < trimmed[1] and b > trimmed[0]),
                          default=0.0)
        i = teacher.get(trimmed)
        if i is not None and kd_scale:
            mapped = _merge_ids([pieces(p) for p in signal.top_pieces[i]], signal.top_logprobs[i])
            if mapped:
                kind[pos], scale[pos] = EXACT, kd_scale
                ids[pos], logprobs[pos] = tuple(mapped), tuple(mapped.values())
                continue
        i = starts.get(trimmed[0])
        if i is not None and kd_scale:
            kind[pos], ids[pos], logprobs[pos], scale[pos] = ULD, (-1,) * len(signal.top_logprobs[i]), \
                signal.top_logprobs[i], kd_scale
    eos_pos = start + len(response_ids) - 1
    if has_eos and eos_pos < length and signal.eos_excess is not None:
        excess[eos_pos] = signal.eos_excess
    if skill_weights:
        span_end = min(length, start + len(response_ids))
        weights[start:span_end] = skill_token_weights(excess[start:span_end])
    return RowSignal(tuple(weights), tuple(kind), tuple(ids), tuple(logprobs), tuple(scale))


def _merge_ids(ids: Sequence[int], logprobs: Sequence[float]) -> dict[int, float]:
    """Target id -> teacher log-prob, candidates that are the same target token merged (their mass added);
    candidates with no single target token are left out (their mass is the loss's remainder bucket)."""
    out: dict[int, float] = {}
    for i, lp in zip(ids, logprobs):
        if i >= 0:
            out[i] = lp if i not in out else math.log(math.exp(out[i]) + math.exp(lp))
    return out


def skill_token_weights(excess: Sequence[float]) -> list[float]:
    """TiTok-style weights of a row's response tokens: half of each token's weight is plain (every token of the
    answer must still be produced: an entity the base copies anyway), the other half is shared in proportion to
    how much the expert's adapter raised the token over its base (negative raises count 0). Mean 1, so a row's
    total weight is unchanged; a row where the adapter changed nothing (a placebo teacher) keeps 1 each."""
    raised = [max(0.0, x) for x in excess]
    total = sum(raised)
    if not raised or total <= 1e-6:
        return [1.0] * len(excess)
    return [0.5 + 0.5 * len(raised) * r / total for r in raised]


__all__ = ["EXACT", "ULD", "PieceMap", "RowSignal", "TokenSignal", "align_signal", "build_signal",
           "skill_token_weights"]
