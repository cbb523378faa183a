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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.generation import Generation
from hf_heterofusion.data.replay import Prompt, ReplayExample, answer_kind, prompt_text
from hf_heterofusion.data.soft_targets import TokenSignal, build_signal
from hf_heterofusion.errors import SeedsOneAnswerWarning, TeacherKeptLittleWarning
from hf_heterofusion.teacher.cache import generation_settings
from hf_heterofusion.teacher.discriminator import keep_mask
from hf_heterofusion.teacher.filters import (
    FILTERS,
    ON_TASK_FILTERS,
    SeedProfile,
    drop_reason,
    is_unsure,
    mean_excess,
)
from hf_heterofusion.teacher.labeller import Labeller, release_resident
from hf_heterofusion.teacher.plan import Origin, TeacherPlan, TeacherPrompt
from hf_heterofusion.teacher.synthesis import Written


logger = logging.getLogger(__name__)
DISCRIMINATOR_FILTER = "unlike_seeds"  # `teacher_discriminator`: the classifier tells the prompt from the seeds
UNSURE_FILTER = "unsure"  # `teacher_min_token_prob`: the expert hesitated on a synthesized prompt

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


@dataclass(frozen=True)
class Judged:
    """One teaching source's labelled prompts, each with the filter that dropped it (None: kept)."""

    prompts: tuple[TeacherPrompt, ...]
    generations: tuple[Generation, ...]
    reasons: tuple[str | None, ...]
    synthesis: dict
    profile: SeedProfile | None
    labeller: Labeller
    cached: int  # of `prompts`, answers read from the cache


def judge_source(plan: TeacherPlan, cfg: FusionConfig, *, accelerator=None, show_progress: bool = True) -> Judged:
    """Synthesize (when asked), label, and run every filter over one source's prompts; the teacher is freed."""
    labeller = Labeller(plan, cfg, accelerator=accelerator, show_progress=show_progress)
    profile = None
    if plan.synthesize and cfg.synthesis_rounds > 1:
        # the rounds judge each round's prompts, so they need what on-task looks like first
        profile = _seed_profile(labeller, plan, cfg) if cfg.teacher_on_task_filter else None
        synthesized, synthesis = synthesize_rounds(labeller, plan, cfg, profile)
    else:
        synthesized, synthesis = labeller.synthesize() if plan.synthesize else ([], {})
    prompts = list(plan.prompts) + synthesized
    judge = bool(synthesized) and cfg.teacher_on_task_filter
    # The base's scores cost a teacher-forced pass: asked for only where something reads them.
    with_base = judge or cfg.teacher_token_weighting == "skill"
    generations = labeller.label([p.prompt for p in prompts], with_base=with_base)
    cached = labeller.cached
    profile = (profile or _seed_profile(labeller, plan, cfg)) if judge else None
    real_like = [True] * len(prompts)
    if synthesized and cfg.teacher_discriminator:
        passed, threshold = keep_mask(labeller.features(list(plan.seeds)),
                                      labeller.features([p.prompt for p in synthesized]))
        real_like[len(plan.prompts):] = passed
        synthesis = {**synthesis, "discriminator_threshold": round(threshold, 4)}
    labeller.close()
    reasons = [_reason(p, g, profile, cfg) for p, g in zip(prompts, generations)]
    reasons = [reason if reason or real else DISCRIMINATOR_FILTER for reason, real in zip(reasons, real_like)]
    return Judged(tuple(prompts), tuple(generations), tuple(reasons), synthesis, profile, labeller, cached)


def synthesize_rounds(labeller: Labeller, plan: TeacherPlan, cfg: FusionConfig, profile: SeedProfile | None
                      ) -> tuple[list[TeacherPrompt], dict]:
    """`synthesis_rounds`: `plan.synthesize` prompts written in rounds of an equal share. After each round the
    expert labels what was written and the filters judge it (`profile`: the on-task filter's reference); the parts
    it kept, by answer kind, are shown to the writer in the next rounds (`Written`). The answers are cached, so the
    final labelling pass reads them back."""
    with_base = cfg.teacher_on_task_filter or cfg.teacher_token_weighting == "skill"  # as the final pass asks
    out: list[TeacherPrompt] = []
    parts: list[str] = []  # every part written so far: a later round writes none of them again
    kept: list[tuple[str, str]] = []  # (written part, the expert's answer kind) of every kept row so far
    totals: dict[str, Any] = {}
    per_round = []
    for r in range(cfg.synthesis_rounds):
        count = plan.synthesize // cfg.synthesis_rounds + (r < plan.synthesize % cfg.synthesis_rounds)
        written = Written.from_kept(kept)
        new, stats = labeller.synthesize(count, round_=r, written=written, earlier=tuple(parts))
        for name, value in stats.items():
            totals[name] = totals.get(name, 0) + value if isinstance(value, int) else value
        kept_before = len(kept)
        for p, g in zip(new, labeller.label([p.prompt for p in new], with_base=with_base) if new else []):
            part = labeller.written_part(p.prompt)
            if part is None:
                continue
            parts.append(part)
            if _reason(p, g, profile, cfg) is None:
                kept.append((part, answer_kind(g.text.strip(), prompt_text(p.prompt))))
        per_round.append({"written": len(new), "kept": len(kept) - kept_before,
                          "shown_kinds": {k: len(shown) for k, shown in written.kinds} if written else {}})
        out += [TeacherPrompt(p.prompt, p.origin, f"synthesized #{len(out) + i} (round {r + 1})")
                for i, p in enumerate(new)]
    return out, {**totals, "rounds": per_round}


