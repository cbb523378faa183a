# SPDX-License-Identifier: Apache-2.0
"""Which pipeline features the library under test offers, so the benchmark runs what exists and marks what does not.

The benchmark ships in the library's repository, but its result cache outlives checkouts, and a method whose
feature is missing must be recorded as skipped with the reason (`TEACHER_MISSING`, `LORA_MISSING`: the report
lists it as SKIPPED), never silently run as something else. A feature exists when `FusionConfig` declares it: the
value among the `Literal` choices of its field (`teacher: sources`, `trainer: lora`), or the field itself
(`warmup_start`); no source text is read. The config rejects anything else, so a run cannot ask for a feature the
library would ignore.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import cache

from hf_heterofusion.config import FusionConfig


@dataclass(frozen=True)
class Features:
    teacher: bool  # `teacher: sources` labels prompts
    lora_trainer: bool  # `trainer: lora` trains the anchor adapter through the pipeline
    warmup_start: bool  # `warmup_start: first_step` is a config key
    distill: bool = False  # token-level distillation, skill weighting and anchor KD are config keys

    def to_dict(self) -> dict[str, bool]:
        return {"teacher": self.teacher, "lora_trainer": self.lora_trainer, "warmup_start": self.warmup_start,
                "distill": self.distill}


TEACHER_MISSING = "teacher stage not available in this checkout"
LORA_MISSING = "`trainer: lora` not available in this checkout"
DISTILL_MISSING = "token-level distillation not available in this checkout"


def _choices(key: str) -> tuple:
    """The values a `Literal` config key accepts (empty when the key does not exist)."""
    field = FusionConfig.model_fields.get(key)
    return typing.get_args(field.annotation) if field is not None else ()


@cache
def detect() -> Features:
    return Features(teacher="sources" in _choices("teacher"), lora_trainer="lora" in _choices("trainer"),
                    warmup_start="warmup_start" in FusionConfig.model_fields,
                    distill=all(k in FusionConfig.model_fields for k in
                                ("teacher_kd_weight", "teacher_token_weighting", "anchor_kd_weight",
                                 "step_selection")))
