# SPDX-License-Identifier: Apache-2.0
"""hf_heterofusion: fuse LoRA experts from different model families into one adapter (HeteroFusion).

    >>> from hf_heterofusion import FusionConfig, fuse
    >>> cfg = FusionConfig(target_model="llama", target_adapter="llama-task-a", sources=["qwen-task-b"],
    ...                    replay="replay.jsonl")
    >>> fuse(cfg, "out/fused")

Public names are imported lazily, so `import hf_heterofusion` (and `hf-heterofusion --version`) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any


__version__ = "0.1.0"

from hf_heterofusion.merge_methods.hook import install_mergekit_hook as _install_mergekit_hook  # noqa: E402


_install_mergekit_hook()  # `heterofusion` joins mergekit's registry when (and only when) mergekit is imported

_EXPORTS = {
    "AlignmentPlan": "method.align",
    "FusionConfig": "config",
    "FusionReport": "outputs.report",
    "FusionResult": "pipeline",
    "HeteroFusionError": "errors",
    "HeteroFusionWarning": "errors",
    "LoraAdapter": "method.adapters",
    "PreparedFusion": "prepare",
    "SourceSpec": "config",
    "align_layers": "method.align",
    "fit": "pipeline",
    "fuse": "pipeline",
    "load_adapter": "method.adapters",
    "match_modules": "method.align",
    "patch_lora_weights": "method.patching",
    "plan_alignment": "method.align",
    "prepare": "prepare",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_heterofusion' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
