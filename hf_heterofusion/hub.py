# SPDX-License-Identifier: Apache-2.0
"""Hugging Face Hub helpers, one module per step of the data flow (this module re-exports their public names):

* `hub_refs`   parse `repo_id[@revision]` / local references and find them in both config formats;
* `hub_client` the explicit `HfApi` every helper uses, settings read at call time, one-line errors;
* `hub_lock`   `heterofusion.lock.json`: references pinned to commit shas, paths relative to the cache root;
* `hub_pull`   resolve, download only what the fusion reads, verify, write the lock;
* `hub_push`   upload a finished output in one commit, loadable on the Hub by repo id.
"""

from __future__ import annotations

from .hub_client import make_api
from .hub_lock import Lock, LockedFile, LockEntry, resolve_with_lock
from .hub_pull import ADAPTER_FILES, MODEL_BIN_PATTERNS, MODEL_PATTERNS, pull
from .hub_push import check_output_dir, push, target_hub_id
from .hub_refs import (
    HubRef,
    RefUse,
    config_format,
    parse_ref,
    references_in_config,
    references_in_fuse_config,
    references_in_mergekit_config,
)


__all__ = [
    "ADAPTER_FILES",
    "MODEL_BIN_PATTERNS",
    "MODEL_PATTERNS",
    "HubRef",
    "Lock",
    "LockEntry",
    "LockedFile",
    "RefUse",
    "check_output_dir",
    "config_format",
    "make_api",
    "parse_ref",
    "pull",
    "push",
    "references_in_config",
    "references_in_fuse_config",
    "references_in_mergekit_config",
    "resolve_with_lock",
    "target_hub_id",
]
