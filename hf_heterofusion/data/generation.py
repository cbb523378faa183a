# SPDX-License-Identifier: Apache-2.0
"""Batched generation with transformers' `generate`: the one implementation behind evaluation and the teacher.

Prompts are token ids (encoded by `encoding.encode_prompt_ids`, the exact training prefix). A batch is left-padded so
that every row continues from its last prompt token, and `generate` runs with its KV cache. Each answer comes back
with whether it ended with eos (or was cut by the token budget) and its mean token log-probability under the
model, which the teacher's filters use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_heterofusion.data.encoding import encode_prompt, pad_token_id
from hf_heterofusion.data.replay import ReplayExample


@dataclass(frozen=True)
class Generation:
    """One generated answer."""

    text: str  # decoded new tokens up to (not including) eos, special tokens skipped
    token_ids: tuple[int, ...]  # the new tokens up to and including eos when it was produced
    finished: bool  # eos was produced within the budget
    mean_logprob: float  # mean log p(token) over `token_ids` (0.0 for an empty answer)


def left_pad(chunk: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of a left-padded batch."""
    width = max(len(ids) for ids in chunk)
    input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, ids in enumerate(chunk):
        if ids:
            input_ids[row, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
    return input_ids, attention_mask


@torch.no_grad()
def generate_batch(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sample: bool = False,
    seed: int | None = None,
    top_p: float = 0.95,
) -> list[Generation]:
    """Generate for one batch of prompts (greedy, or nucleus sampling seeded by `seed`)."""
    pad, eos = pad_token_id(tokenizer), tokenizer.eos_token_id
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompts, pad)
    kwargs: dict[str, Any] = {"do_sample": False}
    if sample:
        # generate draws from the global generator; seeding it per batch makes a batch's samples reproducible
        # whatever ran before it (the teacher resumes and splits work across processes batch by batch).
        torch.manual_seed(0 if seed is None else seed)
        kwargs = {"do_sample": True, "top_p": top_p, "top_k": 0, "temperature": 1.0}
    out = model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), max_new_tokens=max_new_tokens,
        pad_token_id=pad, eos_token_id=eos, return_dict_in_generate=True, output_logits=True, **kwargs,
    )
    new = out.sequences[:, input_ids.shape[1]:].cpu()
    # logits[t] is (batch, vocab) for new token t; log-softmax per step keeps memory at one step's worth.
    token_logp = torch.stack([
        torch.log_softmax(step.float().cpu(), dim=-1).gather(1, new[:, t:t + 1]).squeeze(1)
        for t, step in enumerate(out.logits)
    ], dim=1) if out.logits else torch.zeros((len(prompts), 0))
    results = []
    for row, ids in enumerate(new.tolist()):
        finished = eos is not None and eos in ids
        keep = ids.index(eos) + 1 if finished else len(ids)
        if not finished and pad != eos:
            while keep and ids[keep - 1] == pad:  # rows that stopped early are filled with pad
                keep -= 1
        kept = ids[:keep]
        text_ids = kept[:-1] if finished else kept
        logp = token_logp[row, :keep]
        results.append(Generation(
            text=tokenizer.decode(text_ids, skip_special_tokens=True), token_ids=tuple(kept), finished=finished,
            mean_logprob=float(logp.mean()) if keep else 0.0,
        ))
    return results


def generate_all(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    desc: str = "generate",
    show_progress: bool | None = None,
) -> list[Generation]:
    """Greedy answers for every prompt, `batch_size` at a time, in order."""
    model.eval()
    answers: list[Generation] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc=desc, disable=None if show_progress is None else not show_progress, leave=False):
        answers += generate_batch(model, tokenizer, prompts[start:start + batch_size], max_new_tokens=max_new_tokens)
    return answers


def generate_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[ReplayExample],
    *,
    max_new_tokens: int = 40,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers to the examples' prompts (responses are ignored), decoded up to eos or the first newline.

    Prompts are encoded with `encoding.encode_prompt`, the exact training prefix; `generate_all` batches them
    left-padded with the KV cache.
    """
    prompts = [encode_prompt(example, tokenizer) for example in examples]
    answers = generate_all(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [a.text.strip().split("\n", 1)[0].strip() for a in answers]



__all__ = ["Generation", "generate_all", "generate_answers", "generate_batch", "left_pad"]
