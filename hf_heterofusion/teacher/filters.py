# SPDX-License-Identifier: Apache-2.0
"""Which teacher answers are kept: a bad label teaches the target a bad skill, so answers that carry no signal
are dropped and counted (per source, in the report and the card), never silently.

In order, the first that applies names the reason:

* `empty`: nothing but whitespace;
* `truncated`: the answer hit `teacher_max_new_tokens` without eos (`teacher_drop_truncated`), so it is cut mid-way;
* `degenerate`: some n-gram of `teacher_repeat_ngram` tokens occurs 3 or more times (a decoding loop);
* `low_logprob`: the mean token log-probability under the teacher is below `teacher_min_logprob` (the teacher
  itself is unsure).

Synthesized prompts can pass one more, off by default (`teacher_min_token_prob`):

* `unsure`: some token of the expert's greedy answer had probability below `teacher_min_token_prob`. On a written
  prompt that states no case of the skill, the expert hesitates between its answers and its pick is mostly wrong
  (real Gemma-3 works-for expert, benchmark v8: of its relations found on written prompts, 20 of 34 were right
  where the least likely token had p >= 0.9, 3 of 37 below: `Steve is on vacation.` -> `works_for: Steve, Steve`
  at p 0.80). Prompts the user gives are not judged by it: there the answer, sure or not, is the expert's best
  label for a real input. `teacher_unsure_spares` names answer kinds (`answer_kind`: `none`) it never drops: a
  hesitant `none` was mostly right (benchmark v9 measures keeping them; off by default).

and three more (`teacher_on_task_filter`), against what the expert does on its own seed prompts
(`SeedProfile`), so the thresholds adapt to each expert and task (shape and labels only when the seeds show two
different answers at least):

* `off_shape`: the answer does not look like the seed answers: it uses punctuation none of them use (a list
  separator, brackets, a date or code pattern are all punctuation), or its length in words is outside half the
  shortest to twice the longest (+ 2);
* `off_label`: the answer has a word that is neither in its prompt nor in the seeds' label vocabulary (the words
  of seed answers that their own prompts do not contain: `location`, `none`, `positive`). An extraction expert
  asked about a sentence without the entities it knows invents one ("Jack wrote to a lover." -> `location: Paris`);
  a classifier's answers stay in its label set;
* `off_skill` (TiTok's signal): the expert's adapter barely engages: the answer's mean log-probability gain over the
  expert's own base is below `teacher_min_excess_ratio` x the median gain of the seed answers of its kind (its
  label words: `none`, `works_for`, `positive`; all seeds' median when no seed answer is of that kind). A prompt
  off the task gets an answer the base would give anyway. Per kind because kinds differ: an extraction answer
  copies names from its prompt, which the base predicts too, so its gain is about half a `none`'s (measured,
  Gemma-3 experts: 3.8-4.0 against 8.7-8.9 nats per token); against the median of a mixed seed set, correct
  positives went as `off_skill` (`Martha loves her job at Vandelay.` -> `works_for: Martha, Vandelay`). Where
  every seed got the same answer (four `none` seeds), an answer of another kind is not judged by its gain at all.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.generation import Generation
from hf_heterofusion.data.replay import answer_kind


FILTERS = ("empty", "truncated", "degenerate", "low_logprob")
ON_TASK_FILTERS = ("off_shape", "off_label", "off_skill")
# bumped when a rule of the on-task filters changes (benchmark runs key on it); 3: gain per kind; 4: seeds with one
# answer do not judge the gain of another kind
ON_TASK_RULES = 4
REPEATS = 3  # occurrences of one n-gram that make an answer degenerate


def is_degenerate(token_ids: Sequence[int], n: int, repeats: int = REPEATS) -> bool:
    if n <= 0 or len(token_ids) < n * repeats:
        return False
    grams = Counter(tuple(token_ids[i:i + n]) for i in range(len(token_ids) - n + 1))
    return max(grams.values()) >= repeats


def drop_reason(g: Generation, cfg: FusionConfig) -> str | None:
    if not g.text.strip():
        return "empty"
    if cfg.teacher_drop_truncated and not g.finished:
        return "truncated"
    if is_degenerate(g.token_ids, cfg.teacher_repeat_ngram):
        return "degenerate"
    if cfg.teacher_min_logprob is not None and g.mean_logprob < cfg.teacher_min_logprob:
        return "low_logprob"
    return None


def least_token_prob(g: Generation) -> float:
    """The probability of the answer's least likely token (its end included) under the expert."""
    return math.exp(min(g.token_logprobs) if g.token_logprobs else g.mean_logprob)  # mean: cached before per-token


def is_unsure(g: Generation, min_prob: float) -> bool:
    return least_token_prob(g) < min_prob


