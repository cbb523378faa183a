# SPDX-License-Identifier: Apache-2.0
"""`teacher: sources` trains what the benchmark measured best (anchor LoRA, task-balanced); the faithful method's
defaults stay the paper's; a key the user sets always wins; the new keys are validated with one-line errors."""

import pytest

from hf_heterofusion.config import TEACHER_DEFAULTS, FusionConfig
from hf_heterofusion.errors import ConfigError


BASE = dict(target_model="t", target_adapter="a", sources=["s"])


def test_teacher_sources_has_its_own_defaults_and_teacher_none_the_papers():
    taught = FusionConfig.from_mapping(dict(BASE, teacher="sources"))
    assert (taught.trainer, taught.replay_balance, taught.max_grad_norm) == ("lora", "task", 1.0) \
        == tuple(TEACHER_DEFAULTS.values())
    faithful = FusionConfig.from_mapping(dict(BASE, replay="r.jsonl"))
    assert (faithful.trainer, faithful.replay_balance, faithful.max_grad_norm) == ("transfer_nets", "none", None)
    assert faithful.teacher_kd_weight == faithful.anchor_kd_weight == 0.0 and faithful.max_steps is None


def test_an_unset_lr_follows_what_trains_and_a_set_one_wins():
    """The paper's 5e-5 stays its nets' default; the anchor adapter (any teacher) and the nets with a teacher get
    the lrs the benchmark's dev splits chose (`defaults.default_lr`)."""
    lr = lambda **keys: FusionConfig.from_mapping(dict(BASE, replay="r.jsonl", **keys)).lr  # noqa: E731
    assert lr() == 5e-5 and lr(trainer="lora") == 1e-3
    assert lr(teacher="sources") == 1e-3 and lr(teacher="sources", trainer="transfer_nets") == 2.5e-4
    assert lr(teacher="sources", lr=3e-3) == lr(lr=3e-3) == 3e-3
    cfg = FusionConfig.from_mapping(dict(BASE, teacher="sources"))
    assert FusionConfig.from_mapping(cfg.model_dump(mode="json")) == cfg  # the written config reads back alike


def test_the_users_keys_win_over_the_teacher_defaults():
    cfg = FusionConfig.from_mapping(dict(BASE, teacher="sources", trainer="transfer_nets", replay_balance="none",
                                         max_grad_norm=None))
    assert (cfg.trainer, cfg.replay_balance, cfg.max_grad_norm) == ("transfer_nets", "none", None)


@pytest.mark.parametrize(("change", "message"), [
    ({"max_steps": "sometimes"}, "`max_steps` must be an integer >= 0, `auto` or null"),
    ({"teacher_kd_weight": 1.0}, "`teacher_kd_weight` and `teacher_token_weighting` distil the source teachers'"),
    ({"teacher_token_weighting": "skill"}, "set `teacher: sources`"),
    ({"teacher": "sources", "teacher_topk": 0}, "`teacher_topk` must be greater than or equal to 1"),
    ({"step_selection": "best"}, "`step_selection` must be 'none' or 'held_out'"),
    ({"teacher_unsure_spares": ["none"]}, "`teacher_unsure_spares` exempts answer kinds from"),
])
def test_new_keys_fail_in_one_line(change, message):
    with pytest.raises(ConfigError) as err:
        FusionConfig.from_mapping(dict(BASE, replay="r.jsonl", **change))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_max_steps_auto_selects_the_step():
    assert FusionConfig.from_mapping(dict(BASE, replay="r.jsonl", max_steps="auto")).selects_step
    assert FusionConfig.from_mapping(dict(BASE, replay="r.jsonl", max_steps=5, step_selection="held_out")).selects_step
    assert not FusionConfig.from_mapping(dict(BASE, replay="r.jsonl", max_steps=5)).selects_step


@pytest.mark.parametrize(("given", "kinds"), [(["none"], ("none",)), ("none, works_for", ("none", "works_for")),
                                              ("none", ("none",))])
def test_spared_kinds_are_a_list_or_the_comma_separated_string_a_mergekit_yaml_takes(given, kinds):
    cfg = FusionConfig.from_mapping(dict(BASE, replay="r.jsonl", teacher_min_token_prob=0.9,
                                         teacher_unsure_spares=given))
    assert cfg.teacher_unsure_spares == kinds
    dumped = cfg.model_dump(mode="json")["teacher_unsure_spares"]  # what a mergekit YAML can hold, read back alike
    assert isinstance(dumped, str) and FusionConfig.from_mapping(cfg.model_dump(mode="json")) == cfg
