# SPDX-License-Identifier: Apache-2.0
"""Where teacher generations are cached, and the content keys that make a cached answer safe to reuse.

A key covers the teacher base and adapter (their bytes, or pinned Hub revisions) and every generation setting;
the filters run after the cache, so changing a filter never re-runs a teacher.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.files import write_atomic


def cache_root() -> Path:
    return Path(os.environ.get("HF_HETEROFUSION_CACHE") or Path.home() / ".cache" / "hf_heterofusion")


def content_key(value: Any) -> str:
    """sha256 of a JSON value (key order ignored): the cache key of a prompt or a settings mapping."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def generation_settings(cfg: FusionConfig) -> dict[str, Any]:
    """What the cached generations depend on (filters are applied after the cache, so they are not here)."""
    # `signal`: each cached answer also holds per-token log-probs, the top-k candidates and the base's log-probs.
    return {"max_new_tokens": cfg.teacher_max_new_tokens, "batch_size": cfg.teacher_batch_size,
            "placebo": cfg.teacher_placebo, "decoding": "greedy", "seed": cfg.seed,
            "signal": {"version": 1, "top_k": cfg.teacher_topk}}


def digest_dir(folder: Path, names: Sequence[str] | None = None) -> str:
    """sha256 over the files of a model/adapter folder (name + bytes), memoised by size and mtime."""
    memo_path = cache_root() / "teacher" / "digests.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and (names is None or p.name in names)
                   and not p.name.startswith(".") and p.suffix in (".json", ".safetensors", ".model", ".txt", ".bin"))
    changed = False
    for path in files:
        st = path.stat()
        key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in memo:
            memo[key], changed = _file_digest(path), True
        h.update(path.name.encode() + b"\0" + memo[key].encode())
    if changed:
        write_atomic(memo_path, json.dumps(memo))
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    fh = hashlib.sha256()
    if path.suffix == ".json":
        # JSON by meaning: PEFT writes `target_modules` from a set, so its order changes from process to process.
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("target_modules"), list):
                data["target_modules"] = sorted(map(str, data["target_modules"]))
            fh.update(json.dumps(data, sort_keys=True).encode())
            return fh.hexdigest()
        except (ValueError, UnicodeDecodeError):
            pass
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            fh.update(chunk)
    return fh.hexdigest()


__all__ = ["cache_root", "content_key", "digest_dir", "generation_settings"]
