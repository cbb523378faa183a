# SPDX-License-Identifier: Apache-2.0
"""Hugging Face Hub helpers: parse references, pull pinned inputs, push a fusion output.

A HeteroFusion config (a mergekit YAML) names models and adapters as `repo_id[@revision]` or local paths, joined
as `base+adapter`. `pull` resolves every Hub reference to a commit sha, downloads only the files the fusion reads
(adapters: config + safetensors + card; the target base: config, tokenizer and safetensors; never the bases of the
source adapters), checks them, and writes `heterofusion.lock.json` next to the config. The merge command then maps
each reference to its pinned snapshot with `resolve_with_lock`, also offline (`HF_HUB_OFFLINE=1`). `push` uploads a
finished output directory in one commit.

Every helper builds its own `HfApi(endpoint=..., token=...)` at call time (or takes one): huggingface_hub's
module-level functions bind `HF_ENDPOINT` when it is imported, which would send a test run to the real Hub.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from . import __version__
from .constants import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_PICKLE_NAME,
    ADAPTER_WEIGHTS_NAME,
    CARD_NAME,
    LOCK_NAME,
    MERGED_SUBDIR,
    REPORT_NAME,
)
from .errors import ConfigError, HubError


if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, HfApi

logger = logging.getLogger(__name__)

T = TypeVar("T")
RefRole = Literal["target_model", "target_adapter", "source_adapter", "auto"]
Kind = Literal["adapter", "model"]

# What the fusion reads. Model files are matched at the repo's top level only (no onnx/, original/, ...).
ADAPTER_FILES = (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, CARD_NAME)
MODEL_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt", "*.jinja")
MODEL_BIN_PATTERNS = ("pytorch_model*.bin",)
LOCK_VERSION = 1
_TRUE = {"1", "on", "yes", "true"}


# ----------------------------------------------------------------------------------------------------------------------
# References
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
    """Where a config uses a reference and as what; `base_model` is a source adapter's base (never downloaded)."""

    ref: HubRef
    role: RefRole
    where: str
    base_model: HubRef | None = None


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
    repo_id, at, revision = text.partition("@")
    try:
        if not repo_id or (at and not revision):
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
    source: from `SOURCE_BASE+ADAPTER` only the adapter is used (its base is recorded, never downloaded), and a bare
    reference is taken as an adapter. When `base_model` carries no adapter, the first `TARGET+ADAPTER` entry of
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
    return uses


# ----------------------------------------------------------------------------------------------------------------------
# Lock file
@dataclass(frozen=True)
class LockedFile:
    """Size, and sha256 for LFS files, as the Hub reported them."""

    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class LockEntry:
    """One pinned Hub reference: the requested revision, the commit it resolved to and the files taken from it."""

    repo_id: str
    revision: str | None
    sha: str
    kind: Kind
    local_path: str
    files: dict[str, LockedFile]


