# SPDX-License-Identifier: Apache-2.0
"""A mergekit YAML with `merge_method: heterofusion` -> a checked job, before mergekit (or training) sees it.

This module reads the file and holds the checks both modes share; `yaml_trained` builds the trained job and
`yaml_data_free` the data-free mergekit config (both re-exported here).

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
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from hf_heterofusion.config import PARAMETER_KEYS
from hf_heterofusion.errors import ConfigError

from . import METHOD_NAME


if TYPE_CHECKING:
    from mergekit.common import ModelPath, ModelReference
    from mergekit.config import MergeConfiguration


KERNEL_KEYS = ("weight", "density", "normalize")
TRAINED_KEYS = (*PARAMETER_KEYS, "weight")
# Keys of one source under `models[i].parameters` (SourceSpec fields that are not set by `model:` itself).
SOURCE_KEYS = ("weight", "name", "prompts", "synthesize", "synthesizer", "prompt_format")
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


def check_merge_method(doc: MergeYaml) -> None:
    """`merge_method` must name a method mergekit knows (ours included): a typo is one line with a did-you-mean,
    before mergekit would end in a traceback. Call after `register_all()`."""
    from mergekit.merge_methods import registered_methods

    method = doc.merge_method
    if method is None:
        return  # mergekit's own parse says what is missing
    known = sorted({m.spec.name for m in registered_methods()} | {METHOD_NAME})
    if method in known:
        return
    close = difflib.get_close_matches(str(method), known, n=1)
    hint = f"did you mean `{close[0]}`?" if close else f"known methods: {', '.join(known)}"
    raise ConfigError(f"{doc.where}: unknown `merge_method: {method}`; {hint}")


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


# The two modes live in their own modules (`yaml_trained`, `yaml_data_free`), which import the helpers above;
# their entry points stay importable from here, resolved on first use to keep the import graph acyclic.
_MOVED = {"TrainedJob": "yaml_trained", "trained_job": "yaml_trained", "data_free_configuration": "yaml_data_free"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f".{_MOVED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATA_FREE_KEYS",
    "KERNEL_KEYS",
    "TRAINED_KEYS",
    "MergeYaml",
    "merge_configuration",
    "read_merge_yaml",
]
