# SPDX-License-Identifier: Apache-2.0
"""Constants shared by the stages: file names and paper defaults that are not config keys."""

from __future__ import annotations


# PEFT adapter files.
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_PICKLE_NAME = "adapter_model.bin"

# Files written next to a fused adapter.
REPORT_NAME = "fusion_report.json"
CONFIG_COPY_NAME = "heterofusion_config.yml"
LOSS_PLOT_NAME = "loss_curve.png"
TEACHER_REPLAY_NAME = "teacher_replay.jsonl"  # the rows the teachers labelled, with provenance
MERGEKIT_CONFIG_NAME = "mergekit_config.yml"  # the mergekit YAML a `merge` ran, as given
ALIGNMENT_PLOT_NAME = "alignment.png"
CARD_NAME = "README.md"
LOCK_NAME = "heterofusion.lock.json"
MERGED_SUBDIR = "merged"

# A base model's tokenizer files: copied next to a merged model (`--copy-tokenizer`) and pushed with an adapter.
TOKENIZER_FILES = (
    "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "added_tokens.json",
    "merges.txt", "vocab.json", "chat_template.jinja", "chat_template.json",
)

# The canonical module roles of a decoder layer (paper §2.2).
ROLES = ("q", "k", "v", "o", "gate", "up", "down")

PAPER_URL = "https://arxiv.org/abs/2604.01674"
PAPER_CITATION = """@article{chen2026heterofusion,
  title   = {Can Heterogeneous Language Models Be Fused?},
  author  = {Chen, Shilian and Zhou, Jie and Chen, Qin and Wu, Wen and Li, Xin and Feng, Qi and He, Liang},
  journal = {arXiv preprint arXiv:2604.01674},
  year    = {2026}
}"""
