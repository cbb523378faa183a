# SPDX-License-Identifier: Apache-2.0
"""Trained mode: a mergekit YAML with `base_model: target+anchor_adapter` -> a checked `FusionConfig`.

Every key is checked (mergekit ignores unknown `parameters:`), relative paths are resolved against the YAML's
folder, and the lock file beside the YAML (from `hf-heterofusion pull`) is picked up for Hub references.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.constants import LOCK_NAME
from hf_heterofusion.errors import ConfigError

from . import METHOD_NAME
from .yaml_config import (
    SOURCE_KEYS,
    TRAINED_KEYS,
    UNSUPPORTED_TRAINED_KEYS,
    MergeYaml,
    _check_top_level_keys,
    _dtype_name,
    _model_entries,
    _model_ref,
    _parameters,
    _resolve,
    _resolve_path,
)


@dataclass(frozen=True)
class TrainedJob:
    """The trained mode: the fusion config plus the mergekit-level settings the export honours."""

    config: FusionConfig
    dtype: str | None
    out_dtype: str | None
    doc: MergeYaml
    lock: Path | None = None  # `heterofusion.lock.json` beside the YAML (written by `hf-heterofusion pull`)



def trained_job(doc: MergeYaml, *, random_seed: int | None = None, trust_remote_code: bool = False) -> TrainedJob:
    """The `FusionConfig` of a trained-mode YAML, every key checked (see the module docstring).

    Args:
        doc (`MergeYaml`): the YAML, with `merge_method: heterofusion` and `base_model: target+anchor`.
        random_seed (`int`, *optional*): mergekit's `--random-seed`; used as `seed` unless the YAML sets one.
        trust_remote_code (`bool`, *optional*, defaults to `False`): mergekit's `--trust-remote-code`.

    Raises:
        `ConfigError`: unknown or unsupported keys, bad values, no sources.
    """
    data = doc.data
    _check_top_level_keys(doc)
    for key, why in UNSUPPORTED_TRAINED_KEYS.items():
        if data.get(key) is not None:
            raise ConfigError(f"{doc.where}: `{key}` is not supported by `merge_method: {METHOD_NAME}`: {why}")
    base = _model_ref(data.get("base_model"), doc, "base_model")
    if base.lora is None:  # pragma: no cover - callers route on `doc.mode`
        raise ConfigError(f"{doc.where}: `base_model` must be `target_model+anchor_adapter` in the trained mode")
    params = _parameters(doc, data.get("parameters"), TRAINED_KEYS, "parameters", single_values=True)
    default_weight = params.pop("weight", 1.0)
    sources = []
    for i, entry in enumerate(_model_entries(doc)):
        ref = _model_ref(entry.get("model"), doc, f"models[{i}].model")
        local = _parameters(doc, entry.get("parameters"), SOURCE_KEYS, f"models[{i}].parameters", single_values=True)
        if ref == base or (ref.lora is None and ref.model == base.model):
            if local:
                raise ConfigError(f"{doc.where}: `models[{i}]` is the base model (target and anchor adapter); "
                                  f"it takes no per-model parameters")
            continue
        adapter = ref.lora if ref.lora is not None else ref.model
        source_base = _resolve(ref.model, doc) if ref.lora is not None else None
        if isinstance(local.get("prompts"), str):
            local["prompts"] = _resolve_path(local["prompts"], doc)
        sources.append({**local, "adapter": _resolve(adapter, doc), "base_model": source_base,
                        "weight": local.get("weight", default_weight)})
    if not sources:
        raise ConfigError(f"{doc.where}: `models:` lists no source adapter; add `- model: source_base+adapter` "
                          f"(or a bare adapter path) for each expert to fuse into the target")
    mapping: dict[str, Any] = {
        "target_model": _resolve(base.model, doc),
        "target_adapter": _resolve(base.lora, doc),
        "sources": sources,
        **params,
    }
    if isinstance(mapping.get("replay"), str):
        mapping["replay"] = _resolve_path(mapping["replay"], doc)
    if "seed" not in params and random_seed is not None:
        mapping["seed"] = random_seed
    if trust_remote_code:
        mapping["trust_remote_code"] = True
    config = FusionConfig.from_mapping(mapping, where=doc.where)
    lock = doc.base_dir / LOCK_NAME
    return TrainedJob(config, _dtype_name(doc, "dtype"), _dtype_name(doc, "out_dtype"), doc,
                      lock if lock.is_file() else None)



__all__ = ["TrainedJob", "trained_job"]
