# SPDX-License-Identifier: Apache-2.0
"""Which pipeline features this checkout has, so the benchmark runs what exists and marks what does not.

Benchmark v2 was written while two of the methods it measures were still being built elsewhere: the teacher
stage (`teacher: sources`, `teacher_placebo`) and the direct trainer (`trainer: lora`), plus the warmup switch
(`warmup_start`). Their config keys may exist before the code that honours them, so a key alone proves nothing:
a probe also looks for the code that reads it. A method whose feature is missing is recorded as skipped with the
reason (`SKIPPED`), never silently run as something else.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from functools import cache

from hf_heterofusion.config import FusionConfig


@dataclass(frozen=True)
class Features:
    teacher: bool  # `teacher: sources` labels prompts (hf_heterofusion.teacher exists and the pipeline calls it)
    lora_trainer: bool  # `trainer: lora` trains the anchor adapter through the pipeline
    warmup_start: bool  # `warmup_start: first_step` is a config key

    def to_dict(self) -> dict[str, bool]:
        return {"teacher": self.teacher, "lora_trainer": self.lora_trainer, "warmup_start": self.warmup_start}


TEACHER_MISSING = "teacher stage not available in this checkout (issue 10)"
LORA_MISSING = "`trainer: lora` not available in this checkout (issue 10)"


def _pipeline_source() -> str:
    text = []
    for name in ("pipeline", "train", "teacher", "lora_trainer", "trainers"):
        if importlib.util.find_spec(f"hf_heterofusion.{name}") is not None:
            text.append(inspect.getsource(importlib.import_module(f"hf_heterofusion.{name}")))
    return "\n".join(text)


@cache
def detect() -> Features:
    fields = FusionConfig.model_fields
    source = _pipeline_source()
    teacher = ("teacher" in fields and importlib.util.find_spec("hf_heterofusion.teacher") is not None
               and ".teacher" in source)
    lora = "trainer" in fields and (".trainer ==" in source or ".trainer !=" in source or 'trainer == "lora"' in source)
    return Features(teacher=teacher, lora_trainer=lora, warmup_start="warmup_start" in fields)
