# SPDX-License-Identifier: Apache-2.0
"""Everything decided before any model weights are loaded: read and check the inputs, align, block.

    prepare(cfg) -> PreparedFusion
        inputs.resolve_input        local folders (Hub references through the pull lock)
        method.adapters / rank      the anchor and the sources as role units, sources re-factored to the anchor's rank
        method.align                per-source layer plans and matched modules
        method.fusion.build_groups  block tokens and spectra per (role, rank)
        data.replay                 the replay set (a malformed row fails here, before any compute)
        teacher.plan                which sources teach, with what

The dry run (`check`, `--dry-run`) prints this value; `pipeline.fit` trains from it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.replay import ReplayData, read_replay
from hf_heterofusion.data.safetensors_header import (
    HeaderError,
    checkpoint_files,
    checkpoint_header,
    checkpoint_shapes,
    lora_misfit,
)
from hf_heterofusion.errors import (
    AdapterFormatError,
    AdapterNotFoundError,
    ConfigError,
    IncompatibleAdaptersError,
    LowEnergyWarning,
)
from hf_heterofusion.inputs import resolve_input
from hf_heterofusion.method.adapters import LoraAdapter, load_adapter
from hf_heterofusion.method.align import AlignmentPlan, match_modules, plan_alignment
from hf_heterofusion.method.fusion import ModuleGroup, build_groups
from hf_heterofusion.method.rank import refactor_rank
from hf_heterofusion.method.roles import SUPPORTED_TARGET_FAMILIES
from hf_heterofusion.method.transfer_net import hypernet_parameters, next_power_of_two
from hf_heterofusion.teacher.plan import TeacherPlan, plan_teaching


LOW_ENERGY = 0.8  # below this share of a source's update energy kept at the anchor's rank, the run warns


@dataclass(frozen=True)
class PreparedFusion:
    """Everything decided before any model weights are loaded (also what the dry run prints)."""

    config: FusionConfig
    target_model_dir: Path
    target_model_config: dict
    target: LoraAdapter
    sources: tuple[LoraAdapter, ...]  # re-factored to the target rank
    raw_sources: tuple[LoraAdapter, ...]  # as read, before re-factoring (the report's original rank)
    energy_kept: tuple[float, ...]  # per source: share of dW's energy the rank re-factoring kept (1.0 if none)
    source_revisions: tuple[str | None, ...]  # pinned shas of Hub sources
    plan: AlignmentPlan
    groups: tuple[ModuleGroup, ...]
    block_size: int
    untouched: tuple[str, ...]  # target modules that receive nothing
    target_revisions: dict = field(default_factory=dict)  # pinned shas of Hub inputs
    replay: ReplayData | None = None  # read before any model: a malformed row fails at once
    teaching: tuple[TeacherPlan, ...] = ()  # sources that label prompts (`teacher: sources`)

    def hypernet_parameters(self) -> dict[str, int]:
        c = self.config
        return {g.role: hypernet_parameters(g.rank, self.block_size, c.embed_dim, c.max_position_embeddings,
                                            sources=len(self.sources), position_mode=c.position_mode)
                for g in self.groups}


def prepare(cfg: FusionConfig, *, lock: str | Path | None = None) -> PreparedFusion:
    """Read and check the adapters, align topologies, build block tokens and spectra.

    `lock` is the `heterofusion.lock.json` of `hf-heterofusion pull`, needed when inputs are Hub references.
    """
    model_dir, model_sha = resolve_input(cfg.target_model, what="target model", lock=lock)
    model_config = _read_model_config(model_dir, cfg)
    target_dir, target_sha = resolve_input(cfg.target_adapter, what="target adapter", lock=lock)
    target = load_adapter(target_dir, allow_pickle=cfg.allow_pickle, base_config=model_config)
    _check_against_base(target, model_dir)
    if cfg.update_mode != "b_only" and any(m.rows is not None for m in target.modules):
        raise ConfigError(f"`update_mode: {cfg.update_mode}` cannot update the shared A of fused projections "
                          f"({model_config.get('model_type')} target); use `update_mode: b_only`")
    raws, sources, energies, source_dirs = [], [], [], []
    for spec in cfg.sources:
        source_dir, source_sha = resolve_input(spec.adapter, what="source adapter", lock=lock)
        source_dirs.append((source_dir, source_sha))
        raw = load_adapter(source_dir, allow_pickle=cfg.allow_pickle)
        if raw.base_config is None and (given := _given_base_config(spec, lock)) is not None:
            # the adapter's own base path is gone (trained elsewhere): the base the config names says its family
            raw = load_adapter(source_dir, allow_pickle=cfg.allow_pickle, base_config=given)
        matched, energy = refactor_rank(raw, target.rank)
        if energy < LOW_ENERGY:
            warnings.warn(f"source `{spec.adapter}`: re-factored from rank {raw.rank} to the anchor's rank "
                          f"{target.rank}, it keeps only {energy:.0%} of its update's energy; use an anchor of "
                          f"rank >= {raw.rank}, or a source trained at rank {target.rank}", LowEnergyWarning,
                          stacklevel=2)
        raws.append(raw)
        sources.append(matched)
        energies.append(energy)
    plan = plan_alignment(target, sources, cfg.layer_alignment, cfg.transfer_ratio)
    matched = match_modules(target, sources, plan)
    block_size = cfg.block_size if cfg.block_size != "auto" else _auto_block_size(target, sources, model_config)
    groups = build_groups(matched, block_size=block_size,
                          per_source_positions=cfg.position_mode == "per_source")
    if cfg.embed_dim == "auto":
        cfg = cfg.model_copy(update={"embed_dim": _auto_embed_dim(cfg, model_dir, model_config, groups, block_size,
                                                                  len(sources))})
    aligned = {mm.target.module for g in groups for mm in g.matched}
    untouched = tuple(sorted({m.module for m in target.modules} - aligned))
    replay = read_replay(cfg.replay) if cfg.replay and cfg.max_steps != 0 else None
    teaching = plan_teaching(cfg, replay, lock=lock, adapter_dirs=source_dirs) if cfg.max_steps != 0 else ()
    return PreparedFusion(cfg, model_dir, model_config, target, tuple(sources), tuple(raws), tuple(energies),
                          tuple(sha for _, sha in source_dirs), plan, groups, block_size, untouched,
                          {"model": model_sha, "adapter": target_sha}, replay, teaching)


def _read_model_config(model_dir: Path, cfg: FusionConfig) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise AdapterNotFoundError(f"target model {model_dir} has no config.json; pass a transformers model directory")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterFormatError(f"cannot read {path} ({getattr(err, 'strerror', None) or err}); the target model "
                                 f"folder must hold a transformers config.json") from None
    if not isinstance(config, dict):
        raise AdapterFormatError(f"{path} must hold a JSON object; the target model folder is not a transformers "
                                 f"model")
    _check_model_weights(model_dir, cfg)
    if config.get("auto_map") and not cfg.trust_remote_code:
        raise ConfigError(f"target model {model_dir} ships custom code (auto_map), which runs when loaded; "
                          f"set `trust_remote_code: true` only if you trust its author")
    family = config.get("model_type")
    if family not in SUPPORTED_TARGET_FAMILIES:
        raise IncompatibleAdaptersError(f"target architecture `{family}` is not supported; supported: "
                                        f"{', '.join(SUPPORTED_TARGET_FAMILIES)}")
    return config


def _check_model_weights(model_dir: Path, cfg: FusionConfig) -> None:
    """Weights must be safetensors unless `allow_pickle` (transformers would unpickle `pytorch_model.bin`)."""
    if (model_dir / "model.safetensors").is_file() or (model_dir / "model.safetensors.index.json").is_file():
        return
    if not any(model_dir.glob("pytorch_model*.bin")):
        raise AdapterNotFoundError(f"target model {model_dir} has no weights (model.safetensors); pass a complete "
                                   f"transformers model directory")
    if not cfg.allow_pickle:
        raise AdapterFormatError(f"target model {model_dir} has only pickle weights (pytorch_model.bin), and loading "
                                 f"pickles can run arbitrary code; convert them to safetensors, or set "
                                 f"`allow_pickle: true` if you trust their author")


def _check_against_base(target: LoraAdapter, model_dir: Path) -> None:
    """Each LoRA module's (d_out, d_in) must equal its base weight's shape (cheap: safetensors headers only)."""
    try:
        shapes = checkpoint_shapes(model_dir)
    except HeaderError as err:
        raise AdapterFormatError(f"target model weights {err.path} are corrupt or truncated ({err.reason}); "
                                 f"re-download or re-save the model") from None
    if not shapes:
        return
    misfit = lora_misfit({k: tuple(v.shape) for k, v in target.tensors.items()}, shapes)
    if misfit is not None:
        module, weight, update, want = misfit
        raise AdapterFormatError(
            f"target adapter module `{module}` is {update[0]}x{update[1]} but the base weight `{weight}` is "
            f"{want[0]}x{want[1]}; the adapter was trained on a different base model"
        )


def _given_base_config(spec, lock) -> dict | None:
    """The `config.json` of a source's base as the config names it (`base_model:`, or mergekit's `base+adapter`),
    when that base is on this machine, else None. Used when the adapter's own `base_model_name_or_path` (often a
    path on the machine it was trained on) is gone; only the family, depth and fused splits are read from it."""
    if not spec.base_model:
        return None
    try:
        base_dir, _ = resolve_input(spec.base_model, what="source base model", lock=lock)
    except AdapterNotFoundError:
        return None  # a Hub base that was not pulled (it is pulled only when the source teaches)
    try:
        config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return config if isinstance(config, dict) else None


def _auto_embed_dim(cfg: FusionConfig, model_dir: Path, model_config: dict, groups, block_size: int,
                    n_sources: int) -> int:
    """`embed_dim: auto` (see its description in config.py): proportionate to the target's width, and nets never
    larger than the target itself (the paper's 1024 on a 135M model would be ~400x a tiny one's size)."""
    floor = 4 * cfg.num_heads
    ceiling = max(floor, min(1024, (model_config.get("hidden_size") or 4096) // 4))
    e = floor  # widths num_heads x 2^k: the heads always divide them
    while 2 * e <= ceiling:
        e *= 2
    target = sum(info.numel for info in checkpoint_header(model_dir).values()) if checkpoint_files(model_dir) else 0

    def nets(e: int) -> int:
        return sum(hypernet_parameters(g.rank, block_size, e, cfg.max_position_embeddings, sources=n_sources,
                                       position_mode=cfg.position_mode) for g in groups)

    while target and e > floor and nets(e) > target:
        e //= 2
    return e


def _auto_block_size(target: LoraAdapter, sources, model_config: dict) -> int:
    hidden = [model_config.get("hidden_size") or 0] + [s.hidden_size or 0 for s in sources]
    return next_power_of_two(max(hidden))


__all__ = ["LOW_ENERGY", "PreparedFusion", "prepare"]
