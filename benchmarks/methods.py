# SPDX-License-Identifier: Apache-2.0
"""The benchmark's methods by name: what each one is (`METHOD_LABELS`), which switches it adds to its
`FusionConfig` (`DISTILL`), and which placebo controls which method (`CONTROLLED_BY`). `run.py` turns a name into a
config and a run; `tuning.py` keys its cache on them.
"""

from __future__ import annotations


METHOD_LABELS = {
    "anchor": "target anchor only",
    "task_arithmetic": "Task Arithmetic (aligned deltas)",
    "ties": "TIES (aligned deltas, density 0.5)",
    "dare_ties": "DARE-TIES (aligned deltas, density 0.5)",
    "sft": "data-only SFT of the anchor (labelled rows)",
    "sft_teacher": "data-only SFT on labelled + teacher rows",
    "hf": "HeteroFusion, paper config, no teacher",
    "hf_improved": "HeteroFusion, improved preset, no teacher",
    "hf_placebo": "HeteroFusion, placebo sources, no teacher",
    "hf_teacher": "HeteroFusion with teacher",
    "hf_teacher_placebo": "HeteroFusion with placebo teacher (B = 0)",
    "sft_teacher_bal": "data-only SFT on labelled + teacher rows, task-balanced",
    "hf_teacher_bal": "HeteroFusion with teacher, task-balanced",
    "hf_teacher_placebo_bal": "HeteroFusion with placebo teacher (B = 0), task-balanced",
    # The distillation ablation (trainer: lora, task-balanced), each row adding one switch to the one above it.
    "sft_kd_bal": "SFT on teacher rows, balanced, + token KD",
    "sft_kd_skill_bal": "SFT on teacher rows, balanced, + token KD + skill weighting",
    "sft_kd_skill_anchor_bal": "SFT on teacher rows, balanced, + token KD + skill weighting + anchor KD",
    "sft_full_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_teacher_placebo_bal": "SFT on teacher rows, balanced, placebo teacher (B = 0)",
    "sft_oldsynth_bal": "SFT on teacher rows, balanced; synthesis as before (source base writes, no on-task filter)",
    "sft_srcwriter_bal": "SFT on teacher rows, balanced; the source base writes, on-task filters on",
    "sft_kinds_bal": "SFT on teacher rows, balanced by task and, within a task, by answer kind (task_answer)",
    "sft_kinds_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_steer_bal": "SFT on teacher rows, balanced; the writer steered by the seeds' answer kinds",
    "sft_steer_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_para_bal": "SFT on teacher rows, balanced; the writer rewords the seeds (synthesis_style: paraphrase)",
    "sft_para_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_mix_bal": "SFT on teacher rows, balanced; the writer continues lists and rewords seeds (mixed)",
    "sft_mix_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_sure_bal": "SFT on teacher rows, balanced; synthesized rows the expert is unsure of dropped (p < 0.9)",
    "sft_sure_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_sure98_bal": "SFT on teacher rows, balanced; synthesized rows the expert is unsure of dropped (p < 0.98)",
    "sft_sure98_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_sure_kinds_bal": "sft_sure_bal, and within a task every answer kind a labelled row shows drawn alike",
    "sft_sure_kinds_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_spare_bal": "sft_sure_bal, hesitant `none` answers kept (teacher_unsure_spares: [none])",
    "sft_spare_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_spare_kinds_bal": "sft_sure_kinds_bal, hesitant `none` answers kept (teacher_unsure_spares: [none])",
    "sft_spare_kinds_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_clip_bal": "sft_teacher_bal with the gradient norm clipped to 1.0 (max_grad_norm: 1.0)",
    "sft_sure_clip_bal": "sft_sure_bal with the gradient norm clipped to 1.0 (max_grad_norm: 1.0)",
    "sft_clip_placebo_bal": "sft_clip_bal with a placebo teacher (B = 0)",
    "sft_tgtwriter_clip_bal": "sft_clip_bal, the target writes the synthesized prompts (synthesizer: target)",
    "sft_tgtwriter_clip_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_rounds_clip_bal": "sft_clip_bal, prompts written in 3 rounds that show kept ones again (synthesis_rounds: 3)",
    "sft_rounds_clip_placebo_bal": "the row above with a placebo teacher (B = 0)",
    "sft_auto_bal": "SFT on teacher rows, balanced, best held-out step of the 72",
    "sft_full_auto_bal": "SFT + token KD + skill weighting + anchor KD, best held-out step of the 72",
}
# method -> the distillation switches it adds (weights 1.0: set once, not tuned)
DISTILL = {
    "sft_kd_bal": {"teacher_kd_weight": 1.0},
    "sft_kd_skill_bal": {"teacher_kd_weight": 1.0, "teacher_token_weighting": "skill"},
    "sft_kd_skill_anchor_bal": {"teacher_kd_weight": 1.0, "teacher_token_weighting": "skill", "anchor_kd_weight": 1.0},
    "sft_full_placebo_bal": {"teacher_kd_weight": 1.0, "teacher_token_weighting": "skill", "anchor_kd_weight": 1.0},
    "sft_teacher_placebo_bal": {},
    "sft_oldsynth_bal": {"teacher_on_task_filter": False},
    "sft_srcwriter_bal": {},
    "sft_kinds_bal": {"replay_balance": "task_answer"},
    "sft_kinds_placebo_bal": {"replay_balance": "task_answer"},
    "sft_steer_bal": {"synthesis_steer": "answer"},
    "sft_steer_placebo_bal": {"synthesis_steer": "answer"},
    "sft_para_bal": {"synthesis_style": "paraphrase"},
    "sft_para_placebo_bal": {"synthesis_style": "paraphrase"},
    "sft_mix_bal": {"synthesis_style": "mixed"},
    "sft_mix_placebo_bal": {"synthesis_style": "mixed"},
    "sft_sure_bal": {"teacher_min_token_prob": 0.9},
    "sft_sure_placebo_bal": {"teacher_min_token_prob": 0.9},
    "sft_sure98_bal": {"teacher_min_token_prob": 0.98},
    "sft_sure98_placebo_bal": {"teacher_min_token_prob": 0.98},
    "sft_sure_kinds_bal": {"teacher_min_token_prob": 0.9, "replay_balance": "task_answer"},
    "sft_sure_kinds_placebo_bal": {"teacher_min_token_prob": 0.9, "replay_balance": "task_answer"},
    "sft_spare_bal": {"teacher_min_token_prob": 0.9, "teacher_unsure_spares": ["none"]},
    "sft_spare_placebo_bal": {"teacher_min_token_prob": 0.9, "teacher_unsure_spares": ["none"]},
    "sft_spare_kinds_bal": {"teacher_min_token_prob": 0.9, "teacher_unsure_spares": ["none"],
                            "replay_balance": "task_answer"},
    "sft_spare_kinds_placebo_bal": {"teacher_min_token_prob": 0.9, "teacher_unsure_spares": ["none"],
                                    "replay_balance": "task_answer"},
    "sft_clip_bal": {"max_grad_norm": 1.0},
    "sft_sure_clip_bal": {"teacher_min_token_prob": 0.9, "max_grad_norm": 1.0},
    "sft_clip_placebo_bal": {"max_grad_norm": 1.0},
    "sft_tgtwriter_clip_bal": {"max_grad_norm": 1.0},
    "sft_tgtwriter_clip_placebo_bal": {"max_grad_norm": 1.0},
    "sft_rounds_clip_bal": {"max_grad_norm": 1.0, "synthesis_rounds": 3},
    "sft_rounds_clip_placebo_bal": {"max_grad_norm": 1.0, "synthesis_rounds": 3},
    "sft_auto_bal": {"step_selection": "held_out"},
    "sft_full_auto_bal": {"teacher_kd_weight": 1.0, "teacher_token_weighting": "skill", "anchor_kd_weight": 1.0,
                          "step_selection": "held_out"},
}
METHODS = tuple(METHOD_LABELS)
MERGES = ("task_arithmetic", "ties", "dare_ties")
DETERMINISTIC = ("anchor", "task_arithmetic", "ties")  # one run each; everything else gets every seed
SFT_LIKE = ("sft", "sft_teacher", "sft_teacher_bal", *DISTILL)  # train the anchor adapter: `sft_lrs`; the rest: `fusion_lrs`
# `_bal`: the same teacher method with `replay_balance: task` (every task an equal share of each epoch).
BALANCED = ("sft_teacher_bal", "hf_teacher_bal", "hf_teacher_placebo_bal", *DISTILL)
TEACHER_METHODS = ("sft_teacher", "hf_teacher", "hf_teacher_placebo", *BALANCED)
PLACEBO_TEACHER = ("hf_teacher_placebo", "hf_teacher_placebo_bal", "sft_full_placebo_bal", "sft_teacher_placebo_bal",
                   "sft_kinds_placebo_bal", "sft_steer_placebo_bal", "sft_para_placebo_bal",
                   "sft_mix_placebo_bal", "sft_sure_placebo_bal", "sft_sure98_placebo_bal",
                   "sft_sure_kinds_placebo_bal",
                   "sft_spare_placebo_bal", "sft_spare_kinds_placebo_bal", "sft_clip_placebo_bal",
                   "sft_tgtwriter_clip_placebo_bal", "sft_rounds_clip_placebo_bal")
