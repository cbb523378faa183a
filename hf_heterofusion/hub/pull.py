# SPDX-License-Identifier: Apache-2.0
"""`pull`: pin every Hub reference of a config to a commit sha, download only what the fusion reads, write the lock.

What is downloaded: adapters get their config, safetensors and card; the target base its config, tokenizer and
safetensors; a source's base model only when the sources teach (`teacher: sources`), else never. Files are checked
against the Hub's sizes and LFS sha256. With `HF_HUB_OFFLINE=1` the lock's shas are served from the cache.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hf_heterofusion.constants import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_PICKLE_NAME,
    ADAPTER_WEIGHTS_NAME,
    CARD_NAME,
    LOCK_NAME,
)
from hf_heterofusion.errors import ConfigError, HubError
from hf_heterofusion.hub.client import default_cache_dir, hub_call, make_api, offline
from hf_heterofusion.hub.lock import Kind, Lock, LockedFile, LockEntry, cache_relative
from hf_heterofusion.hub.refs import HubRef, RefUse, parse_ref, references_in_config


if TYPE_CHECKING:
    from huggingface_hub import HfApi

logger = logging.getLogger(__name__)

# What the fusion reads. Model files are matched at the repo's top level only (no onnx/, original/, ...).
ADAPTER_FILES = (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, CARD_NAME)
MODEL_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt", "*.jinja")
MODEL_BIN_PATTERNS = ("pytorch_model*.bin",)


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
    info = hub_call(ref, api, token, lambda: api.model_info(ref.repo_id, revision=ref.revision, files_metadata=True))
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

    folder = hub_call(ref, api, token, download)
    if verify and (bad := _bad_files(folder, files)):
        # A cached blob can be damaged on disk (full disk, killed copy); huggingface_hub trusts it, we fetch it once.
        logger.warning("re-downloading %s of %s: the cached copy does not match the Hub", ", ".join(bad), ref)
        for name in bad:
            hub_call(ref, api, token, lambda name=name: refetch(name))
        if bad := _bad_files(folder, files):
            raise HubError(f"{', '.join(bad)} of `{ref}` still differs from the Hub after a fresh download")
    return LockEntry(str(ref.repo_id), ref.revision, str(info.sha), resolved_kind, cache_relative(folder, cache_dir),
                     files)


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
        return LockEntry(str(ref.repo_id), ref.revision, folder.name, _pick_kind(kind, files),
                         cache_relative(folder, cache_dir), files)
    if verify and (bad := _bad_files(folder, entry.files)):
        raise HubError(f"cached {', '.join(bad)} of `{ref}` is corrupt and HF_HUB_OFFLINE=1 forbids a re-download")
    return LockEntry(entry.repo_id, entry.revision, entry.sha, entry.kind, cache_relative(folder, cache_dir), entry.files)


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
        return references_in_config(data, base_dir=path.parent), path.parent / LOCK_NAME
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
    safetensors for the target base, and for each source's base only when the sources teach (`teacher: sources`;
    otherwise source bases are never downloaded). Files are checked against
    the Hub's sizes and LFS sha256; a corrupt cached file is downloaded again once. With `HF_HUB_OFFLINE=1` the lock's
    shas are served from the cache without any network call. Local references are skipped.

    Args:
        config_or_refs (`Path`, `str` or list): a config path (mergekit YAML or `fuse` format; `.yml`/`.yaml` or an existing file), or one
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
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    is_offline = offline()
    if api is None and not is_offline:
        api = make_api(token)
    wanted: dict[str, tuple[HubRef, str]] = {}
    for use in uses:
        if not use.ref.is_local:
            kind = {"target_model": "model", "source_base": "model", "auto": "auto"}.get(use.role, "adapter")
            wanted.setdefault(use.ref.key, (use.ref, kind))
    entries: dict[str, LockEntry] = {}
    for key, (ref, kind) in wanted.items():
        if is_offline:
            entries[key] = _pull_offline(ref, kind, previous.entries.get(key), cache, verify)
        else:
            assert api is not None  # built above whenever online
            entries[key] = _pull_online(api, ref, kind, cache, include_bin, verify, token)
    # A config's lock lists exactly its references; a list of references adds to whatever the lock held.
    lock = Lock(entries if default_lock is not None else {**previous.entries, **entries}, lock_file)
    if lock_file is not None:
        lock.save()
    return lock

