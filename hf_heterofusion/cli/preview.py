# SPDX-License-Identifier: Apache-2.0
"""`hf-heterofusion check CONFIG --teacher-preview N`: what each teacher would teach, before paying for a fit.

Per teaching source: up to N of its own prompts and, when it synthesizes, N prompts written from its seeds, each
labelled by the expert and shown with every filter's verdict (`kept`, or the filter that dropped it) and the
adapter's gain over its base. The answers land in the teacher cache, so a later fit with the same settings reuses
them.
"""

from __future__ import annotations

from dataclasses import replace

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.prepare import prepare
from hf_heterofusion.teacher.filters import least_token_prob, mean_excess
from hf_heterofusion.teacher.labeller import release_resident
from hf_heterofusion.teacher.run import judge_source, one_answer_note


WIDTH = 60  # characters of a prompt or an answer shown


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= WIDTH else flat[:WIDTH - 3] + "..."


def teacher_preview(cfg: FusionConfig, n: int, *, lock=None) -> str:
    """The preview table of every teaching source (text, one block per source)."""
    prepared = prepare(cfg, lock=lock)
    if not prepared.teaching:
        return "no source teaches (`teacher: none`, or no source has prompts or `synthesize`): nothing to preview"
    blocks = []
    try:
        judged_all = [judge_source(replace(plan, prompts=plan.prompts[:n], synthesize=min(plan.synthesize, n)),
                                   prepared.config, show_progress=False) for plan in prepared.teaching]
    finally:
        release_resident()  # sources on one base share it; nothing stays loaded after the preview
    for plan, judged in zip(prepared.teaching, judged_all):
        kept = sum(r is None for r in judged.reasons)
        lines = [f"source `{plan.name}` ({plan.base}; prompts written by: "
                 f"{plan.writer if plan.synthesize else '-'}): {kept} of {len(judged.reasons)} kept"]
        if judged.profile is not None:
            p = judged.profile.to_json()
            lines.append(f"  on-task reference (the expert on its {len(plan.seeds)} seeds): punctuation "
                         f"{p['marks']!r}, {p['words'][0]}-{p['words'][1]} words, gain over base {p['seed_excess']}")
            if judged.profile.only_answer:
                answers = [g.text.strip() for g, reason in zip(judged.generations, judged.reasons) if reason is None]
                lines.append("  " + one_answer_note(plan.name, judged.profile, len(plan.seeds), answers))
        if "steered" in judged.synthesis:  # `synthesis_steer: answer`: which seed kind each written prompt imitates
            lines.append("  written from seeds of each answer kind: " + ", ".join(
                f"{kind} {n}" for kind, n in judged.synthesis["steered"].items()))
        if "reworded" in judged.synthesis:  # `synthesis_style: paraphrase | mixed`
            written = sum(p.origin == "synthesized" for p in judged.prompts)
            lines.append(f"  written by rewording a seed: {judged.synthesis['reworded']} of {written} synthesized")
        for r, info in enumerate(judged.synthesis.get("rounds", ())):  # `synthesis_rounds`
            shown = ", ".join(f"{kind} {n}" for kind, n in info["shown_kinds"].items()) or "the seeds only"
            lines.append(f"  round {r + 1}: {info['written']} written, {info['kept']} kept; "
                         f"shown besides seeds: {shown}")
        for prompt, gen, reason in zip(judged.prompts, judged.generations, judged.reasons):
            text = prompt.prompt if isinstance(prompt.prompt, str) else prompt.prompt[-1]["content"]
            notes = [] if (gain := mean_excess(gen)) is None else [f"gain {gain:+.2f}"]
            if cfg.teacher_min_token_prob is not None and gen.token_logprobs:  # what the `unsure` filter judges
                notes.append(f"least token p {least_token_prob(gen):.2f}")
            lines.append(f"  [{reason or 'kept'}] ({prompt.origin}) {_short(text)!r} -> {_short(gen.text)!r}"
                         + (f" ({', '.join(notes)})" if notes else ""))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


__all__ = ["teacher_preview"]