def mean_excess(g: Generation) -> float | None:
    """How much the adapter raised the answer over the expert's base, per token on average (None: not scored)."""
    if not g.base_logprobs or len(g.base_logprobs) != len(g.token_logprobs):
        return None
    return sum(a - b for a, b in zip(g.token_logprobs, g.base_logprobs)) / len(g.token_logprobs)


def _marks(text: str) -> frozenset[str]:
    return frozenset(c for c in text if not c.isalnum() and not c.isspace())


def _words(text: str) -> int:
    return len(re.findall(r"\S+", text))


def _vocab(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


@dataclass(frozen=True)
class SeedProfile:
    """The expert's answers on its seed prompts: what an on-task synthesized row's answer should resemble."""

    marks: frozenset[str]  # punctuation the seed answers use
    words: tuple[int, int]  # shortest and longest seed answer, in words
    excess: float | None  # median of the seed answers' mean gain over the base (None: not scored)
    ratio: float
    labels: frozenset[str] = frozenset()  # words of seed answers their own prompts do not contain
    # Shape and labels are judged only when the seeds show two different answers at least: four seeds that all
    # answer `none` say nothing of what a positive answer looks like.
    judges_shape: bool = True
    only_answer: str = ""  # the one answer every seed got, when they all got the same (else "")
    kind_excess: tuple[tuple[str, float], ...] = ()  # (answer kind, median gain of the seed answers of that kind)

    @classmethod
    def from_answers(cls, seeds: Sequence[Generation], ratio: float,
                     prompts: Sequence[str] | None = None) -> SeedProfile | None:
        """The profile of the expert's answers `seeds` (on the seed `prompts`, when given: the label vocabulary)."""
        pairs = [(g, p) for g, p in zip(seeds, prompts or [""] * len(seeds)) if g.text.strip()]
        if not pairs:
            return None
        answers = [g for g, _ in pairs]
        gains = [x for x in map(mean_excess, answers) if x is not None]
        lengths = [_words(g.text) for g in answers]
        labels = frozenset().union(*(_vocab(g.text) - _vocab(p) for g, p in pairs)) if prompts else frozenset()
        distinct = {g.text.strip() for g in answers}
        by_kind: dict[str, list[float]] = {}
        for g, p in pairs if prompts else ():
            if (gain := mean_excess(g)) is not None:
                by_kind.setdefault(answer_kind(g.text, p), []).append(gain)
        return cls(frozenset().union(*(_marks(g.text.strip()) for g in answers)), (min(lengths), max(lengths)),
                   statistics.median(gains) if gains else None, ratio, labels, len(distinct) >= 2,
                   next(iter(distinct)) if len(distinct) == 1 and len(answers) >= 2 else "",
                   tuple((k, statistics.median(v)) for k, v in sorted(by_kind.items())))

    def drop_reason(self, g: Generation, prompt: str | None = None) -> str | None:
        text = g.text.strip()
        low, high = max(1, self.words[0] // 2), 2 * self.words[1] + 2
        if self.judges_shape and (not _marks(text) <= self.marks or not low <= _words(text) <= high):
            return "off_shape"
        if self.judges_shape and prompt is not None and self.labels and _vocab(text) - _vocab(prompt) - self.labels:
            return "off_label"
        gain = mean_excess(g)
        kinds = dict(self.kind_excess)  # empty when the seeds' prompts were not given: then no kind is known
        kind = answer_kind(text, prompt) if prompt is not None else None
        if kind is not None and kinds and kind not in kinds and not self.judges_shape:
            # Seeds that all got one answer give no gain of any other kind to compare with, and the one they give
            # is the wrong scale (measured: `none` 8.9 nats per token; 16 of 16 found lives-in relations on
            # written prompts gained 2.5-4.2 and all went as off_skill): not judged, like shape and labels.
            return None
        reference = kinds.get(kind, self.excess)
        # Only where the seeds show the adapter engaging at all (a placebo teacher's gain is 0 everywhere).
        if self.excess is not None and self.excess > 0 and reference is not None and reference > 0 \
                and gain is not None and gain < self.ratio * reference:
            return "off_skill"
        return None

    def to_json(self) -> dict:
        return {"marks": "".join(sorted(self.marks)), "words": list(self.words), "labels": sorted(self.labels),
                "judges_shape": self.judges_shape, "only_answer": self.only_answer,
                "seed_excess": None if self.excess is None else round(self.excess, 4), "ratio": self.ratio,
                "seed_excess_by_kind": {k: round(v, 4) for k, v in self.kind_excess}}


__all__ = ["FILTERS", "ON_TASK_FILTERS", "SeedProfile", "drop_reason", "is_degenerate", "is_unsure", "least_token_prob",
           "mean_excess"]
