# SPDX-License-Identifier: Apache-2.0
"""Batched generation with transformers' `generate`: the one implementation behind evaluation and the teacher.

Prompts are token ids (encoded by `encoding.encode_prompt_ids`, the exact training prefix). A batch is left-padded so
that every row continues from its last prompt token. Each answer comes back with whether it ended with eos (or was
cut by the token budget) and its mean token log-probability under the model, which the teacher's filters use.

Greedy decoding (`generate_all`, the teacher's labels) wastes little: prompts are batched by length (little
padding) and a row that produced eos leaves the batch at once (`greedy_batch`: its KV-cache rows are dropped), so a
batch no longer runs at the cost of its longest answer. It picks the same tokens as `generate(do_sample=False)`
(argmax of the same logits); a model whose generation config changes greedy decoding (a repetition penalty, say)
goes through `generate` itself. Sampling (the teacher's synthesis) always uses `generate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from hf_heterofusion.data.encoding import encode_prompt, pad_token_id
from hf_heterofusion.data.replay import ReplayExample


@dataclass(frozen=True)
class Generation:
    """One generated answer."""

    text: str  # decoded new tokens up to (not including) eos, special tokens skipped
    token_ids: tuple[int, ...]  # the new tokens up to and including eos when it was produced
    finished: bool  # eos was produced within the budget
    mean_logprob: float  # mean log p(token) over `token_ids` (0.0 for an empty answer)
    # Per new token, captured in the same decoding pass when asked (`top_k > 0`; empty otherwise): its log p, and
    # the `top_k` most likely token ids with their log-probs at that step (what token-level distillation reads).
    token_logprobs: tuple[float, ...] = ()
    top_ids: tuple[tuple[int, ...], ...] = ()
    top_logprobs: tuple[tuple[float, ...], ...] = ()
    base_logprobs: tuple[float, ...] = ()  # filled by the teacher: the same tokens under its base, adapter off


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
    temperature: float = 1.0,
    top_k: int = 0,
) -> list[Generation]:
    """Generate for one batch of prompts (greedy, or nucleus sampling seeded by `seed`); `top_k > 0` also keeps
    each step's `top_k` log-probs."""
    pad, eos = pad_token_id(tokenizer), tokenizer.eos_token_id
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompts, pad)
    kwargs: dict[str, Any] = {"do_sample": False}
    if sample:
        # generate draws from the global generator; seeding it per batch makes a batch's samples reproducible
        # whatever ran before it (the teacher resumes and splits work across processes batch by batch).
        torch.manual_seed(0 if seed is None else seed)
        kwargs = {"do_sample": True, "top_p": top_p, "top_k": 0, "temperature": temperature}
    out = model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), max_new_tokens=max_new_tokens,
        pad_token_id=pad, eos_token_id=eos, return_dict_in_generate=True, output_logits=True, **kwargs,
    )
    new = out.sequences[:, input_ids.shape[1]:].cpu()
    # logits[t] is (batch, vocab) for new token t; log-softmax per step keeps memory at one step's worth. The
    # log-probs are of the model's own distribution (before sampling's temperature / top-p warping).
    steps = [_step_signal(step, new[:, t], top_k) for t, step in enumerate(out.logits)]
    token_logp = torch.stack([lp for lp, _, _ in steps], dim=1) if steps else torch.zeros((len(prompts), 0))
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
            **_per_token(logp.tolist(), [(ids_[row], lps_[row]) for _, ids_, lps_ in steps[:keep]], top_k),
        ))
    return results


