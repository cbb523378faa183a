# SPDX-License-Identifier: Apache-2.0
"""What every performance job measures besides its own timings: peak memory, folder sizes, labelling throughput."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

from hf_heterofusion.data.encoding import encode_prompt_ids
from hf_heterofusion.data.generation import generate_batch
from hf_heterofusion.data.models import load_causal_lm, load_tokenizer


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def labelling_throughput(base_dir: str | Path, adapter_dir: str | Path, prompts: list[str], *, batch_size: int = 8,
                         max_new_tokens: int = 32) -> dict[str, Any]:
    """Rows/s of greedy labelling with a teacher (base + adapter) batched vs one prompt at a time.

    Both passes label the same prompts with the same settings through the generation path the teacher stage uses
    (`data.generation.generate_batch`: left-padded batches, KV cache), in one process, so the ratio is fair; the
    first batch of each pass is a warm-up and not timed.
    """
    tokenizer = load_tokenizer(base_dir)
    model = load_causal_lm(base_dir, adapter_dir).eval()
    ids = [encode_prompt_ids(p, tokenizer) for p in prompts]
    out: dict[str, Any] = {"prompts": len(ids), "batch_size": batch_size}
    for label, size in (("unbatched", 1), ("batched", batch_size)):
        generate_batch(model, tokenizer, ids[:size], max_new_tokens=max_new_tokens)  # warm-up
        started = time.perf_counter()
        for s in range(0, len(ids), size):
            generate_batch(model, tokenizer, ids[s:s + size], max_new_tokens=max_new_tokens)
        out[f"{label}_rows_per_s"] = len(ids) / (time.perf_counter() - started)
    out["speedup"] = out["batched_rows_per_s"] / out["unbatched_rows_per_s"]
    return out


__all__ = ["folder_mb", "labelling_throughput", "peak_rss_mb"]
