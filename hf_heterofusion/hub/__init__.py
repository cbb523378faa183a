# SPDX-License-Identifier: Apache-2.0
"""Inputs from the Hugging Face Hub, one module per step (this package re-exports their public names):

* `refs`    parse `repo_id[@revision]` / local references and find them in both config formats;
* `client`  the explicit `HfApi` every helper uses, settings read at call time, one-line errors;
* `lock`    `heterofusion.lock.json`: references pinned to commit shas, paths relative to the cache root;
* `pull`    resolve, download only what the fusion reads, verify, write the lock.

Outputs go the other way through `outputs.push`.
"""

from __future__ import annotations

from hf_heterofusion.hub.client import make_api
from hf_heterofusion.hub.lock import Lock, LockedFile, LockEntry, resolve_with_lock
from hf_heterofusion.hub.pull import ADAPTER_FILES, MODEL_BIN_PATTERNS, MODEL_PATTERNS, pull
from hf_heterofusion.hub.refs import (
    HubRef,
    RefUse,
    config_format,
    hub_id_of,
    parse_ref,
    references_in_config,
    references_in_fuse_config,
    references_in_mergekit_config,
    split_revision,
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
    "config_format",
    "hub_id_of",
    "make_api",
    "parse_ref",
    "pull",
    "references_in_config",
    "references_in_fuse_config",
    "references_in_mergekit_config",
    "resolve_with_lock",
    "split_revision",
]