def _seed_profile(labeller: Labeller, plan: TeacherPlan, cfg: FusionConfig) -> SeedProfile:
    """The expert on its own seeds: what on-task looks like."""
    return SeedProfile.from_answers(labeller.label(list(plan.seeds), with_base=True), cfg.teacher_min_excess_ratio,
                                    [prompt_text(s) for s in plan.seeds])


def _reason(p: TeacherPrompt, g: Generation, profile: SeedProfile | None, cfg: FusionConfig) -> str | None:
    """The filter that drops one labelled prompt (None: kept); the discriminator is applied apart."""
    reason = drop_reason(g, cfg)
    if reason is None and profile is not None and p.origin == "synthesized":
        reason = profile.drop_reason(g, prompt_text(p.prompt))
    if reason is None and p.origin == "synthesized" and cfg.teacher_min_token_prob is not None \
            and is_unsure(g, cfg.teacher_min_token_prob) \
            and answer_kind(g.text, prompt_text(p.prompt)) not in cfg.teacher_unsure_spares:
        reason = UNSURE_FILTER
    return reason


def run_teachers(plans: Sequence[TeacherPlan], cfg: FusionConfig, *, accelerator=None,
                 show_progress: bool = True) -> TeacherResult:
    """Every teaching source in turn: one teacher in memory at a time, freed before the next."""
    try:
        return _run_teachers(plans, cfg, accelerator=accelerator, show_progress=show_progress)
    finally:
        release_resident()  # the last teacher base goes before the target is trained


def _run_teachers(plans: Sequence[TeacherPlan], cfg: FusionConfig, *, accelerator, show_progress: bool
                  ) -> TeacherResult:
    rows, per_source = [], []
    wants_signal = cfg.teacher_kd_weight > 0 or cfg.teacher_token_weighting != "none"
    for plan in plans:
        started = time.perf_counter()
        judged = judge_source(plan, cfg, accelerator=accelerator, show_progress=show_progress)
        labeller = judged.labeller
        provenance = {"base": plan.base, "base_revision": plan.base_revision or labeller.base_digest,
                      "adapter": cfg.sources[plan.index].adapter,
                      "adapter_revision": plan.adapter_revision or labeller.adapter_digest,
                      "placebo": cfg.teacher_placebo}
        dropped = {name: 0 for name in (*FILTERS, *ON_TASK_FILTERS)}
        if cfg.teacher_min_token_prob is not None:
            dropped[UNSURE_FILTER] = 0
        if cfg.teacher_discriminator:
            dropped[DISCRIMINATOR_FILTER] = 0
        kept, dropped_rows = [], []
        for p, g, reason in zip(judged.prompts, judged.generations, judged.reasons):
            if reason:
                dropped[reason] += 1
                dropped_rows.append((reason, p, g))
                continue
            signal = teacher_signal(g, labeller.tokenizer) if wants_signal else None
            kept.append(TeacherRow(plan.name, p.prompt, g.text.strip(), p.origin, g.mean_logprob, provenance,
                                   mean_excess(g), signal))
        rows += kept
        seconds = time.perf_counter() - started
        labelled = len(judged.generations)
        per_source.append({
            "source": plan.name, "index": plan.index, "base": plan.base, "prompt_format": plan.prompt_format,
            "given": sum(p.origin == "given" for p in plan.prompts),
            "replay_tagged": sum(p.origin == "replay" for p in plan.prompts),
            "synthesized": sum(p.origin == "synthesized" for p in judged.prompts), "synthesis": judged.synthesis,
            "labelled": labelled, "kept": len(kept), "dropped": dropped,
            "cached": judged.cached, "teacher_loaded": labeller.loaded, "seconds": round(seconds, 2),
            # What the synthesized rows teach, by answer kind (`none`, `works_for`, ...): a writer that imitates
            # `none` seeds shows up here before any fit.
            "synthesized_kinds": dict(Counter(answer_kind(r.response, prompt_text(r.prompt)) or "(prompt words only)"
                                              for r in kept if r.origin == "synthesized").most_common(6)),
            "samples": [r.to_json() for r in kept[:3]],
            "dropped_samples": [_dropped_sample(reason, p, g) for reason, p, g in _spread(dropped_rows)],
            "seed_profile": None if judged.profile is None else judged.profile.to_json(),
        })
        if labelled and 4 * len(kept) < labelled:
            _warn_kept_little(plan.name, len(kept), labelled, dropped)
        if judged.profile is not None and judged.profile.only_answer:
            _warn_one_answer(plan.name, judged.profile, len(plan.seeds), [r.response for r in kept])
        logger.info("teacher %s: %d prompts, kept %d (%s); %s", plan.name, labelled, len(kept),
                    ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "none dropped",
                    "all cached, teacher not loaded" if not labeller.loaded else f"{judged.cached} cached")
    report = {"mode": "placebo" if cfg.teacher_placebo else "sources", "rows": len(rows), "sources": per_source,
              "settings": generation_settings(cfg)}
    return TeacherResult(tuple(rows), report)


