# SPDX-License-Identifier: Apache-2.0
"""The replay loss with a teacher's token signal: 0 distillation when teacher and student agree, the exact KL
by hand, plain rows equal transformers' own loss, and a distillation step moves the student toward the teacher."""

import math

import pytest
import torch

from hf_heterofusion.data.encoding import collate
from hf_heterofusion.data.soft_targets import EXACT, ULD, RowSignal
from hf_heterofusion.method.loss import bucket_kl, signal_loss, sorted_l1


def test_kd_is_zero_when_teacher_and_student_agree():
    torch.manual_seed(0)
    student = torch.log_softmax(torch.randn(5, 50), dim=-1)
    values, ids = student.topk(4, dim=-1)
    assert torch.allclose(bucket_kl(values, student, ids), torch.zeros(5), atol=1e-6)
    assert torch.allclose(sorted_l1(values, student), torch.zeros(5), atol=1e-6)
    other = torch.log_softmax(torch.randn(5, 50), dim=-1)
    assert (bucket_kl(values, other, ids) > 1e-3).all()


def test_exact_kl_equals_a_hand_computation_on_a_shared_vocabulary():
    # vocabulary of 4; the teacher gives 0.6 to token 2 and 0.3 to token 0 (0.1 left); one candidate has no
    # target token (-1), so its 0.05 joins the rest.
    student = torch.tensor([[0.1, 0.2, 0.5, 0.2]]).log()
    teacher = torch.tensor([[0.6, 0.3, 0.05]]).log()
    ids = torch.tensor([[2, 0, -1]])
    t_rest, s_rest = 1 - 0.6 - 0.3, 1 - 0.5 - 0.1
    hand = 0.6 * math.log(0.6 / 0.5) + 0.3 * math.log(0.3 / 0.1) + t_rest * math.log(t_rest / s_rest)
    assert bucket_kl(teacher, student, ids).item() == pytest.approx(hand, rel=1e-5)
    uld = sorted_l1(teacher, student).item()  # sorted (0.6, 0.3, 0.05) vs the student's top 3 (0.5, 0.2, 0.2)
    assert uld == pytest.approx(0.1 + 0.1 + 0.15, rel=1e-5)


def _batch(signal: RowSignal | None):
    ids, labels = [5, 6, 7, 8, 9], [-100, -100, 7, 8, 9]
    return collate([(ids, labels) if signal is None else (ids, labels, signal)], pad_id=0)


def test_plain_weights_and_no_soft_targets_equal_the_label_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 12)
    batch = _batch(RowSignal.plain(5))
    loss, kd = signal_loss(logits, batch)
    reference = torch.nn.functional.cross_entropy(logits[0, 1:4], torch.tensor([7, 8, 9]))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6) and kd.item() == 0.0


def test_token_weights_scale_each_labels_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 12)
    signal = RowSignal((1.0, 1.0, 2.0, 0.5, 0.5), (0,) * 5, ((),) * 5, ((),) * 5, (0.0,) * 5)
    loss, _ = signal_loss(logits, _batch(signal))
    ce = torch.nn.functional.cross_entropy(logits[0, 1:4], torch.tensor([7, 8, 9]), reduction="none")
    assert loss.item() == pytest.approx(((ce * torch.tensor([2.0, 0.5, 0.5])).sum() / 3).item(), rel=1e-6)


def test_a_distillation_step_moves_the_student_toward_the_teacher():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 12, requires_grad=True)
    teacher = ((3, 4), (-0.2, -1.8))  # at the label of position 3 the teacher prefers token 3, then 4
    kind = (0, 0, 0, EXACT, ULD)
    signal = RowSignal((1.0,) * 5, kind, ((), (), (), teacher[0], (-1, -1)), ((), (), (), teacher[1], (-0.1, -2.5)),
                       (0.0, 0.0, 0.0, 2.0, 1.0))
    batch = _batch(signal)
    loss, kd = signal_loss(logits, batch)
    assert kd.item() > 0
    loss.backward()
    with torch.no_grad():
        stepped = logits - 1.0 * logits.grad
    _, kd_after = signal_loss(stepped, batch)
    assert kd_after.item() < kd.item()
