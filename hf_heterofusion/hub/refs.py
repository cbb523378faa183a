# SPDX-License-Identifier: Apache-2.0
"""Hub references in a config: `repo_id[@revision]` or local paths, and where each one is used.

Both config formats are read: a mergekit YAML (`base_model: TARGET+ANCHOR`, `models: [- model: BASE+ADAPTER]`)
and the `fuse` format (`target_model`, `target_adapter`, `sources: [{adapter, base_model}]`). The result is one
list of `RefUse`s that `pull.pull` downloads; nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hf_heterofusion.errors import ConfigError, HubError


RefRole = Literal["target_model", "target_adapter", "source_adapter", "source_base", "auto"]
ConfigFormat = Literal["mergekit", "fuse"]
FUSE_KEYS = ("target_model", "target_adapter", "sources")


@dataclass(frozen=True)
class HubRef:
    """One model or adapter reference: a Hub repo at an optional revision, or an existing local directory."""

    repo_id: str | None = None
    revision: str | None = None
    local_path: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    @property
    def key(self) -> str:
        """The lock-file key: `repo_id@revision` (or `repo_id`) for Hub refs, the absolute path for local ones."""
        if self.local_path is not None:
            return str(self.local_path)
        return f"{self.repo_id}@{self.revision}" if self.revision else str(self.repo_id)

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class RefUse:
    """Where a config uses a reference and as what.

    `base_model` is a source adapter's base: recorded, and downloaded (as a `source_base` use of its own) only when
    the sources teach (`teacher: sources`).
    """

    ref: HubRef
    role: RefRole
    where: str
    base_model: HubRef | None = None


def split_revision(text: str) -> tuple[str, str | None]:
    """`repo_id@revision` -> `(repo_id, revision)`, `(text, None)` without `@`: the one reader of a reference's `@`."""
    name, _, revision = str(text).partition("@")
    return name, revision or None


