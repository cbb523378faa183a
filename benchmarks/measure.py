# SPDX-License-Identifier: Apache-2.0
"""What every performance job measures besides its own timings: peak memory, folder sizes, labelling throughput."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from transformers import GenerationConfig

from hf_heterofusion.data.encoding import encode_prompt_ids
from hf_heterofusion.data.generation import generate_all, generate_batch
from hf_heterofusion.data.models import load_causal_lm, load_tokenizer


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def labelling_throughput(base_dir: str | Path, adapter_dir: str | Path, prompts: list, *, batch_size: int = 8,
                         max_new_tokens: int = 32, repeats: int = 1, continuous: bool = False) -> dict[str, Any]:
    """Rows/s of greedy labelling with a teacher (base + adapter): one prompt at a time, static batches in input
    order (`generate_batch`, the path before length batches), and the teacher's own path (`generate_all`: batches
    of similar length, finished rows retired).

    All passes label the same prompts with the same settings in one process, so the ratios are fair; the first
    batch of each pass is a warm-up and not timed; `repeats` timed passes each, the fastest kept. Returns
    `prompts`, `batch_size`, `max_new_tokens`, `<pass>_rows_per_s` for `unbatched`, `static` and `retiring`, and per
    batched pass its `_speedup` over `unbatched` and `_same_tokens` (the prompts whose answer equals the
    one-at-a-time answer token for token). The headline pair is the teacher's own path: `batched_rows_per_s`
    (= `retiring_rows_per_s`) and `speedup` (= `retiring_speedup`). `continuous` adds transformers' own continuous
    batching (`generate_batch` of transformers 5, paged KV cache; its manager is built, not warmed up, per pass).
    """
    tokenizer = load_tokenizer(base_dir)
    model = load_causal_lm(base_dir, adapter_dir).eval()
    ids = [encode_prompt_ids(p, tokenizer) for p in prompts]
    out: dict[str, Any] = {"prompts": len(ids), "batch_size": batch_size, "max_new_tokens": max_new_tokens}

    def one_at_a_time():
        return [g for p in ids for g in generate_batch(model, tokenizer, [p], max_new_tokens=max_new_tokens)]

    def static():
        return [g for s in range(0, len(ids), batch_size)
                for g in generate_batch(model, tokenizer, ids[s:s + batch_size], max_new_tokens=max_new_tokens)]

    def retiring():
        return generate_all(model, tokenizer, ids, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            show_progress=False)

    def transformers_continuous():
        config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
        # the LoRA layers live in the base model's modules: its continuous batching runs the expert
        done = model.get_base_model().generate_batch(ids, generation_config=config, warmup=False)
        return [SimpleNamespace(token_ids=tuple(done[f"req_{i}"].generated_tokens)) for i in range(len(ids))]

    passes = [("unbatched", one_at_a_time), ("static", static), ("retiring", retiring)]
    if continuous:
        passes.append(("continuous", transformers_continuous))
    answers = {}
    for label, run in passes:
        generate_batch(model, tokenizer, ids[:batch_size], max_new_tokens=max_new_tokens)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            answers[label] = run()
            best = min(best, time.perf_counter() - started)
        out[f"{label}_rows_per_s"] = len(ids) / best
    for label in [name for name, _ in passes[1:]]:
        out[f"{label}_speedup"] = out[f"{label}_rows_per_s"] / out["unbatched_rows_per_s"]
        out[f"{label}_same_tokens"] = sum(a.token_ids == b.token_ids
                                          for a, b in zip(answers[label], answers["unbatched"]))
    out["batched_rows_per_s"] = out["retiring_rows_per_s"]
    out["speedup"] = out["retiring_speedup"]
    out["mean_new_tokens"] = sum(len(a.token_ids) for a in answers["unbatched"]) / max(len(ids), 1)
    return out


__all__ = ["folder_mb", "labelling_throughput", "peak_rss_mb"]
