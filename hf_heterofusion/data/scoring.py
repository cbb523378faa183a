# SPDX-License-Identifier: Apache-2.0
"""How an answer is scored against a reference: exact match and SQuAD-style token F1.

`--eval` (`outputs.evaluate`) and the training budget's held-out slice (`method.budget`) score alike.
"""

from __future__ import annotations

import re
from collections import Counter


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 (lower-cased word and punctuation tokens)."""
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


__all__ = ["token_f1"]