def hub_id_of(name: str | None, revision: str | None = None) -> str | None:
    """The Hub id of a reference as a report records it, or None for a local one.

    A reference pulled from the Hub always carries its pinned revision in the report. Without one, a string that is a
    valid `namespace/name` and not an existing or path-like path is still taken as a Hub id.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not name:
        return None
    repo_id, _ = split_revision(name)
    if repo_id.startswith((".", "/", "~")) or "\\" in repo_id or repo_id.count("/") != 1:
        return None
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id if revision or not Path(repo_id).exists() else None


def parse_ref(text: str, *, base_dir: Path | str | None = None) -> HubRef:
    """Parse `repo_id[@revision]` or a local path; an existing local path wins over a Hub id.

    Args:
        text (`str`): the reference as written in a config or on the command line.
        base_dir (`Path`, *optional*): also look for relative local paths here (e.g. the config's folder).

    Returns:
        [`HubRef`]

    Raises:
        [`HubError`]: the text is neither an existing path nor a valid `namespace/name[@revision]`.

    Example:
        >>> parse_ref("org/lora@v1")
        HubRef(repo_id='org/lora', revision='v1', local_path=None)
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = str(text).strip()
    for candidate in (Path(text).expanduser(), Path(base_dir or ".") / text):
        if text and candidate.exists():
            return HubRef(local_path=candidate.resolve())
    repo_id, revision = split_revision(text)
    try:
        if not repo_id or (text.endswith("@") and not revision):
            raise HFValidationError("empty repo id or revision")
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(
            f"`{text}` is not a valid Hub repo id (expected `namespace/name[@revision]`) and no such local path exists"
        ) from err
    return HubRef(repo_id=repo_id, revision=revision or None)


def _split_reference(value: Any, where: str, base_dir: Path | None) -> tuple[HubRef, HubRef | None]:
    """(model, adapter or None) from mergekit's `base[@rev]+lora[@rev]` string or its dict forms."""
    if isinstance(value, str):
        if Path(value).expanduser().exists() or (base_dir is not None and (base_dir / value).exists()):
            return parse_ref(value, base_dir=base_dir), None
        parts = value.split("+")
        if len(parts) > 2 or not all(p.strip() for p in parts):
            raise ConfigError(f"`{where}: {value}` must be `model`, `adapter` or `model+adapter`")
        refs = [parse_ref(p, base_dir=base_dir) for p in parts]
        return refs[0], refs[1] if len(refs) == 2 else None
    if isinstance(value, Mapping) and "path" in value:  # mergekit's ModelPath {path, revision}
        text = str(value["path"]) + (f"@{value['revision']}" if value.get("revision") else "")
        return parse_ref(text, base_dir=base_dir), None
    if isinstance(value, Mapping) and "model" in value:  # {model: ..., lora: ...}
        model, _ = _split_reference(value["model"], f"{where}.model", base_dir)
        lora = _split_reference(value["lora"], f"{where}.lora", base_dir)[0] if value.get("lora") else None
        return model, lora
    raise ConfigError(f"`{where}` must be a `model+adapter` string or a mapping with `model`, got {value!r}")


def _model_entries(data: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every model reference of `models:` and `slices:` with its location in the YAML."""
    for i, entry in enumerate(data.get("models") or []):
        if isinstance(entry, Mapping) and "lora" not in entry:
            entry = entry.get("model")
        yield f"models[{i}].model", entry
    for i, slice_ in enumerate(data.get("slices") or []):
        for j, source in enumerate((slice_ or {}).get("sources") or []):
            yield f"slices[{i}].sources[{j}].model", (source or {}).get("model")


def references_in_mergekit_config(data: Mapping[str, Any], *, base_dir: Path | str | None = None) -> list[RefUse]:
    """Find the target base, the anchor adapter and every source adapter of a mergekit YAML.

    `base_model: TARGET+ANCHOR` names the target base and its adapter. Each `models[].model` (or slice source) is a
    source: from `SOURCE_BASE+ADAPTER` only the adapter is used (its base is recorded, and downloaded only when the
    sources teach: `teacher: sources` under `parameters:`), and a bare reference is taken as an adapter. When `base_model` carries no adapter, the first `TARGET+ADAPTER` entry of
    `models` is the anchor.

    Args:
        data (`Mapping`): the parsed YAML.
        base_dir (`Path`, *optional*): folder to resolve relative local paths against (besides the current one).

    Returns:
        `list[RefUse]`: target model first, then the anchor, then the sources in YAML order.

    Raises:
        [`ConfigError`]: no `base_model`, or a malformed reference. [`HubError`]: an invalid repo id.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a mergekit config must be a YAML mapping, got {type(data).__name__}")
    if not data.get("base_model"):
        raise ConfigError(
            "the config has no `base_model`; HeteroFusion needs `base_model: TARGET_BASE+TARGET_ADAPTER`"
        )
    folder = Path(base_dir) if base_dir is not None else None
    target, anchor = _split_reference(data["base_model"], "base_model", folder)
    uses = [RefUse(target, "target_model", "base_model")]
    if anchor is not None:
        uses.append(RefUse(anchor, "target_adapter", "base_model"))
    for where, value in _model_entries(data):
        if value is None:
            raise ConfigError(f"`{where}` is missing")
        model, lora = _split_reference(value, where, folder)
        if lora is None and model != target:
            uses.append(RefUse(model, "source_adapter", where))  # a bare adapter: its base is not named
        elif lora is not None and model == target and anchor is None:
            anchor = lora
            uses.insert(1, RefUse(lora, "target_adapter", where))
        elif lora is not None and (model, lora) != (target, anchor):
            uses.append(RefUse(lora, "source_adapter", where, base_model=model))
    return _with_teacher_bases(uses, (data.get("parameters") or {}).get("teacher"), mergekit=True)



def _fuse_source(value: Any, i: int, base_dir: Path | None) -> tuple[HubRef, HubRef | None]:
    where = f"sources[{i}]"
    if isinstance(value, str):
        return parse_ref(value, base_dir=base_dir), None
    if isinstance(value, Mapping) and value.get("adapter"):
        base = value.get("base_model")
        return parse_ref(str(value["adapter"]), base_dir=base_dir), (
            parse_ref(str(base), base_dir=base_dir) if base else None)
    raise ConfigError(f"`{where}` must be an adapter path or Hub id, or a mapping with `adapter`, got {value!r}")


def references_in_fuse_config(data: Mapping[str, Any], *, base_dir: Path | str | None = None) -> list[RefUse]:
    """The references of a `fuse`-format config (the keys of `FusionConfig`): target, anchor, sources.

    A source's `base_model` is downloaded only when the sources teach (top-level `teacher: sources`).

    Raises:
        [`ConfigError`]: a required key is missing or malformed. [`HubError`]: an invalid repo id.
    """
    missing = [k for k in FUSE_KEYS if not data.get(k)]
    if missing:
        raise ConfigError(f"the config has no `{missing[0]}`; a fuse config needs {', '.join(f'`{k}`' for k in FUSE_KEYS)}")
    folder = Path(base_dir) if base_dir is not None else None
    uses = [RefUse(parse_ref(str(data["target_model"]), base_dir=folder), "target_model", "target_model"),
            RefUse(parse_ref(str(data["target_adapter"]), base_dir=folder), "target_adapter", "target_adapter")]
    sources = data["sources"]
    if not isinstance(sources, (list, tuple)):
        raise ConfigError(f"`sources` must be a list of adapters, got {type(sources).__name__}")
    for i, value in enumerate(sources):
        adapter, base = _fuse_source(value, i, folder)
        uses.append(RefUse(adapter, "source_adapter", f"sources[{i}]", base_model=base))
    return _with_teacher_bases(uses, data.get("teacher"), mergekit=False)


def _with_teacher_bases(uses: list[RefUse], teacher: Any, *, mergekit: bool) -> list[RefUse]:
    """With `teacher: sources` every source base is needed too (the teacher generates with base + adapter)."""
    if teacher != "sources":
        return uses
    bases = []
    for use in uses:
        if use.role != "source_adapter":
            continue
        if use.base_model is None:
            fix = ("write it as `base+adapter` (`- model: SOURCE_BASE+ADAPTER`)" if mergekit else
                   "write it as `base+adapter`: `{adapter: ..., base_model: SOURCE_BASE}`")
            raise ConfigError(f"source `{use.ref}` ({use.where}) teaches (`teacher: sources`) but names no base "
                              f"model; {fix}")
        bases.append(RefUse(use.base_model, "source_base", use.where))
    return uses + bases


def config_format(data: Any) -> ConfigFormat:
    """`fuse` for a `FusionConfig` mapping (`target_model`, ...), else `mergekit`."""
    if isinstance(data, Mapping) and "target_model" in data and "merge_method" not in data:
        return "fuse"
    return "mergekit"


def references_in_config(data: Mapping[str, Any], *, base_dir: Path | str | None = None) -> list[RefUse]:
    """The references of either config format (see `config_format`)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a YAML mapping, got {type(data).__name__}")
    if config_format(data) == "fuse":
        return references_in_fuse_config(data, base_dir=base_dir)
    return references_in_mergekit_config(data, base_dir=base_dir)
