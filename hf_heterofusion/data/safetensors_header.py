# SPDX-License-Identifier: Apache-2.0
"""Tensor shapes and sizes from safetensors headers alone: the one reader every check and estimate uses.

A safetensors file starts with a little-endian u64 header length and a JSON header that maps each tensor name to
its dtype, shape and byte range, so shapes, parameter counts and sizes are known without reading (or importing
torch to read) any weight. Checkpoints sharded by `save_pretrained` list their files in
`model.safetensors.index.json`.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from hf_heterofusion.errors import AdapterFormatError


# The one pattern of a LoRA factor's tensor name: PEFT saves `<module>.lora_A.weight` (older versions and some tools
# keep the adapter name: `.lora_A.default.weight`); `<module>` starts with PEFT's `base_model.model.` prefix.
LORA_KEY_RE = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])(?P<adapter>\.[^.]+)?\.weight$")
PEFT_PREFIX = "base_model.model."

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit; a larger length means a corrupt or foreign file


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class HeaderError(AdapterFormatError):
    """A safetensors file whose header cannot be read; `path` and `reason` let a caller word its own message."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is corrupt or truncated ({reason}); re-download or re-save it")
        self.path, self.reason = path, reason


def file_header(path: str | Path) -> dict[str, TensorInfo]:
    """Tensor name -> `TensorInfo` of one safetensors file; a corrupt or truncated file is a `HeaderError`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER:
                raise ValueError(f"header length {length} is implausible")
            body = f.read(length)
            if len(body) != length:
                raise ValueError("header is truncated")
        header = json.loads(body)
        out, data_end = {}, 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            out[name] = TensorInfo(tuple(int(d) for d in info["shape"]), str(info["dtype"]), int(end) - int(start))
            data_end = max(data_end, int(end))
        if path.stat().st_size < 8 + length + data_end:  # a cut download: the header is whole, the data is not
            raise ValueError("the file is shorter than its header says")
        return out
    except (OSError, ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise HeaderError(path, str(err)) from None


def checkpoint_files(model_dir: str | Path) -> list[Path]:
    """The safetensors files of a transformers checkpoint folder (sharded or single); [] when it has none."""
    root = Path(model_dir)
    index = root / INDEX_NAME
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise AdapterFormatError(f"{index} is not a valid safetensors index ({err}); re-save the model") from None
        return [root / n for n in names]
    return [root / SINGLE_NAME] if (root / SINGLE_NAME).is_file() else []


def checkpoint_header(model_dir: str | Path) -> dict[str, TensorInfo]:
    """All tensors of a checkpoint folder; {} when a shard is missing (the caller then skips shape checks)."""
    out: dict[str, TensorInfo] = {}
    for path in checkpoint_files(model_dir):
        if not path.is_file():
            return {}
        out.update(file_header(path))
    return out


def checkpoint_shapes(model_dir: str | Path) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in checkpoint_header(model_dir).items()}


def file_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in file_header(path).items()}


__all__ = [
    "LORA_KEY_RE", "PEFT_PREFIX", "HeaderError", "TensorInfo", "checkpoint_files", "checkpoint_header", "checkpoint_shapes", "file_header",
    "file_shapes",
]


def lora_misfit(factors: dict[str, tuple[int, ...]], base: dict[str, tuple[int, ...]]
                ) -> tuple[str, str, tuple[int, int], tuple[int, ...]] | None:
    """The first LoRA module of `factors` (adapter tensor name -> shape) whose update B @ A is not the shape of its
    base weight in `base` (checkpoint tensor name -> shape), as (module, base weight name, update shape, base
    shape); None when every module with a base weight fits. Shapes only: the one check behind every "this adapter
    was trained on another base" error (target, teaching sources, mergekit's data-free mode)."""
    for key, a in factors.items():
        match = LORA_KEY_RE.match(key)
        if match is None or match["factor"] != "A":
            continue
        module = match["module"]
        b = factors.get(f"{module}.lora_B{match['adapter'] or ''}.weight")
        weight = module.removeprefix(PEFT_PREFIX) + ".weight"
        if b is not None and weight in base and tuple(base[weight]) != (b[0], a[1]):
            return module, weight, (b[0], a[1]), tuple(base[weight])
    return None
