# SPDX-License-Identifier: Apache-2.0
"""What each encoded replay row teaches beyond its label: the source teacher's token signal and the anchor's own
distribution, laid onto the target's tokens before training (`data.soft_targets`, `method.loss`).

* teacher rows (`teacher_kd_weight`, `teacher_token_weighting: skill`): the teacher's top-k candidates and skill
  excess, carried through characters (`align_signal`);
* anchor rows (`anchor_kd_weight`): labelled rows of no source's task, i.e. the anchor's own task. The target with
  its anchor adapter, before any training, is their teacher in the target's own tokenizer: one no-grad pass gives
  its top-k log-probs at every answer token, and the loss keeps the trained adapter close to them there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.encoding import collate
from hf_heterofusion.data.replay import IGNORE_INDEX, ReplayExample
from hf_heterofusion.data.soft_targets import EXACT, ULD, PieceMap, RowSignal, align_signal


def attach_signals(rows: Sequence[ReplayExample], encoded: list[tuple[list[int], list[int]]], cfg: FusionConfig,
                   tokenizer: Any, model: torch.nn.Module, *, source_names: Sequence[str], pad_id: int,
                   teacher_rows: frozenset[int] = frozenset()) -> tuple[list[tuple], dict[str, Any] | None]:
    """`encoded` with a `RowSignal` on the rows that get one, and counts for the report (None: nothing attached).

    `teacher_rows`: indexes of `rows` labelled by a teacher (they are never the anchor's task).
    """
    teach = cfg.teacher_kd_weight > 0 or cfg.teacher_token_weighting != "none"
    if not teach and not cfg.anchor_kd_weight:
        return list(encoded), None
    out: list[tuple] = list(encoded)
    counts = {"teacher_rows": 0, "teacher_tokens": 0, "exact": 0, "uld": 0, "anchor_rows": 0, "anchor_tokens": 0}
    pieces = PieceMap(tokenizer)
    anchor_todo: list[int] = []
    sources = set(source_names)
    for i, (row, (ids, labels)) in enumerate(zip(rows, encoded)):
        start = _response_start(labels)
        if start is None:
            continue
        if i in teacher_rows:
            if teach and row.signal is not None:
                signal = align_signal(row.signal, row.response, tokenizer, ids[start:], start, len(ids),
                                      kd_scale=cfg.teacher_kd_weight,
                                      skill_weights=cfg.teacher_token_weighting == "skill", pieces=pieces)
                out[i] = (ids, labels, signal)
                counts["teacher_rows"] += 1
                counts["teacher_tokens"] += len(ids) - start
                counts["exact"] += sum(k == EXACT for k in signal.kind)
                counts["uld"] += sum(k == ULD for k in signal.kind)
        elif cfg.anchor_kd_weight and row.task not in sources:
            anchor_todo.append(i)
    if anchor_todo:
        for i, signal in zip(anchor_todo, anchor_signals([encoded[i] for i in anchor_todo], model, pad_id=pad_id,
                                                         k=cfg.teacher_topk, scale=cfg.anchor_kd_weight)):
            out[i] = (*encoded[i], signal)
            counts["anchor_rows"] += 1
            counts["anchor_tokens"] += sum(k == EXACT for k in signal.kind)
    if counts["teacher_tokens"]:
        counts["exact_share"] = round(counts["exact"] / counts["teacher_tokens"], 4)
        counts["uld_share"] = round(counts["uld"] / counts["teacher_tokens"], 4)
    return out, counts


def _response_start(labels: Sequence[int]) -> int | None:
    return next((j for j, lab in enumerate(labels) if lab != IGNORE_INDEX), None)


@torch.no_grad()
def anchor_signals(encoded: Sequence[tuple[list[int], list[int]]], model: torch.nn.Module, *, pad_id: int, k: int,
                   scale: float, batch_size: int = 8) -> list[RowSignal]:
    """The unpatched target-with-anchor's top-k log-probs at each label position of each row (exact targets).

    Identical rows (the task balancer repeats them) are computed once.
    """
    device = next(model.parameters()).device
    unique: dict[tuple, RowSignal] = {}
    by_ids = {tuple(ids): (ids, labels) for ids, labels in encoded}  # first occurrence order, repeats once
    todo = list(by_ids)
    for s in range(0, len(todo), batch_size):
        chunk = [by_ids[key] for key in todo[s:s + batch_size]]
        batch = collate(chunk, pad_id)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        values, ids = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1)
        for row, (seq, labels) in enumerate(chunk):
            n = len(seq)
            kind, top_ids, top_lps = [0] * n, [()] * n, [()] * n
            for j in range(1, n):
                if labels[j] != IGNORE_INDEX:  # logits at j - 1 predict token j (the loss shifts the same way)
                    kind[j] = EXACT
                    top_ids[j] = tuple(ids[row, j - 1].tolist())
                    top_lps[j] = tuple(values[row, j - 1].tolist())
            unique[tuple(seq)] = RowSignal((1.0,) * n, tuple(kind), tuple(top_ids), tuple(top_lps),
                                           tuple(scale if c else 0.0 for c in kind))
    return [unique[tuple(ids)] for ids, _ in encoded]


__all__ = ["anchor_signals", "attach_signals"]
