# SPDX-License-Identifier: Apache-2.0
"""`fusion_report.json`: what a fusion did, in one machine-readable mapping (the card is rendered from it).

Alignment plan, per-role gate sparsity, alpha and size, each source (with its attention share and, added by the
pipeline, its ablation effect), the loss curve, timings, versions, seed and the config. The teacher stage and the
evaluation add their own sections.
"""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from . import __version__
from .adapters import LoraAdapter


if TYPE_CHECKING:
    from .pipeline import PreparedFusion


def source_report(spec, raw: LoraAdapter, energy: float) -> dict:
    return {
        "adapter": spec.adapter, "revision": None, "base_model": spec.base_model or raw.config.get(
            "base_model_name_or_path"), "family": raw.family, "num_layers": raw.num_layers,
        "hidden_size": raw.hidden_size, "rank": raw.rank, "original_rank": raw.rank,
        "energy_kept": round(energy, 6), "lora_alpha": raw.lora_alpha, "target_modules": list(raw.target_modules),
        "roles": list(raw.roles), "weight": spec.weight, "license": adapter_license(raw.path),
    }


def adapter_license(adapter_dir: Path) -> str | None:
    readme = adapter_dir / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return None
    return meta.get("license") if isinstance(meta, dict) else None


def versions() -> dict[str, str]:
    out = {"hf_heterofusion": __version__}
    for pkg in ("torch", "transformers", "peft", "mergekit", "huggingface_hub", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def build_report(prepared: PreparedFusion, stats: dict, result, n_examples: int, truncated: int,
                 timings: dict) -> dict:
    cfg, target = prepared.config, prepared.target
    params = prepared.hypernet_parameters()
    roles = {}
    for g in prepared.groups:
        roles[g.role] = {
            "rank": g.rank, "layers": len(g.matched),
            "target_tokens": sum(b.target_tokens.shape[0] * b.target_tokens.shape[1] for b in g.buckets),
            "source_tokens": sum(b.source_tokens.shape[0] * b.source_tokens.shape[1] for b in g.buckets),
            "parameters": params[g.role], **stats["roles"].get(g.role, {}),
        }
    sources = [dict(s, contribution=round(c, 6)) for s, c in zip(prepared.source_reports, stats["contribution"])]
    losses = list(result.losses) if result else []
    return {
        "hf_heterofusion_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
        "target": {
            "model": cfg.target_model, "adapter": cfg.target_adapter,
            "model_revision": prepared.target_revisions.get("model"),
            "adapter_revision": prepared.target_revisions.get("adapter"), "family": prepared.target_model_config.get("model_type"),
            "num_layers": target.num_layers, "hidden_size": prepared.target_model_config.get("hidden_size"),
            "rank": target.rank, "lora_alpha": target.lora_alpha, "target_modules": list(target.target_modules),
            "license": adapter_license(target.path),
        },
        "sources": sources,
        "alignment": prepared.plan.to_dict(),
        "block_size": prepared.block_size,
        "modules": {"aligned": sum(len(g.matched) for g in prepared.groups), "untouched": list(prepared.untouched)},
        "roles": roles,
        "hypernet_parameters_total": sum(params.values()),
        "training": {
            "replay_examples": n_examples, "truncated": truncated,
            "optimizer_steps": result.optimizer_steps if result else 0,
            "micro_steps": result.micro_steps if result else 0,
            "resumed_from_step": result.resumed_from if result else None,
            "losses": losses, "final_loss": losses[-1]["loss"] if losses else None,
        },
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": versions(),
        "evaluation": None,
    }
