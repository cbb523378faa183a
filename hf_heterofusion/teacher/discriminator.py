# SPDX-License-Identifier: Apache-2.0
"""Real-vs-synthetic: drop synthesized prompts that a classifier tells apart from the seeds (Trans-LoRA's filter).

Trans-LoRA (arXiv 2405.17258) trains a discriminator on real and synthetic prompts and keeps the synthetic ones it
takes for real. Here the classifier is a logistic regression on a frozen model's view of each prompt (the mean
of the expert base's last hidden states, adapter off): a few seconds on a CPU, no second model to train or ship.

Every prompt is scored by a classifier that did not see it (`FOLDS`-fold cross-fitting): scored in-sample, 16
seeds are always "real" and nothing synthetic would pass. A synthesized prompt is kept when its held-out score
is at least the `KEEP_QUANTILE` quantile of the seeds' held-out scores: when the writer's prompts cannot be told
from the seeds, the two score alike and ~90 % are kept; prompts the classifier separates score below the seeds and
go. With fewer than `MIN_SEEDS` seeds the classifier is noise, so the option asks for 16 (`plan.py` checks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hf_heterofusion.data.generation import left_pad


MIN_SEEDS = 16
FOLDS = 4
KEEP_QUANTILE = 0.1
L2 = 1.0  # ridge on the standardized features: far more features (hidden size) than prompts
STEPS = 100


@torch.no_grad()
def prompt_features(model: torch.nn.Module, pad: int, prompts: Sequence[Sequence[int]],
                    batch_size: int = 16) -> torch.Tensor:
    """[n, hidden]: the mean of the last layer's hidden states over each prompt's tokens."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = (t.to(device) for t in left_pad(prompts[start:start + batch_size], pad))
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as `greedy_batch`: padding moves nothing
        # One logits row (gathered): the hidden states are read, not the vocabulary projection of every position.
        hidden = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                       logits_to_keep=torch.tensor([ids.shape[1] - 1], device=device)).hidden_states[-1].float()
        weights = mask.unsqueeze(-1).float()
        out.append(((hidden * weights).sum(1) / weights.sum(1)).cpu())
    return torch.cat(out)


def _fit(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced, L2-regularised logistic regression (L-BFGS, fixed steps: deterministic)."""
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    pos = y.sum().clamp(min=1)
    weight = torch.where(y > 0, 0.5 / pos, 0.5 / (len(y) - pos).clamp(min=1))  # both classes count alike
    opt = torch.optim.LBFGS([w, b], max_iter=STEPS, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none")).sum()
        loss = loss + L2 / (2 * len(y)) * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def held_out_scores(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """P(real) of every real and every fake row, each from the classifier of the fold that left it out."""
    x = torch.cat([real, fake]).double()
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).double()
    fold = torch.cat([torch.arange(len(real)), torch.arange(len(fake))]) % FOLDS  # both classes in every fold
    scores = torch.empty(len(x), dtype=torch.float64)
    for k in range(FOLDS):
        train, test = fold != k, fold == k
        if not test.any():
            continue
        mean, std = x[train].mean(0), x[train].std(0).clamp(min=1e-6)
        w, b = _fit((x[train] - mean) / std, y[train])
        scores[test] = torch.sigmoid((x[test] - mean) / std @ w + b)
    return scores[:len(real)], scores[len(real):]


def keep_mask(real: torch.Tensor, fake: torch.Tensor) -> tuple[list[bool], float]:
    """Which fake rows pass, and the threshold (the seeds' `KEEP_QUANTILE` held-out score)."""
    real_scores, fake_scores = held_out_scores(real, fake)
    threshold = float(torch.quantile(real_scores, KEEP_QUANTILE))
    return [bool(s >= threshold) for s in fake_scores], threshold


__all__ = ["MIN_SEEDS", "held_out_scores", "keep_mask", "prompt_features"]
