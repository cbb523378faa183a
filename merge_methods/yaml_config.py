# SPDX-License-Identifier: Apache-2.0
"""A mergekit YAML with `merge_method: heterofusion` -> a checked job, before mergekit (or training) sees it.

Trained mode (`base_model: target+anchor_adapter`) becomes a `FusionConfig`::

    merge_method: heterofusion
    base_model: ./llama-base+./llama-task-a       # target base + anchor adapter (fixes r, modules, alpha)
    models:
      - model: ./qwen-base+./qwen-task-b          # source base + adapter: the source base is never loaded
        parameters: {weight: 1.0}                 # -> SourceSpec.weight
      - model: ./phi3-task-c                      # a bare adapter reference works too
    parameters: {replay: replay.jsonl, block_size: auto, output: adapter}
    dtype: float32                                # merged export: cast the target's weights at load
    out_dtype: bfloat16                           # cast written tensors (adapter and merged)

Data-free mode (`base_model` without an adapter) stays a mergekit config: its references are resolved, bare
adapters are attached to `base_model` (`base_model+adapter`), and the inputs are checked to share the target's
architecture, because that is all mergekit's planner and the data-free kernel can handle.

Relative paths are resolved against the YAML's folder (a path that only exists relative to the working directory
is kept as mergekit would use it; anything else is treated as a Hub id). mergekit ignores unknown keys under
`parameters:`; here every key is checked, and a typo is a one-line `ConfigError` naming it.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from hf_heterofusion.config import PARAMETER_KEYS, FusionConfig
from hf_heterofusion.constants import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, LOCK_NAME
from hf_heterofusion.errors import ConfigError, IncompatibleAdaptersError

from . import METHOD_NAME


if TYPE_CHECKING:
    from mergekit.common import ModelPath, ModelReference
    from mergekit.config import MergeConfiguration


KERNEL_KEYS = ("weight", "density", "normalize")
TRAINED_KEYS = (*PARAMETER_KEYS, "weight")
# Keys of one source under `models[i].parameters` (SourceSpec fields that are not set by `model:` itself).
SOURCE_KEYS = ("weight", "name", "prompts", "synthesize", "prompt_format")
DATA_FREE_KEYS = (*KERNEL_KEYS, "output")
# mergekit options the trained mode cannot honour: the output keeps the target's layers and tokenizer.
UNSUPPORTED_TRAINED_KEYS = {
    "slices": "layers are paired by `layer_alignment`, not by slices; list the sources under `models:`",
    "modules": "layers are paired by `layer_alignment`, not by modules; list the sources under `models:`",
    "tokenizer": "the output keeps the target's tokenizer",
    "tokenizer_source": "the output keeps the target's tokenizer",
    "chat_template": "the output keeps the target's tokenizer and chat template",
}


@dataclass(frozen=True)
class MergeYaml:
    """One mergekit YAML file: its verbatim text (copied as `mergekit_config.yml`), its mapping and its folder."""

    text: str
    data: dict[str, Any]
    where: str
    base_dir: Path

    @property
    def merge_method(self) -> Any:
        return self.data.get("merge_method")

    @property
    def is_heterofusion(self) -> bool:
        return self.merge_method == METHOD_NAME

    @property
    def mode(self) -> Literal["trained", "data_free"]:
        """`trained` when `base_model` carries an anchor adapter (`target+adapter`), else `data_free`."""
        base = self.data.get("base_model")
        if base is None:
            return "data_free"
        return "trained" if _model_ref(base, self, "base_model").lora is not None else "data_free"


@dataclass(frozen=True)
class TrainedJob:
    """The trained mode: the fusion config plus the mergekit-level settings the export honours."""

    config: FusionConfig
    dtype: str | None
    out_dtype: str | None
    doc: MergeYaml
    lock: Path | None = None  # `heterofusion.lock.json` beside the YAML (written by `hf-heterofusion pull`)


def read_merge_yaml(path: str | Path) -> MergeYaml:
    """Read a mergekit YAML file (a mapping), with one-line errors for a missing file or bad YAML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (IsADirectoryError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read ({type(err).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (a mergekit config), got {type(data).__name__}")
    return MergeYaml(text, data, str(path), Path(os.path.abspath(path)).parent)


# --------------------------------------------------------------------------------------------- trained mode


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


# ------------------------------------------------------------------------------------------- data-free mode


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


def merge_configuration(doc: MergeYaml) -> MergeConfiguration:
    """mergekit's own parse of the YAML, with its errors turned into one `ConfigError` line."""
    return _merge_configuration(doc, doc.data)


# ---------------------------------------------------------------------------------------------- helpers


def _merge_configuration(doc: MergeYaml, data: dict) -> MergeConfiguration:
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    try:
        return MergeConfiguration.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ConfigError(f"{doc.where}: not a valid mergekit config: `{loc}` {first['msg']}") from None
    except (RuntimeError, ValueError) as err:  # mergekit's validators raise bare RuntimeErrors
        raise ConfigError(f"{doc.where}: not a valid mergekit config: {str(err).splitlines()[0]}") from None


def _check_top_level_keys(doc: MergeYaml) -> None:
    """mergekit ignores unknown top-level keys too (`parameter:` for `parameters:` would vanish silently)."""
    from mergekit.config import MergeConfiguration

    fields = list(MergeConfiguration.model_fields)
    for key in doc.data:
        if key not in fields:
            raise ConfigError(f"{doc.where}: unknown top-level key `{key}`{_hint(str(key), fields)}")


def _hint(key: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    return f"; did you mean `{close[0]}`?" if close else f"; valid keys: {', '.join(valid)}"


def _parameters(doc: MergeYaml, params: Any, allowed: Iterable[str], where: str, *,
                single_values: bool) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError(f"{doc.where}: `{where}` must be a mapping of parameter names to values")
    allowed = tuple(allowed)
    for key, value in params.items():
        if key not in allowed:
            raise ConfigError(f"{doc.where}: unknown {METHOD_NAME} parameter `{key}` under `{where}`"
                              f"{_hint(str(key), allowed)}")
        if single_values and isinstance(value, (list, dict)):
            raise ConfigError(f"{doc.where}: `{where}.{key}` must be a single value: the trained mode takes no "
                              f"gradients (lists) or filters")
        if not isinstance(value, (list, dict)) and key in ("weight", *KERNEL_KEYS):
            _validate_kernel_value(doc, where, key, value)
    return dict(params)


def _validate_kernel_value(doc: MergeYaml, where: str, key: str, value: Any) -> None:
    from pydantic import TypeAdapter, ValidationError

    from .heterofusion import KERNEL_PARAMETERS

    try:
        TypeAdapter(KERNEL_PARAMETERS[key][0]).validate_python(value)
    except ValidationError as err:
        msg = err.errors()[0]["msg"]
        raise ConfigError(f"{doc.where}: `{where}.{key}` {msg[:1].lower()}{msg[1:]} (got {value!r})") from None


def _parameter_scopes(doc: MergeYaml) -> Iterator[tuple[str, Any, bool]]:
    """Every `parameters:` mapping of a mergekit config: (location, mapping, is per input)."""
    data = doc.data
    yield "parameters", data.get("parameters"), False
    for i, entry in enumerate(data.get("models") or []):
        if isinstance(entry, dict):
            yield f"models[{i}].parameters", entry.get("parameters"), True
    for i, piece in enumerate(data.get("slices") or []):
        if isinstance(piece, dict):
            yield f"slices[{i}].parameters", piece.get("parameters"), False
            for j, src in enumerate(piece.get("sources") or []):
                if isinstance(src, dict):
                    yield f"slices[{i}].sources[{j}].parameters", src.get("parameters"), True
    for name, module in (data.get("modules") or {}).items():
        if isinstance(module, dict):
            yield f"modules.{name}.parameters", module.get("parameters"), False
            for i, entry in enumerate(module.get("models") or []):
                if isinstance(entry, dict):
                    yield f"modules.{name}.models[{i}].parameters", entry.get("parameters"), True


def _model_entries(doc: MergeYaml) -> list[dict[str, Any]]:
    models = doc.data.get("models") or []
    if not isinstance(models, list):
        raise ConfigError(f"{doc.where}: `models` must be a list of `- model: ...` entries")
    entries = []
    for i, entry in enumerate(models):
        if isinstance(entry, str):  # tolerate `- ./adapter`: mergekit would reject it, the intent is clear
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise ConfigError(f"{doc.where}: `models[{i}]` must be a mapping with a `model:` key")
        extra = set(entry) - {"model", "parameters"}
        if extra:
            key = sorted(extra)[0]
            raise ConfigError(f"{doc.where}: unknown key `{key}` in `models[{i}]`{_hint(key, ['model', 'parameters'])}")
        entries.append(entry)
    return entries


def _model_ref(value: Any, doc: MergeYaml, where: str) -> ModelReference:
    from mergekit.common import ModelReference
    from pydantic import ValidationError

    if value is None:
        raise ConfigError(f"{doc.where}: `{where}` is required; for {METHOD_NAME} write the target as "
                          f"`target_model+anchor_adapter`")
    try:
        return ModelReference.model_validate(value)
    except (ValidationError, RuntimeError, ValueError):
        raise ConfigError(f"{doc.where}: `{where}` must be `model_path[@revision][+adapter_path[@revision]]`, "
                          f"got {value!r}") from None


def _resolve_path(path: str, doc: MergeYaml) -> str:
    """A path relative to the YAML's folder becomes absolute; anything else is kept (cwd path or Hub id)."""
    expanded = Path(path).expanduser()
    if expanded.is_absolute():
        return str(expanded)
    candidate = doc.base_dir / expanded
    if path.startswith(("./", "../")) or candidate.exists():
        # normpath, not resolve(): keep symlinked folder names, which the card and report show.
        return os.path.normpath(candidate)
    return path


def _resolve(ref: ModelPath, doc: MergeYaml) -> str:
    resolved = _resolve_path(ref.path, doc)
    return f"{resolved}@{ref.revision}" if ref.revision else resolved


def _format_ref(ref: ModelReference, doc: MergeYaml) -> str:
    text = _resolve(ref.model, doc)
    return f"{text}+{_resolve(ref.lora, doc)}" if ref.lora is not None else text


def _dtype_name(doc: MergeYaml, key: str) -> str | None:
    value = doc.data.get(key)
    if value is None:
        return None
    import torch
    from mergekit.common import dtype_from_name

    try:
        dtype = dtype_from_name(str(value))
    except RuntimeError:
        dtype = None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"{doc.where}: `{key}: {value}` is not a floating-point dtype "
                          f"(float32, bfloat16, float16, float64)")
    return str(value)


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
    shapes = _checkpoint_shapes(base_path)
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


def _checkpoint_shapes(model_dir: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from safetensors headers only (no weights read)."""
    from safetensors import safe_open

    root = Path(model_dir)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        if not (root / name).is_file():
            return {}
        with safe_open(str(root / name), framework="pt") as f:
            shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    return shapes


def _check_adapter_fits(doc: MergeYaml, adapter: str, shapes: dict[str, tuple[int, ...]]) -> None:
    from safetensors import safe_open

    weights = Path(adapter) / ADAPTER_WEIGHTS_NAME
    if not weights.is_file():
        return
    with safe_open(str(weights), framework="pt") as f:
        factors = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    for key, a_shape in factors.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0]
        b_shape = factors.get(key.replace(".lora_A.", ".lora_B."))
        name = module.removeprefix("base_model.model.") + ".weight"
        if b_shape and name in shapes and shapes[name] != (b_shape[0], a_shape[1]):
            raise IncompatibleAdaptersError(
                f"{doc.where}: adapter {adapter} does not fit the base model: `{name}` is "
                f"{shapes[name][0]}x{shapes[name][1]} but the adapter's update is {b_shape[0]}x{a_shape[1]}; the "
                f"data-free mode merges adapters of the base model only (trained mode: `base_model: target+anchor`)"
            )


__all__ = [
    "DATA_FREE_KEYS",
    "KERNEL_KEYS",
    "TRAINED_KEYS",
    "MergeYaml",
    "TrainedJob",
    "data_free_configuration",
    "merge_configuration",
    "read_merge_yaml",
    "trained_job",
]