def teacher_signal(g: Generation, tokenizer) -> TokenSignal | None:
    if not g.top_ids:
        return None  # an answer cached without its per-token signal
    excess = [a - b for a, b in zip(g.token_logprobs, g.base_logprobs)] if g.base_logprobs \
        else [0.0] * len(g.token_ids)
    return build_signal(tokenizer, g.token_ids, g.top_ids, g.top_logprobs, excess, finished=g.finished)


def _spread(rows: list, n: int = 3) -> list:
    """Up to `n` dropped rows, one per reason first (a card shows why rows went, not n times the same reason)."""
    firsts = list({reason: (reason, p, g) for reason, p, g in reversed(rows)}.values())[::-1]
    return (firsts + [r for r in rows if r not in firsts])[:n]


def _dropped_sample(reason: str, prompt, g: Generation) -> dict:
    text = prompt_text(prompt.prompt)
    excess = mean_excess(g)
    return {"reason": reason, "origin": prompt.origin, "prompt": text, "response": g.text.strip(),
            "excess": None if excess is None else round(excess, 4)}


# What loosens each filter, for the warning when a teacher keeps little.
_FIXES = {"empty": "check the prompts' format (`prompt_format`)",
          "truncated": "raise `teacher_max_new_tokens` (or set `teacher_drop_truncated: false`)",
          "degenerate": "raise `teacher_repeat_ngram`", "low_logprob": "lower or unset `teacher_min_logprob`",
          "off_shape": "give seeds whose answers show every shape the task has (or `teacher_on_task_filter: false`)",
          "off_skill": "lower `teacher_min_excess_ratio` (or `teacher_on_task_filter: false`)",
          UNSURE_FILTER: "lower or unset `teacher_min_token_prob`",
          DISCRIMINATOR_FILTER: "give more seeds, or set `teacher_discriminator: false`"}


def _warn_kept_little(name: str, kept: int, labelled: int, dropped: dict[str, int]) -> None:
    reasons = sorted(((n, k) for k, n in dropped.items() if n), reverse=True)
    counts = ", ".join(f"{k} {n}" for n, k in reasons)
    fixes = "; ".join(_FIXES[k] for _, k in reasons if k in _FIXES)
    warnings.warn(f"teacher `{name}` kept {kept} of {labelled} answers (dropped: {counts}); its rows teach little: "
                  f"{fixes}", TeacherKeptLittleWarning, stacklevel=3)


def _warn_one_answer(name: str, profile: SeedProfile, n_seeds: int, kept: Sequence[str]) -> None:
    warnings.warn(one_answer_note(name, profile, n_seeds, kept), SeedsOneAnswerWarning, stacklevel=3)


def one_answer_note(name: str, profile: SeedProfile, n_seeds: int, kept: Sequence[str]) -> str:
    """What to tell a user whose seeds all get one answer (the warning of a fit, a line of the preview). Such seeds
    (four `none` seeds of a relation task) make a writer imitate that case, and they say nothing of what the other
    answers look like, so the on-task filters cannot judge those (benchmark v12: of the lives-in rows a writer made
    from four `none` seeds, about half answered `none`, and most found relations were ones the sentence does not
    state: `Jack travelled to Glasgow.` -> `lives_in: Jack, Glasgow`)."""
    same = sum(text == profile.only_answer for text in kept)
    return (f"teacher `{name}`: the expert answers `{profile.only_answer}` to all {n_seeds} seeds; the synthesized "
            f"prompts imitate them ({same} of {len(kept)} kept rows answer it too) and its other answers cannot be "
            "judged against any seed: give seeds (or `prompts`) on which the expert's answer differs")


__all__ = ["Judged", "TeacherResult", "TeacherRow", "judge_source", "one_answer_note", "run_teachers"]