def _step_signal(logits: torch.Tensor, chosen: torch.Tensor, top_k: int) -> tuple[torch.Tensor, list, list]:
    """log p of the chosen tokens of one decoding step and (when `top_k`) each row's top-k ids and log-probs."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen_logp = logp.gather(1, chosen.to(logp.device)[:, None]).squeeze(1).cpu()
    if not top_k:
        return chosen_logp, [()] * len(chosen), [()] * len(chosen)
    values, ids = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
    return chosen_logp, ids.cpu().tolist(), values.cpu().tolist()


def _per_token(logps: list[float], tops: list[tuple[list[int], list[float]]], top_k: int) -> dict:
    if not top_k:
        return {}
    return {"token_logprobs": tuple(logps), "top_ids": tuple(tuple(i) for i, _ in tops),
            "top_logprobs": tuple(tuple(v) for _, v in tops)}


# Generation-config settings that change which token greedy decoding picks: `greedy_batch` applies none of them.
_GREEDY_CHANGERS = (
    "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "sequence_bias",
    "min_length", "min_new_tokens", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
    "forced_eos_token_id", "exponential_decay_length_penalty",
)


def plain_greedy(model: torch.nn.Module) -> bool:
    """Whether `generate(do_sample=False)` on `model` is the argmax of its logits (no logits processor applies)."""
    config, default = getattr(model, "generation_config", None), GenerationConfig()
    return config is None or all(getattr(config, k, None) == getattr(default, k, None) for k in _GREEDY_CHANGERS)


@torch.no_grad()
def greedy_batch(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[Sequence[int]], *,
                 max_new_tokens: int, top_k: int = 0) -> list[Generation]:
    """Greedy answers for one batch; a row leaves the batch (and the KV cache) as soon as it produced eos.

    Positions follow `generate`'s rule for left padding (count of attended tokens before each one), so every
    row sees exactly the inputs it would see alone. `top_k > 0` keeps each step's top-k log-probs from the same
    logits (no second forward pass).
    """
    if not plain_greedy(model):
        return generate_batch(model, tokenizer, prompts, max_new_tokens=max_new_tokens, top_k=top_k)
    pad, eos = pad_token_id(tokenizer), tokenizer.eos_token_id
    device = next(model.parameters()).device
    input_ids, mask = (t.to(device) for t in left_pad(prompts, pad))
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    length = input_ids.shape[1]
    # Only the last prompt position's logits are read, so only it goes through the vocabulary projection (most of
    # a short prompt's prefill on a 262k-token vocabulary). An index tensor, not `logits_to_keep=1`: the int form
    # slices the hidden states into a strided view, which `F.linear` runs as a batched matmul over a copy of the
    # weight per row (measured 4.5x slower than the one matmul the gathered rows get, Gemma-3 head, batch 16).
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                cache_position=torch.arange(length, device=device),
                logits_to_keep=torch.tensor([length - 1], device=device))
    cache, logits = out.past_key_values, out.logits[:, -1, :]
    live = torch.arange(len(prompts), device=device)  # the prompt index of each row still in the batch
    tokens: list[list[int]] = [[] for _ in prompts]
    logps: list[list[float]] = [[] for _ in prompts]
    tops: list[list[tuple[list[int], list[float]]]] = [[] for _ in prompts]
    for step in range(max_new_tokens):
        chosen = logits.argmax(-1)
        logp, top_ids, top_lps = _step_signal(logits, chosen, top_k)
        for row, token, lp, ti, tl in zip(live.tolist(), chosen.tolist(), logp.tolist(), top_ids, top_lps):
            tokens[row].append(token)
            logps[row].append(lp)
            tops[row].append((ti, tl))
        going = chosen != eos if eos is not None else torch.ones_like(chosen, dtype=torch.bool)
        if step == max_new_tokens - 1 or not bool(going.any()):
            break
        if not bool(going.all()):  # retire the finished rows: the rest no longer pay for them
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            live, mask, chosen = live[keep], mask[keep], chosen[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                    past_key_values=cache, use_cache=True, cache_position=torch.tensor([length], device=device))
        length += 1
        logits = out.logits[:, -1, :]
    results = []
    for ids, lps, top in zip(tokens, logps, tops):
        finished = eos is not None and bool(ids) and ids[-1] == eos
        results.append(Generation(
            text=tokenizer.decode(ids[:-1] if finished else ids, skip_special_tokens=True), token_ids=tuple(ids),
            finished=finished, mean_logprob=sum(lps) / len(lps) if lps else 0.0, **_per_token(lps, top, top_k),
        ))
    return results


@torch.no_grad()
def score_answers(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[Sequence[int]],
                  answers: Sequence[Sequence[int]]) -> list[list[float]]:
    """Teacher-forced log p of every answer token given its prompt: one forward pass over the batch.

    The teacher uses it with its adapter disabled: the expert's own base scores the expert's answer, and the
    per-token difference is where the adapter made the answer (TiTok's skill signal). Rows are left-padded, so
    every answer ends at the last position and only the last `longest answer + 1` positions go through the
    vocabulary projection (`logits_to_keep`): on a 262k-token vocabulary that projection is most of the pass.
    """
    pad = pad_token_id(tokenizer)
    device = next(model.parameters()).device
    input_ids, mask = (t.to(device) for t in left_pad([list(p) + list(a) for p, a in zip(prompts, answers)], pad))
    keep = max(len(a) for a in answers) + 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    out = []
    for row, answer in enumerate(answers):
        if not answer:
            out.append([])
            continue
        # logits[:, -1] follows the last answer token; the answer's tokens are predicted by the len(answer)
        # positions before it.
        logp = torch.log_softmax(logits[row, keep - 1 - len(answer):keep - 1].float(), dim=-1)
        out.append(logp.gather(1, torch.tensor(list(answer), device=logp.device)[:, None]).squeeze(1).tolist())
    return out


def length_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Prompt indexes in batches of similar length (shortest first; ties in input order): little padding, and the
    same batches for the same prompts whatever ran before (a resumed or split run decodes alike)."""
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


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
    """Greedy answers for every prompt, in order, decoded `batch_size` at a time in batches of similar length."""
    model.eval()
    answers: list[Generation | None] = [None] * len(prompts)
    batches = length_batches(prompts, batch_size)
    for batch in tqdm(batches, desc=desc, disable=None if show_progress is None else not show_progress, leave=False):
        for i, answer in zip(batch, greedy_batch(model, tokenizer, [prompts[i] for i in batch],
                                                 max_new_tokens=max_new_tokens)):
            answers[i] = answer
    return answers  # type: ignore[return-value]


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



__all__ = [
    "Generation", "generate_all", "generate_answers", "generate_batch", "greedy_batch", "left_pad", "length_batches",
    "plain_greedy", "score_answers",
]
