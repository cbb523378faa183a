# SPDX-License-Identifier: Apache-2.0
"""Replay examples as token ids for a model (paper §2.6).

The loss is on response tokens only: every prompt token gets the label -100, exactly as LLaMA-Factory's SFT
processing does in the reference code. Training, evaluation and the teacher all encode prompts here, so a model is
always asked exactly the way it was taught.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from hf_heterofusion.data.replay import IGNORE_INDEX, Prompt, ReplayExample
from hf_heterofusion.errors import ConfigError, HeteroFusionWarning, ReplayDataError


def encode_prompt(example: ReplayExample, tokenizer: Any) -> list[int]:
    """Token ids of the prompt as the model sees it before the response (bos or chat template included).

    Training (`encode_example`), evaluation and the teacher all use this, so a model is asked exactly the way it
    was taught.
    """
    return encode_prompt_ids(example.prompt, tokenizer, where=f"replay example at line {example.line}")


def encode_prompt_ids(prompt: Prompt, tokenizer: Any, *, where: str = "prompt") -> list[int]:
    """`encode_prompt` for a bare prompt: plain text (after bos) or chat messages (the tokenizer's template)."""
    if isinstance(prompt, tuple):
        if not getattr(tokenizer, "chat_template", None):
            raise ReplayDataError(
                f"{where} is a chat (`messages`) but the tokenizer has no chat template; use `prompt`/`response` "
                "rows or a tokenizer with a chat template"
            )
        text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        # The template writes its own bos (if any) as text; adding special tokens again would double it.
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return _special_prefix(tokenizer) + list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def encode_example(example: ReplayExample, tokenizer: Any, max_length: int) -> tuple[list[int], list[int], bool]:
    """Encode one example as `input_ids` and `labels` (-100 on prompt tokens), truncated to `max_length`.

    Prompt and response are tokenized separately and concatenated, so the boundary between them is exact
    (tokenizing the joined text could merge the last prompt and first response characters into one token).
    The response is followed by eos. When the example is too long, the prompt loses tokens from its start (after
    bos), so the response survives; a response that alone exceeds the budget loses its end.

    Returns:
        `tuple[list[int], list[int], bool]`: input ids, labels, and whether the example was truncated.
    """
    if max_length < 1:
        raise ConfigError(f"`max_length` must be at least 1, got {max_length}")
    prompt_ids = encode_prompt(example, tokenizer)
    response_ids = list(tokenizer(example.response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        response_ids.append(tokenizer.eos_token_id)

    truncated = len(prompt_ids) + len(response_ids) > max_length
    if truncated:
        bos = tokenizer.bos_token_id
        prefix = prompt_ids[:1] if bos is not None and prompt_ids[:1] == [bos] and max_length > 1 else []
        body = prompt_ids[len(prefix) :]
        room = max_length - len(prefix) - len(response_ids)
        if room > 0:
            prompt_ids = prefix + body[len(body) - room :]
        else:
            prompt_ids, response_ids = prefix, response_ids[: max_length - len(prefix)]
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return prompt_ids + response_ids, labels, truncated


def encode_replay(
    examples: Sequence[ReplayExample], tokenizer: Any, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """Encode every example with `encode_example`; warn once if any had to be truncated.

    Raises:
        `ReplayDataError`: `examples` is empty.

    Warns:
        `HeteroFusionWarning`: with the number of truncated examples and their lines (never silently dropped).
    """
    if not examples:
        raise ReplayDataError("no replay examples to encode; the replay set needs at least one example")
    encoded, truncated_lines = [], []
    for example in examples:
        input_ids, labels, truncated = encode_example(example, tokenizer, max_length)
        encoded.append((input_ids, labels))
        if truncated:
            truncated_lines.append(example.line)
    if truncated_lines:
        lines = [str(n) for n in truncated_lines if n > 0]
        where = f" (lines {', '.join(lines[:5])}{', ...' if len(lines) > 5 else ''})" if lines else ""
        warnings.warn(
            f"{len(truncated_lines)} of {len(examples)} replay examples exceed max_length={max_length} tokens and "
            f"were truncated{where}; raise `max_length` to keep them whole",
            HeteroFusionWarning,
            stacklevel=2,
        )
    return encoded


def collate(batch: Sequence[tuple], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of `(input_ids, labels)` or `(input_ids, labels, RowSignal)` to its longest sequence.

    Returns:
        `dict[str, torch.Tensor]`: `input_ids`, `attention_mask` (1 on real tokens) and `labels` (-100 on padding),
        each `(batch, longest)` int64; when a row carries a `RowSignal`, also `token_weights`, `soft_kind`,
        `soft_scale` `(batch, longest)` and `soft_ids`, `soft_logprobs` `(batch, longest, k)` (see `method.loss`).
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    width = max(len(item[0]) for item in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, labs, *_) in enumerate(batch):
        if len(ids) != len(labs):
            raise ValueError(f"batch item {row} has {len(ids)} input ids but {len(labs)} labels")
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(labs)] = torch.tensor(labs, dtype=torch.long)
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    signals = [item[2] if len(item) > 2 else None for item in batch]
    if any(s is not None for s in signals):
        out.update(_collate_signals(signals, width))
    return out


def _collate_signals(signals: Sequence[Any], width: int) -> dict[str, torch.Tensor]:
    k = max((len(c) for s in signals if s is not None for c in s.ids), default=0) or 1
    n = len(signals)
    weights, kind, scale = torch.ones((n, width)), torch.zeros((n, width), dtype=torch.long), torch.zeros((n, width))
    ids, logprobs = torch.full((n, width, k), -1, dtype=torch.long), torch.full((n, width, k), -math.inf)
    for row, s in enumerate(signals):
        if s is None:
            continue
        length = len(s.weights)
        weights[row, :length] = torch.tensor(s.weights)
        kind[row, :length] = torch.tensor(s.kind, dtype=torch.long)
        scale[row, :length] = torch.tensor(s.scale)
        for j in (j for j, c in enumerate(s.kind) if c):
            ids[row, j, :len(s.ids[j])] = torch.tensor(s.ids[j], dtype=torch.long)
            logprobs[row, j, :len(s.logprobs[j])] = torch.tensor(s.logprobs[j])
    return {"token_weights": weights, "soft_kind": kind, "soft_scale": scale, "soft_ids": ids,
            "soft_logprobs": logprobs}


def pad_token_id(tokenizer: Any) -> int:
    """The id to pad with: the tokenizer's pad token, else eos (padding never reaches the loss), else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts before a text by itself (usually `[bos]` or nothing)."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    # Find where the plain encoding starts inside the full one; what precedes it is the prefix.
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []
