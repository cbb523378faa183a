# SPDX-License-Identifier: Apache-2.0
"""Every teaching source in turn: label, filter, and keep the answers with their provenance.

One teacher is in memory at a time, freed before the next (`Labeller.close`). The result's rows join the replay set;
its counts go to the report and the card.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.generation import Generation
from hf_heterofusion.data.replay import Prompt, ReplayExample
from hf_heterofusion.data.soft_targets import TokenSignal, build_signal
from hf_heterofusion.errors import TeacherKeptLittleWarning
from hf_heterofusion.teacher.cache import generation_settings
from hf_heterofusion.teacher.filters import FILTERS, drop_reason
from hf_heterofusion.teacher.labeller import Labeller
from hf_heterofusion.teacher.plan import Origin, TeacherPlan


logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class TeacherRow:
    """One labelled row with its provenance (a line of `teacher_replay.jsonl`)."""

    source: str
    prompt: Prompt
    response: str
    origin: Origin
    logprob: float
    teacher: dict = field(default_factory=dict)
    excess: float | None = None  # mean log p(expert) - log p(expert's base) over the answer's tokens
    signal: TokenSignal | None = field(default=None, repr=False)  # per token, for distillation

    def to_json(self) -> dict[str, Any]:
        shape = {"messages": [*self.prompt, {"role": "assistant", "content": self.response}]} \
            if isinstance(self.prompt, tuple) else {"prompt": self.prompt, "response": self.response}
        extra = {} if self.excess is None else {"excess": round(self.excess, 4)}
        return {**shape, "source": self.source, "origin": self.origin, "logprob": round(self.logprob, 4), **extra,
                "teacher": self.teacher}

    def example(self) -> ReplayExample:
        return ReplayExample(self.prompt, self.response, task=self.source, signal=self.signal)


@dataclass(frozen=True)
class TeacherResult:
    rows: tuple[TeacherRow, ...]
    report: dict

    def examples(self) -> tuple[ReplayExample, ...]:
        return tuple(r.example() for r in self.rows)

    def write_jsonl(self, path: Path) -> None:
        text = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in self.rows)
        path.write_text(text, encoding="utf-8")


def run_teachers(plans: Sequence[TeacherPlan], cfg: FusionConfig, *, accelerator=None,
                 show_progress: bool = True) -> TeacherResult:
    """Every teaching source in turn: one teacher in memory at a time, freed before the next."""
    rows, per_source = [], []
    for plan in plans:
        started = time.perf_counter()
        labeller = Labeller(plan, cfg, accelerator=accelerator, show_progress=show_progress)
        synthesized = labeller.synthesize() if plan.synthesize else ([], {})
        prompts = list(plan.prompts) + synthesized[0]
        generations = labeller.label([p.prompt for p in prompts])
        labeller.close()
        provenance = {"base": plan.base, "base_revision": plan.base_revision or labeller.base_digest,
                      "adapter": cfg.sources[plan.index].adapter,
                      "adapter_revision": plan.adapter_revision or labeller.adapter_digest,
                      "placebo": cfg.teacher_placebo}
        dropped = {name: 0 for name in FILTERS}
        kept = []
        wants_signal = cfg.teacher_kd_weight > 0 or cfg.teacher_token_weighting != "none"
        for p, g in zip(prompts, generations):
            reason = drop_reason(g, cfg)
            if reason:
                dropped[reason] += 1
                continue
            signal = teacher_signal(g, labeller.tokenizer) if wants_signal else None
            kept.append(TeacherRow(plan.name, p.prompt, g.text.strip(), p.origin, g.mean_logprob, provenance,
                                   mean_excess(g), signal))
        rows += kept
        seconds = time.perf_counter() - started
        per_source.append({
            "source": plan.name, "index": plan.index, "base": plan.base, "prompt_format": plan.prompt_format,
            "given": sum(p.origin == "given" for p in plan.prompts),
            "replay_tagged": sum(p.origin == "replay" for p in plan.prompts),
            "synthesized": len(synthesized[0]), "synthesis": synthesized[1],
            "labelled": len(generations), "kept": len(kept), "dropped": dropped,
            "cached": labeller.cached, "teacher_loaded": labeller.loaded, "seconds": round(seconds, 2),
            "samples": [r.to_json() for r in kept[:3]],
        })
        if generations and 4 * len(kept) < len(generations):
            _warn_kept_little(plan.name, len(kept), len(generations), dropped)
        logger.info("teacher %s: %d prompts, kept %d (%s); %s", plan.name, len(generations), len(kept),
                    ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "none dropped",
                    "all cached, teacher not loaded" if not labeller.loaded else f"{labeller.cached} cached")
    report = {"mode": "placebo" if cfg.teacher_placebo else "sources", "rows": len(rows), "sources": per_source,
              "settings": generation_settings(cfg)}
    return TeacherResult(tuple(rows), report)


def mean_excess(g: Generation) -> float | None:
    """How much the adapter raised the answer over the expert's base, per token on average (None: not scored)."""
    if not g.base_logprobs or len(g.base_logprobs) != len(g.token_logprobs):
        return None
    return sum(a - b for a, b in zip(g.token_logprobs, g.base_logprobs)) / len(g.token_logprobs)


def teacher_signal(g: Generation, tokenizer) -> TokenSignal | None:
    if not g.top_ids:
        return None  # an answer cached without its per-token signal
    excess = [a - b for a, b in zip(g.token_logprobs, g.base_logprobs)] if g.base_logprobs \
        else [0.0] * len(g.token_ids)
    return build_signal(tokenizer, g.token_ids, g.top_ids, g.top_logprobs, excess, finished=g.finished)


# What loosens each filter, for the warning when a teacher keeps little.
_FIXES = {"empty": "check the prompts' format (`prompt_format`)",
          "truncated": "raise `teacher_max_new_tokens` (or set `teacher_drop_truncated: false`)",
          "degenerate": "raise `teacher_repeat_ngram`", "low_logprob": "lower or unset `teacher_min_logprob`"}


def _warn_kept_little(name: str, kept: int, labelled: int, dropped: dict[str, int]) -> None:
    reasons = sorted(((n, k) for k, n in dropped.items() if n), reverse=True)
    counts = ", ".join(f"{k} {n}" for n, k in reasons)
    fixes = "; ".join(_FIXES[k] for _, k in reasons if k in _FIXES)
    warnings.warn(f"teacher `{name}` kept {kept} of {labelled} answers (dropped: {counts}); its rows teach little: "
                  f"{fixes}", TeacherKeptLittleWarning, stacklevel=3)


__all__ = ["TeacherResult", "TeacherRow", "run_teachers"]
