# SPDX-License-Identifier: Apache-2.0
"""The replay loss of one micro-batch: the label's cross-entropy, plus the teachers' token-level terms when rows
carry them (`data.soft_targets.RowSignal`, collated by `data.encoding.collate`).

    loss = sum_j w_j CE_j / N  +  sum_j s_j KD_j / N        (N: label tokens of the batch, as transformers' mean)

* `w_j` (`token_weights`): 1, or TiTok's skill weights on teacher rows (`teacher_token_weighting: skill`);
* `KD_j` at `soft_kind == EXACT`: KL(teacher || student) over the teacher's top-k candidates mapped to target ids,
  plus one bucket for all remaining mass (so it is a true KL of two coarse-grained distributions: 0 exactly when
  the student gives every candidate the teacher's probability); candidates with no single target token fall in
  the bucket;
* `KD_j` at `soft_kind == ULD`: the L1 distance of the two sorted top-k probability vectors (token ids unmatched);
* `s_j` (`soft_scale`): `teacher_kd_weight` on a source teacher's rows, `anchor_kd_weight` on the anchor's task rows.

A batch without those keys takes transformers' own loss (`model(**batch).loss`): the paper's path is unchanged.
"""

from __future__ import annotations

import torch

from hf_heterofusion.data.replay import IGNORE_INDEX
from hf_heterofusion.data.soft_targets import EXACT, ULD


SIGNAL_KEYS = ("token_weights", "soft_kind", "soft_scale", "soft_ids", "soft_logprobs")
_TINY = 1e-8


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(loss, the distillation part of it or None) of one micro-batch through `model`."""
    if "soft_kind" not in batch:
        return model(**batch).loss, None
    inputs = {k: v for k, v in batch.items() if k not in SIGNAL_KEYS and k != "labels"}
    logits = model(**inputs).logits
    return signal_loss(logits, batch)


def signal_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted CE + distillation (see the module docstring); returns (loss, distillation term)."""
    labels = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    mask = labels != IGNORE_INDEX
    n = mask.sum().clamp(min=1)
    ce = -logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    ce = (ce * batch["token_weights"][:, 1:] * mask).sum() / n
    kind, scale = batch["soft_kind"][:, 1:], batch["soft_scale"][:, 1:]
    kd = logp.new_zeros(())
    exact = (kind == EXACT) & mask
    if exact.any():
        kd = kd + (scale[exact] * bucket_kl(batch["soft_logprobs"][:, 1:][exact], logp[exact],
                                            batch["soft_ids"][:, 1:][exact])).sum() / n
    uld = (kind == ULD) & mask
    if uld.any():
        kd = kd + (scale[uld] * sorted_l1(batch["soft_logprobs"][:, 1:][uld], logp[uld])).sum() / n
    return ce + kd, kd.detach()


def bucket_kl(teacher_logprobs: torch.Tensor, student_logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over k candidates (`ids`, -1 = none) plus a bucket of the remaining mass; one value
    per row. `teacher_logprobs`: (rows, k); `student_logp`: (rows, vocab) log-softmax; `ids`: (rows, k)."""
    valid = ids >= 0
    t_logp = teacher_logprobs.masked_fill(~valid, -torch.inf)
    s_logp = student_logp.gather(-1, ids.clamp(min=0)).masked_fill(~valid, -torch.inf)
    t_p = t_logp.exp()
    t_rest = (1.0 - t_p.sum(-1)).clamp(min=0.0)
    s_rest = (1.0 - s_logp.exp().sum(-1)).clamp(min=_TINY)
    picked = torch.where(valid, t_p * (t_logp.clamp(min=-1e4) - s_logp.clamp(min=-1e4)), torch.zeros_like(t_p))
    rest = torch.where(t_rest > _TINY, t_rest * (t_rest.clamp(min=_TINY).log() - s_rest.log()),
                       torch.zeros_like(t_rest))
    return picked.sum(-1) + rest


def sorted_l1(teacher_logprobs: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """ULD: sum |sorted p_teacher - sorted p_student| over the top k (k = the teacher's candidates); one per row."""
    t_p = teacher_logprobs.exp().nan_to_num(0.0).sort(dim=-1, descending=True).values
    s_p = student_logp.topk(t_p.shape[-1], dim=-1).values.exp()
    return (t_p - s_p).abs().sum(-1)


__all__ = ["SIGNAL_KEYS", "batch_loss", "bucket_kl", "signal_loss", "sorted_l1"]
