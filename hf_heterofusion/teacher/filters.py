# SPDX-License-Identifier: Apache-2.0
"""Which teacher answers are kept: a bad label teaches the target a bad skill, so answers that carry no signal
are dropped and counted (per source, in the report and the card), never silently.

In order, the first that applies names the reason:

* `empty`: nothing but whitespace;
* `truncated`: the answer hit `teacher_max_new_tokens` without eos (`teacher_drop_truncated`), so it is cut mid-way;
* `degenerate`: some n-gram of `teacher_repeat_ngram` tokens occurs 3 or more times (a decoding loop);
* `low_logprob`: the mean token log-probability under the teacher is below `teacher_min_logprob` (the teacher
  itself is unsure).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.generation import Generation


FILTERS = ("empty", "truncated", "degenerate", "low_logprob")
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


__all__ = ["FILTERS", "drop_reason", "is_degenerate"]
