# SPDX-License-Identifier: Apache-2.0
"""A closed-form estimate of a fit's peak memory, for the dry run (`check`) and the performance benchmark.

What a fit holds at its peak (paper set-up: frozen target in `dtype`, transfer nets and loss in float32):

* the frozen target's weights: `params x bytes(dtype)`;
* the transfer nets in float32 with AdamW: weight, gradient and two moments, `16 bytes x hypernet parameters`;
* activations of one micro-batch kept for the backward pass: about `34 x hidden` bytes per token and layer in a
  16-bit dtype, i.e. 17 values (Korthikanti et al. 2022, no recomputation), plus the float32 logits and gradient
  (`2 x 4 x vocab` bytes per token);
* a fixed runtime overhead (interpreter, torch, transformers: ~0.6 GB on CPU).

It is an estimate for deciding whether a target fits a device, not a measurement: the benchmark prints it next
to the measured peak of a ~1B model (`python -m benchmarks --perf`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hf_heterofusion.data.safetensors_header import checkpoint_header
from hf_heterofusion.errors import ConfigError
from hf_heterofusion.outputs.sizing import suggestion


if TYPE_CHECKING:
    from hf_heterofusion.prepare import PreparedFusion


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
RUNTIME_OVERHEAD_BYTES = int(0.6 * 2**30)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    nets: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.nets + self.activations + self.overhead

    def line(self, label: str = "fit") -> str:
        gib = 2**30
        return (f"{label}: ~{self.total / gib:.1f} GiB peak (target weights {self.weights / gib:.1f}, transfer nets "
                f"+ AdamW {self.nets / gib:.2f}, activations {self.activations / gib:.2f}, runtime "
                f"{self.overhead / gib:.1f})")


def estimate_fit_memory(params: int, dtype: str | None = "float32", *, hypernet_parameters: int = 0,
                        hidden_size: int = 0, num_layers: int = 0, vocab_size: int = 0, tokens: int = 1024,
                        overhead: int = RUNTIME_OVERHEAD_BYTES) -> MemoryEstimate:
    """Estimated peak memory of a fit (bytes, split by what holds them; see the module docstring).

    Args:
        params (`int`): parameters of the target base model.
        dtype (`str`, *optional*): the target's dtype during the fit (`torch_dtype`; `None` = float32).
        hypernet_parameters (`int`, *optional*): transfer-net parameters, all roles (`PreparedFusion`).
        hidden_size, num_layers, vocab_size (`int`, *optional*): the target's shape, for the activations.
        tokens (`int`, *optional*, defaults to 1024): tokens of one micro-batch (`batch_size x max_length`).
        overhead (`int`, *optional*): fixed runtime bytes.
    """
    name = dtype or "float32"
    if name not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype `{dtype}`; use one of {', '.join(DTYPE_BYTES)}")
    width = DTYPE_BYTES[name]
    activations = tokens * (17 * hidden_size * num_layers * width + 2 * 4 * vocab_size)
    return MemoryEstimate(params * width, 16 * hypernet_parameters, activations, overhead)


def estimate_from_config(model_config: dict, dtype: str | None, *, hypernet_parameters: int = 0,
                         tokens: int = 1024) -> MemoryEstimate:
    """`estimate_fit_memory` from a transformers `config.json` mapping (parameters counted from its shape)."""
    h = int(model_config.get("hidden_size") or 0)
    layers = int(model_config.get("num_hidden_layers") or 0)
    inter = int(model_config.get("intermediate_size") or 4 * h)
    vocab = int(model_config.get("vocab_size") or 0)
    heads = int(model_config.get("num_attention_heads") or 1)
    kv = int(model_config.get("num_key_value_heads") or heads)
    head_dim = int(model_config.get("head_dim") or h // max(1, heads))
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    per_layer = attn + 3 * h * inter + 2 * h
    embeddings = vocab * h * (1 if model_config.get("tie_word_embeddings") else 2)
    return estimate_fit_memory(layers * per_layer + embeddings + h, dtype, hypernet_parameters=hypernet_parameters,
                               hidden_size=h, num_layers=layers, vocab_size=vocab, tokens=tokens)


# Llama-3-8B's shape, for the "does an 8B target fit" line of `check`.
LLAMA3_8B = {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 128256,
             "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False}


class InsufficientMemoryError(ConfigError):
    """The fit's estimated peak memory exceeds what the machine (or the GPU) has available."""


def available_bytes(device: str = "cpu") -> int | None:
    """Memory free for a fit on `device`: the GPU's free memory, or the kernel's MemAvailable (None if unknown)."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0]) if torch.cuda.is_available() else None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fit_estimate(prepared: PreparedFusion) -> MemoryEstimate:
    """The peak-memory estimate of one fit of `prepared` (target from its safetensors headers)."""
    cfg, mc = prepared.config, prepared.target_model_config
    params = sum(info.numel for info in checkpoint_header(prepared.target_model_dir).values())
    return estimate_fit_memory(params, cfg.torch_dtype, hypernet_parameters=sum(prepared.hypernet_parameters().values()),
                               hidden_size=mc.get("hidden_size") or 0, num_layers=mc.get("num_hidden_layers") or 0,
                               vocab_size=mc.get("vocab_size") or 0, tokens=cfg.batch_size * cfg.max_length)


def check_fits(prepared: PreparedFusion, device: str = "cpu", *, available: int | None = None) -> MemoryEstimate:
    """Stop before anything is allocated when the estimate exceeds the memory available (`memory_check: false` or
    `--force` runs anyway): the alternative is an allocation that grows until the kernel kills the process."""
    estimate = fit_estimate(prepared)
    free = available if available is not None else available_bytes(device)
    if prepared.config.memory_check and free is not None and estimate.total > free:
        gib = 2**30
        room = free - estimate.weights - estimate.activations - estimate.overhead
        raise InsufficientMemoryError(
            f"the fit needs about {estimate.total / gib:,.1f} GiB ({estimate.line('estimate')}) but {device} has "
            f"{free / gib:,.1f} GiB available; {suggestion(prepared, max(1, room // 16))}, lower "
            f"`max_length`, or set `memory_check: false` (CLI: --force) to run anyway")
    return estimate
