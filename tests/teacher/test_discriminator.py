# SPDX-License-Identifier: Apache-2.0
"""The real-vs-synthetic filter: cross-fitted, so it keeps what looks like the seeds and drops what does not."""

import torch

from hf_heterofusion.teacher.discriminator import held_out_scores, keep_mask


def _cloud(n, shift, seed, dim=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) + shift


def test_prompts_like_the_seeds_are_kept():
    kept, _ = keep_mask(_cloud(16, 0.0, 1), _cloud(48, 0.0, 2))
    assert sum(kept) >= 0.7 * 48  # indistinguishable: about 90 % pass the seeds' 10th percentile


def test_prompts_off_the_seeds_are_dropped_and_on_task_ones_kept():
    off = torch.zeros(32)
    off[:4] = 3.0  # a different region of feature space: text of another kind
    fake = torch.cat([_cloud(24, 0.0, 2), _cloud(24, off, 3)])
    kept, threshold = keep_mask(_cloud(16, 0.0, 1), fake)
    assert 0.0 < threshold < 1.0
    on_task, off_task = sum(kept[:24]), sum(kept[24:])
    assert on_task >= 12 and off_task <= 3, (on_task, off_task)


def test_every_row_is_scored_by_a_classifier_that_did_not_see_it():
    # In-sample, 16 real rows far from 48 fakes would all score ~1; held out they still do (separable), but a
    # lone real row planted among the fakes must score like a fake: its own label never trained its classifier.
    real = _cloud(16, 4.0, 1)
    fake = _cloud(48, 0.0, 2)
    real[5] = fake[0] * 0.5
    real_scores, _ = held_out_scores(real, fake)
    assert real_scores[5] < 0.5 < real_scores[torch.arange(16) != 5].min()


def test_same_inputs_same_verdicts():
    real, fake = _cloud(16, 0.0, 1), _cloud(40, 0.5, 2)
    assert keep_mask(real, fake) == keep_mask(real.clone(), fake.clone())