@dataclass
class Lock:
    """`heterofusion.lock.json`: Hub reference (`repo_id[@revision]`) -> [`LockEntry`]."""

    entries: dict[str, LockEntry] = field(default_factory=dict)
    path: Path | None = None

    def to_json(self) -> str:
        repos = {key: asdict(entry) for key, entry in sorted(self.entries.items())}
        return json.dumps({"version": LOCK_VERSION, "repos": repos}, indent=2, sort_keys=True) + "\n"

    def save(self, path: Path | str | None = None) -> Path:
        target = Path(path or self.path or LOCK_NAME)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, target)  # never leave a half-written lock next to the config
        self.path = target
        return target

    @classmethod
    def load(cls, path: Path | str) -> Lock:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {
                key: LockEntry(**{**e, "files": {n: LockedFile(**f) for n, f in e["files"].items()}})
                for key, e in data["repos"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise HubError(f"cannot read lock file {path} ({err}); delete it and run `hf-heterofusion pull`") from err
        return cls(entries, path)


def resolve_with_lock(ref: HubRef | str, lock: Lock | Path | str) -> Path:
    """The local directory of a reference: itself if local, else the snapshot pinned in the lock.

    Raises:
        [`HubError`]: the reference was never pulled, or its snapshot left the cache.
    """
    lock = lock if isinstance(lock, Lock) else Lock.load(lock)
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    if ref.local_path is not None:
        return ref.local_path
    entry = lock.entries.get(ref.key)
    if entry is None:
        where = lock.path or "the lock file"
        raise HubError(f"`{ref}` is not pinned in {where}; run `hf-heterofusion pull` on the config first")
    path = Path(entry.local_path)
    if not path.is_dir():
        raise HubError(f"the pinned snapshot of `{ref}` ({entry.sha[:12]}) is gone from {path}; pull it again")
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Pull
def _endpoint() -> str:
    # Read at call time: huggingface_hub's own constant is frozen when it is first imported.
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _default_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser() / "hub"


def make_api(token: str | None = None) -> HfApi:
    """An `HfApi` for the current `HF_ENDPOINT`; `token=None` lets huggingface_hub use `HF_TOKEN` or the login."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=_endpoint(), token=token, library_name="hf_heterofusion", library_version=__version__)


def _has_token(api: HfApi, token: str | None) -> bool:
    from huggingface_hub import get_token

    return bool(token or api.token or get_token())


def _hub_call(ref: HubRef | str, api: HfApi | None, token: str | None, fn: Callable[[], T]) -> T:
    """Run one Hub call and turn its failures into one-line `HubError`s that say how to fix them."""
    from huggingface_hub import errors
    from huggingface_hub.utils import httpx

    repo = ref.repo_id if isinstance(ref, HubRef) else ref
    try:
        return fn()
    except errors.GatedRepoError as err:
        raise HubError(f"Hub repo `{repo}` is gated; accept its terms on the Hub, then use a token") from err
    except errors.RepositoryNotFoundError as err:
        if api is not None and _has_token(api, token):
            raise HubError(f"Hub repo `{repo}` does not exist or the token in use cannot read it") from err
        raise HubError(
            f"Hub repo `{repo}` is private or does not exist; pass a token with `hf auth login` or HF_TOKEN"
        ) from err
    except errors.RevisionNotFoundError as err:
        revision = ref.revision if isinstance(ref, HubRef) else None
        raise HubError(
            f"revision `{revision}` not found in Hub repo `{repo}`; use a branch, tag or commit sha"
        ) from err
    except errors.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise HubError("the Hub rejected the token (401); run `hf auth login` again or fix HF_TOKEN") from err
        if status == 403:
            raise HubError(f"the token in use may not write to `{repo}` (403); use a token with write access") from err
        raise HubError(f"Hub request for `{ref}` failed: {str(err).splitlines()[0]}") from err
    except errors.OfflineModeIsEnabled as err:
        raise HubError(f"`{ref}` needs the Hub but HF_HUB_OFFLINE=1 is set") from err
    except (httpx.TransportError, errors.LocalEntryNotFoundError) as err:
        raise HubError(f"cannot reach the Hub at {_endpoint()} for `{ref}` ({type(err).__name__})") from err


def _pick_kind(kind: str, names: Iterator[str] | Sequence[str] | Mapping[str, Any]) -> Kind:
    """`auto` (a plain reference on the command line) means: an adapter if it has an adapter config."""
    if kind == "auto":
        return "adapter" if ADAPTER_CONFIG_NAME in names else "model"
    return "adapter" if kind == "adapter" else "model"


def _select_files(ref: HubRef, kind: Kind, remote: dict[str, LockedFile], include_bin: bool) -> dict[str, LockedFile]:
    """The files of a repo the fusion needs (adapter or model), with what the Hub says about them."""
    if kind == "adapter":
        if ADAPTER_CONFIG_NAME not in remote:
            raise HubError(f"Hub repo `{ref}` is not a PEFT adapter: it has no {ADAPTER_CONFIG_NAME}")
        names = [n for n in ADAPTER_FILES if n in remote]
        if ADAPTER_WEIGHTS_NAME not in remote:
            if not (include_bin and ADAPTER_PICKLE_NAME in remote):
                hint = "; pass `--include-bin` to accept pickle weights" if ADAPTER_PICKLE_NAME in remote else ""
                raise HubError(f"Hub repo `{ref}` has no {ADAPTER_WEIGHTS_NAME}{hint}")
            names.append(ADAPTER_PICKLE_NAME)
    else:
        if "config.json" not in remote:
            raise HubError(f"Hub repo `{ref}` is not a transformers model: it has no config.json")
        top = [n for n in remote if "/" not in n]
        names = [n for n in top if any(fnmatch.fnmatch(n, p) for p in (*MODEL_PATTERNS, CARD_NAME))]
        if not any(n.endswith(".safetensors") for n in names):
            bins = [n for n in top if any(fnmatch.fnmatch(n, p) for p in MODEL_BIN_PATTERNS)]
            if not (include_bin and bins):
                hint = "; pass `--include-bin` to accept pickle weights" if bins else ""
                raise HubError(f"Hub repo `{ref}` has no safetensors weights{hint}")
            names += bins
    return {name: remote[name] for name in sorted(names)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _bad_files(folder: Path, files: Mapping[str, LockedFile]) -> list[str]:
    """Files missing from `folder` or differing from the Hub's size / sha256."""
    bad = []
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != expected.size:
            bad.append(name)
        elif expected.sha256 is not None and _sha256(path) != expected.sha256:
            bad.append(name)
    return bad


def _pull_online(
    api: HfApi, ref: HubRef, kind: str, cache_dir: Path, include_bin: bool, verify: bool, token: str | None
) -> LockEntry:
    info = _hub_call(ref, api, token, lambda: api.model_info(ref.repo_id, revision=ref.revision, files_metadata=True))
    remote = {s.rfilename: LockedFile(s.size or 0, s.lfs.sha256 if s.lfs else None) for s in info.siblings or []}
    resolved_kind = _pick_kind(kind, remote)
    files = _select_files(ref, resolved_kind, remote, include_bin)
    logger.info("pulling %s (%s) at %s: %d files", ref, resolved_kind, info.sha, len(files))

    def download() -> Path:
        # A commit sha as revision: huggingface_hub skips its own repo_info call and the download is exactly pinned.
        folder = api.snapshot_download(ref.repo_id, revision=info.sha, allow_patterns=list(files), cache_dir=cache_dir)
        return Path(folder)

    def refetch(name: str) -> None:
        api.hf_hub_download(str(ref.repo_id), name, revision=info.sha, cache_dir=cache_dir, force_download=True)

    folder = _hub_call(ref, api, token, download)
    if verify and (bad := _bad_files(folder, files)):
        # A cached blob can be damaged on disk (full disk, killed copy); huggingface_hub trusts it, we fetch it once.
        logger.warning("re-downloading %s of %s: the cached copy does not match the Hub", ", ".join(bad), ref)
        for name in bad:
            _hub_call(ref, api, token, lambda name=name: refetch(name))
        if bad := _bad_files(folder, files):
            raise HubError(f"{', '.join(bad)} of `{ref}` still differs from the Hub after a fresh download")
    return LockEntry(str(ref.repo_id), ref.revision, str(info.sha), resolved_kind, str(folder), files)


def _pull_offline(ref: HubRef, kind: str, entry: LockEntry | None, cache_dir: Path, verify: bool) -> LockEntry:
    """Serve a reference from the cache: the lock's sha when known, else the cached branch/tag."""
    from huggingface_hub import snapshot_download

    if entry is not None:
        revision, patterns = entry.sha, sorted(entry.files)
    else:
        patterns = list(ADAPTER_FILES) if kind == "adapter" else [*MODEL_PATTERNS, CARD_NAME]
        revision = ref.revision or "main"
    try:
        folder = Path(
            snapshot_download(
                str(ref.repo_id),
                revision=revision,
                cache_dir=cache_dir,
                allow_patterns=patterns,
                local_files_only=True,
            )
        )
    except (FileNotFoundError, OSError, ValueError) as err:
        raise HubError(
            f"`{ref}` is not in the local cache and HF_HUB_OFFLINE=1 forbids downloading it; run `hf-heterofusion pull`"
            " once online"
        ) from err
    if entry is None:
        # No lock entry: nothing to check against; record what the cache holds.
        files = {
            p.relative_to(folder).as_posix(): LockedFile(p.stat().st_size) for p in folder.rglob("*") if p.is_file()
        }
        return LockEntry(str(ref.repo_id), ref.revision, folder.name, _pick_kind(kind, files), str(folder), files)
    if verify and (bad := _bad_files(folder, entry.files)):
        raise HubError(f"cached {', '.join(bad)} of `{ref}` is corrupt and HF_HUB_OFFLINE=1 forbids a re-download")
    return LockEntry(entry.repo_id, entry.revision, entry.sha, entry.kind, str(folder), entry.files)


def _uses_from(config_or_refs: Path | str | HubRef | Sequence[str | HubRef]) -> tuple[list[RefUse], Path | None]:
    """The references to pull, and the default lock path (next to a config; none for a plain list)."""
    if isinstance(config_or_refs, HubRef):
        config_or_refs = [config_or_refs]
    elif isinstance(config_or_refs, str) and not (
        Path(config_or_refs).is_file() or config_or_refs.endswith((".yml", ".yaml"))
    ):
        config_or_refs = [config_or_refs]  # one `repo_id[@revision]`
    if isinstance(config_or_refs, (str, Path)):
        path = Path(config_or_refs)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from err
        return references_in_mergekit_config(data, base_dir=path.parent), path.parent / LOCK_NAME
    refs = [parse_ref(r) if isinstance(r, str) else r for r in config_or_refs]
    return [RefUse(ref, "auto", f"argument {i + 1}") for i, ref in enumerate(refs)], None


def pull(
    config_or_refs: Path | str | HubRef | Sequence[str | HubRef],
    *,
    token: str | None = None,
    cache_dir: Path | str | None = None,
    api: HfApi | None = None,
    lock_path: Path | str | None = None,
    include_bin: bool = False,
    verify: bool = True,
) -> Lock:
    """Pin and download the Hub inputs of a config (or of a list of references), and write the lock file.

    Each Hub reference is resolved to a commit sha (`model_info(revision=...)`), then only the needed files are
    downloaded into the Hugging Face cache: adapter config, safetensors and card for adapters; config, tokenizer and
    safetensors for the target base. The bases of source adapters are never downloaded. Files are checked against
    the Hub's sizes and LFS sha256; a corrupt cached file is downloaded again once. With `HF_HUB_OFFLINE=1` the lock's
    shas are served from the cache without any network call. Local references are skipped.

    Args:
        config_or_refs (`Path`, `str` or list): a mergekit YAML path (`.yml`/`.yaml` or an existing file), or one
            or more references such as `"org/lora@v1"`.
        token (`str`, *optional*): Hub token; defaults to `HF_TOKEN` or the `hf auth login` token.
        cache_dir (`Path`, *optional*): Hub cache; defaults to `HF_HUB_CACHE` or `HF_HOME/hub`, read at call time.
        api (`HfApi`, *optional*): client to use; built for `HF_ENDPOINT` by default.
        lock_path (`Path`, *optional*): lock file; defaults to `heterofusion.lock.json` next to the config (a list of
            references writes no lock unless this is given; existing entries of that file are kept).
        include_bin (`bool`, *optional*, defaults to `False`): accept pickle (`*.bin`) weights when no safetensors.
        verify (`bool`, *optional*, defaults to `True`): check sizes and sha256 of the downloaded files.

    Returns:
        [`Lock`]: the pinned entries (also written to the lock path).

    Raises:
        [`HubError`]: bad repo id, private repo without token, unknown revision, offline and not cached, ...
        [`ConfigError`]: unreadable config.
    """
    uses, default_lock = _uses_from(config_or_refs)
    lock_file = Path(lock_path) if lock_path is not None else default_lock
    previous = Lock.load(lock_file) if lock_file is not None and lock_file.exists() else Lock()
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    offline = _offline()
    if api is None and not offline:
        api = make_api(token)
    wanted: dict[str, tuple[HubRef, str]] = {}
    for use in uses:
        if not use.ref.is_local:
            kind = {"target_model": "model", "auto": "auto"}.get(use.role, "adapter")
            wanted.setdefault(use.ref.key, (use.ref, kind))
    entries: dict[str, LockEntry] = {}
    for key, (ref, kind) in wanted.items():
        if offline:
            entries[key] = _pull_offline(ref, kind, previous.entries.get(key), cache, verify)
        else:
            assert api is not None  # built above whenever online
            entries[key] = _pull_online(api, ref, kind, cache, include_bin, verify, token)
    # A config's lock lists exactly its references; a list of references adds to whatever the lock held.
    lock = Lock(entries if default_lock is not None else {**previous.entries, **entries}, lock_file)
    if lock_file is not None:
        lock.save()
    return lock


# ----------------------------------------------------------------------------------------------------------------------
# Push
def check_output_dir(out_dir: Path | str) -> Path:
    """Refuse anything but a complete fusion output: report, adapter or merged model, and a card."""
    out = Path(out_dir)
    if not out.is_dir():
        raise HubError(f"output directory {out} does not exist")
    has_adapter = (out / ADAPTER_CONFIG_NAME).is_file() and (out / ADAPTER_WEIGHTS_NAME).is_file()
    has_merged = (out / MERGED_SUBDIR / "config.json").is_file()
    missing = [] if (out / REPORT_NAME).is_file() else [REPORT_NAME]
    if not (has_adapter or has_merged):
        missing.append(f"{ADAPTER_CONFIG_NAME} + {ADAPTER_WEIGHTS_NAME} (or {MERGED_SUBDIR}/config.json)")
    if missing:
        raise HubError(f"{out} is not a complete fusion output: missing {', '.join(missing)}")
    if not (out / CARD_NAME).is_file():
        raise HubError(f"{out} has no model card ({CARD_NAME}); write it with `hf-heterofusion card {out}`")
    return out


def push(
    out_dir: Path | str,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    api: HfApi | None = None,
) -> CommitInfo:
    """Upload a fusion output directory to a Hub repo in one commit.

    One commit means an interrupted push leaves the repo as it was. The repo is created if needed (`private` applies
    only then), and so is the branch `revision`.

    Args:
        out_dir (`Path`): a complete output (`fusion_report.json`, the adapter or `merged/`, and `README.md`).
        repo_id (`str`): `namespace/name`.
        private (`bool`, *optional*): create the repo private.
        revision (`str`, *optional*): branch to push to (created from `main` if missing).
        create_pr (`bool`, *optional*): open a pull request instead of committing to the branch.
        commit_message (`str`, *optional*): defaults to "Upload HeteroFusion output".
        token (`str`, *optional*): write token; defaults to `HF_TOKEN` or the `hf auth login` token.
        api (`HfApi`, *optional*): client to use.

    Returns:
        `CommitInfo`: a `str` equal to the commit URL; `.pr_url` is set for a pull request.

    Raises:
        [`HubError`]: incomplete output, invalid repo id, missing or rejected token, offline.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    out = check_output_dir(out_dir)
    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") != 1:
            raise HFValidationError("no namespace")
    except HFValidationError as err:
        raise HubError(f"`{repo_id}` is not a valid Hub repo id to push to (expected `namespace/name`)") from err
    if _offline():
        raise HubError("cannot push while HF_HUB_OFFLINE=1 is set")
    api = api or make_api(token)
    if not _has_token(api, token):
        raise HubError("pushing needs a Hub token with write access; run `hf auth login` or set HF_TOKEN")
    _hub_call(repo_id, api, token, lambda: api.create_repo(repo_id, private=private, exist_ok=True))
    if revision is not None:
        branches = _hub_call(repo_id, api, token, lambda: {b.name for b in api.list_repo_refs(repo_id).branches})
        if revision not in branches:
            _hub_call(repo_id, api, token, lambda: api.create_branch(repo_id, branch=revision, exist_ok=True))
    info = _hub_call(
        repo_id,
        api,
        token,
        lambda: api.upload_folder(
            repo_id=repo_id,
            folder_path=out,
            commit_message=commit_message or "Upload HeteroFusion output",
            revision=revision,
            create_pr=create_pr,
            ignore_patterns=[".cache/**", "**/__pycache__/**", "*.tmp"],
        ),
    )
    logger.info("pushed %s to %s: %s", out, repo_id, info.pr_url or info.commit_url)
    return info
