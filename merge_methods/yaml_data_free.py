# SPDX-License-Identifier: Apache-2.0
"""Data-free mode: `base_model` without an adapter stays a mergekit config, checked before mergekit plans it.

References are resolved, bare adapters are attached to `base_model` (`base_model+adapter`), and every input must
share the base's architecture (shapes from safetensors headers only), because that is all mergekit's planner and
the data-free kernel can handle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from hf_heterofusion.config import PARAMETER_KEYS
from hf_heterofusion.constants import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from hf_heterofusion.data.safetensors_header import checkpoint_shapes, file_shapes, lora_misfit
from hf_heterofusion.errors import ConfigError, IncompatibleAdaptersError

from .yaml_config import (
    DATA_FREE_KEYS,
    MergeYaml,
    _check_top_level_keys,
    _format_ref,
    _merge_configuration,
    _model_entries,
    _model_ref,
    _parameter_scopes,
    _parameters,
    _resolve,
)


if TYPE_CHECKING:
    from mergekit.common import ModelReference
    from mergekit.config import MergeConfiguration


def data_free_configuration(doc: MergeYaml) -> tuple[MergeConfiguration, bool]:
    """A checked `MergeConfiguration` for the data-free kernel, and whether it references LoRA adapters.

    Raises:
        `ConfigError`: unknown keys, trained-mode keys, or a bare adapter without `base_model`.
        `IncompatibleAdaptersError`: an input whose architecture or shapes differ from the base model's.
    """
    data = dict(doc.data)
    _check_top_level_keys(doc)
    base_raw = data.get("base_model")
    base = _model_ref(base_raw, doc, "base_model") if base_raw is not None else None
    for where, params, per_input in _parameter_scopes(doc):
        allowed = ("weight",) if per_input else DATA_FREE_KEYS
        for key, value in (params or {}).items():
            if key in PARAMETER_KEYS and key not in allowed:
                shown = str(base.model) if base is not None else "TARGET"
                raise ConfigError(
                    f"{doc.where}: `{where}.{key}` is a trained-mode parameter, but `base_model` has no anchor adapter, "
                    f"so this config runs the data-free kernel; write `base_model: {shown}+ANCHOR_ADAPTER` to train, "
                    f"or remove `{key}`"
                )
            if key == "output" and value not in (None, "merged"):
                raise ConfigError(f"{doc.where}: the data-free mode writes a merged model (`output: merged`); "
                                  f"`output: {value}` needs the trained mode (`base_model: target+anchor_adapter`)")
        _parameters(doc, params, allowed, where, single_values=False)
    if base is not None:
        data["base_model"] = _format_ref(base, doc)
    uses_lora = base is not None and base.lora is not None
    if data.get("models"):
        rewritten = []
        for i, entry in enumerate(_model_entries(doc)):
            ref = _model_ref(entry.get("model"), doc, f"models[{i}].model")
            if ref.lora is None and _is_adapter_dir(_resolve(ref.model, doc)):
                if base is None:
                    raise ConfigError(f"{doc.where}: `models[{i}]` is a LoRA adapter; the data-free mode needs "
                                      f"`base_model` to attach it to (or write `- model: base+adapter`)")
                ref = ref.model_copy(update={"model": base.model, "lora": ref.model})
            uses_lora = uses_lora or ref.lora is not None
            rewritten.append({**entry, "model": _format_ref(ref, doc)})
        data["models"] = rewritten
    config = _merge_configuration(doc, data)
    if base is not None:
        _check_same_architecture(doc, config, base)
    return config, uses_lora



def _is_adapter_dir(path: str) -> bool:
    return (Path(path) / ADAPTER_CONFIG_NAME).is_file()


def _local_config(path: str) -> dict | None:
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _check_same_architecture(doc: MergeYaml, config: MergeConfiguration, base: ModelReference) -> None:
    """The data-free kernel merges same-shaped tensors: say so plainly instead of mergekit's shape errors."""
    base_path = _resolve(base.model, doc)
    base_cfg = _local_config(base_path)
    if base_cfg is None:
        return  # a Hub model: mergekit checks it when it has downloaded it
    keys = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size")
    shapes = checkpoint_shapes(base_path)
    for ref in config.referenced_models():
        model_cfg = _local_config(ref.model.path)
        if model_cfg is not None and any(model_cfg.get(k) != base_cfg.get(k) for k in keys):
            got = ", ".join(f"{k} {model_cfg.get(k)}" for k in keys)
            want = ", ".join(f"{k} {base_cfg.get(k)}" for k in keys)
            raise IncompatibleAdaptersError(
                f"{doc.where}: the data-free mode merges inputs of the base model's architecture, but {ref.model.path} "
                f"has {got} (base: {want}); to fuse other families write `base_model: target+anchor_adapter` and "
                f"add a `replay` set (trained mode)"
            )
        if ref.lora is not None and shapes:
            _check_adapter_fits(doc, ref.lora.path, shapes)



def _check_adapter_fits(doc: MergeYaml, adapter: str, shapes: dict[str, tuple[int, ...]]) -> None:
    weights = Path(adapter) / ADAPTER_WEIGHTS_NAME
    if not weights.is_file():
        return
    misfit = lora_misfit(file_shapes(weights), shapes)
    if misfit is not None:
        _, weight, update, want = misfit
        raise IncompatibleAdaptersError(
            f"{doc.where}: adapter {adapter} does not fit the base model: `{weight}` is {want[0]}x{want[1]} but "
            f"the adapter's update is {update[0]}x{update[1]}; the data-free mode merges adapters of the base "
            f"model only (trained mode: `base_model: target+anchor`)"
        )



__all__ = ["data_free_configuration"]
