# SPDX-License-Identifier: Apache-2.0
"""Export: the fused factors as a PEFT adapter (the paper's final projection step).

One no-grad pass of the nets gives `B' = B_T + alpha_m * dB` for every aligned module; every other target tensor is
copied unchanged and `adapter_config.json` comes from the target, so the result loads with
`PeftModel.from_pretrained(target_base, out_dir)`. The caller writes into a staging folder
(`files.staged_output`), so an interrupted export never leaves a half-written output.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save

from hf_heterofusion import __version__
from hf_heterofusion.constants import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from hf_heterofusion.hub.refs import split_revision
from hf_heterofusion.method.adapters import LoraAdapter, lora_key
from hf_heterofusion.method.trainable import Trainable


@torch.no_grad()
def fused_tensors(fusion: Trainable, target: LoraAdapter) -> tuple[dict[str, torch.Tensor], dict]:
    """The fused adapter's state dict (PEFT keys, target dtypes) and per-role statistics of the final nets."""
    fusion.eval()
    out = fusion(generator=None, with_stats=True)
    tensors = dict(target.tensors)
    for patches, factor in ((out.b_patches, "B"), (out.a_patches, "A")):
        for module, value in patches.items():
            key = lora_key(tensors, module, factor)
            tensors[key] = value.detach().to("cpu", tensors[key].dtype).contiguous()
    mass = out.stats["source_mass"]
    contribution = (mass / mass.sum()).tolist() if mass.sum() > 0 else [0.0] * len(mass)
    return tensors, {"roles": out.stats["roles"], "contribution": contribution}


def adapter_base_reference(target_model: str, sha: str | None) -> tuple[str, str | None]:
    """How the written adapter names its base: (`base_model_name_or_path`, `revision`).

    The Hub id and its pinned commit when the target came from the Hub (`sha` from the lock), else the path given
    in the config. Copying the anchor's field instead would name wherever the anchor was trained (often a folder
    that no longer exists, or null), and `AutoPeftModelForCausalLM` could not load the result.
    """
    if sha is not None:
        return split_revision(target_model)[0], sha
    return str(target_model), None


def write_adapter(out_dir: Path, target: LoraAdapter, tensors: dict[str, torch.Tensor], *,
                  base: tuple[str, str | None] | None = None) -> None:
    """Write a PEFT adapter directory: the target's config (naming `base`, see `adapter_base_reference`) and the
    fused tensors (safetensors)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(target.config)
    if base is not None:
        config["base_model_name_or_path"], revision = base
        if revision is not None:
            config["revision"] = revision
    (out_dir / ADAPTER_CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    data = save(tensors, metadata={"format": "pt", "hf_heterofusion_version": __version__})
    (out_dir / ADAPTER_WEIGHTS_NAME).write_bytes(_sorted_metadata(data))


def _sorted_metadata(data: bytes) -> bytes:
    """The same safetensors bytes with `__metadata__` keys sorted.

    safetensors keeps the metadata in a Rust hash map, so its key order (and the file's bytes) changes from one
    process to the next; sorting makes the same fusion give the same file, which a resumed run is checked against.
    """
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(text) <= size, "reordering keys cannot lengthen the header"
    return data[:8] + text.ljust(size) + data[8 + size :]