# method -> per-source keys it changes (who writes the synthesized prompts)
SOURCE_SWITCHES = {"sft_oldsynth_bal": {"synthesizer": "source"}, "sft_srcwriter_bal": {"synthesizer": "source"},
                   "sft_tgtwriter_clip_bal": {"synthesizer": "target"},
                   "sft_tgtwriter_clip_placebo_bal": {"synthesizer": "target"}}
# placebo -> the method it controls
CONTROLLED_BY = {"hf_placebo": "hf", "hf_teacher_placebo": "hf_teacher", "hf_teacher_placebo_bal": "hf_teacher_bal",
                 "sft_full_placebo_bal": "sft_kd_skill_anchor_bal", "sft_teacher_placebo_bal": "sft_teacher_bal",
                 "sft_kinds_placebo_bal": "sft_kinds_bal", "sft_steer_placebo_bal": "sft_steer_bal",
                 "sft_para_placebo_bal": "sft_para_bal", "sft_mix_placebo_bal": "sft_mix_bal",
                 "sft_sure_placebo_bal": "sft_sure_bal", "sft_sure98_placebo_bal": "sft_sure98_bal",
                 "sft_sure_kinds_placebo_bal": "sft_sure_kinds_bal", "sft_spare_kinds_placebo_bal": "sft_spare_kinds_bal",
                 "sft_spare_placebo_bal": "sft_spare_bal", "sft_clip_placebo_bal": "sft_clip_bal",
                 "sft_tgtwriter_clip_placebo_bal": "sft_tgtwriter_clip_bal",
                 "sft_rounds_clip_placebo_bal": "sft_rounds_clip_bal"}
