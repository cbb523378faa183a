# SPDX-License-Identifier: Apache-2.0
"""Tiny model families: the spec table and the seeded random models built from it, without any download.

HeteroFusion (paper §2.1-2.2) exists because LoRA experts come from bases that differ in depth, hidden size,
KV width, FFN width and in how projections are named or fused; `FAMILIES` makes every one of those differences
present in the tests, the demo and the benchmark. `model_config` turns a spec into a transformers config (token
ids from the shared tokenizer) and `make_tiny_model` saves a seeded model plus that tokenizer.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hf_heterofusion.testing.tokenizer import DEFAULT_MAX_POSITIONS, make_tokenizer


if TYPE_CHECKING:
    from transformers import PretrainedConfig


LLAMA_STYLE_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI3_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


@dataclass(frozen=True)
class FamilySpec:
    """One tiny model family: the transformers classes, the config values and the LoRA target modules.

    `config_kwargs` holds only the values we choose; everything else keeps the transformers default of that
    family, so family quirks (Qwen2 q/k/v biases, Gemma's scaled embeddings, Phi-3 fused projections) come
    for free. The mapping is not copied on access: treat it as read-only.
    """

    name: str
    model_type: str
    config_class: str
    model_class: str
    config_kwargs: dict[str, Any]
    target_modules: tuple[str, ...]
    fused_projections: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
            if key not in self.config_kwargs:
                raise ValueError(f"Family `{self.name}` must set `{key}` in `config_kwargs`.")
        if self.config_kwargs["hidden_size"] % self.config_kwargs["num_attention_heads"]:
            raise ValueError(f"Family `{self.name}`: `hidden_size` must be divisible by `num_attention_heads`.")

    @property
    def num_hidden_layers(self) -> int:
        return int(self.config_kwargs["num_hidden_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.config_kwargs["hidden_size"])

    @property
    def head_dim(self) -> int:
        return self.hidden_size // int(self.config_kwargs["num_attention_heads"])

    @property
    def kv_width(self) -> int:
        """Output width of the k and v projections (GQA: fewer KV heads than query heads)."""
        return int(self.config_kwargs["num_key_value_heads"]) * self.head_dim

    @property
    def intermediate_size(self) -> int:
        return int(self.config_kwargs["intermediate_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.config_kwargs["vocab_size"])


def _spec(name: str, model_type: str, prefix: str, modules: tuple[str, ...], **kwargs: Any) -> FamilySpec:
    config_kwargs = {"max_position_embeddings": DEFAULT_MAX_POSITIONS, "initializer_range": 0.02, **kwargs}
    tie = bool(config_kwargs.setdefault("tie_word_embeddings", False))
    # Gemma3's text-only classes are `Gemma3TextConfig` and `Gemma3ForCausalLM`: the names do not share a stem.
    model_prefix = prefix.removesuffix("Text")
    return FamilySpec(
        name=name,
        model_type=model_type,
        config_class=f"{prefix}Config",
        model_class=f"{model_prefix}ForCausalLM",
        config_kwargs=config_kwargs,
        target_modules=modules,
        fused_projections="qkv_proj" in modules,
        tie_word_embeddings=tie,
    )


# Every axis HeteroFusion has to bridge takes several values across the table: depth 2..5, hidden 32..64,
# KV width 12..32, FFN width 80..176, vocabulary 384..512. Head dims stay even because rotary embeddings need it.
FAMILIES: dict[str, FamilySpec] = {
    "llama": _spec(
        "llama", "llama", "Llama", LLAMA_STYLE_MODULES,
        num_hidden_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=176, vocab_size=512,
    ),
    "qwen2": _spec(
        "qwen2", "qwen2", "Qwen2", LLAMA_STYLE_MODULES,
        num_hidden_layers=3, hidden_size=48, num_attention_heads=4, num_key_value_heads=1,
        intermediate_size=128, vocab_size=448,
    ),
    "mistral": _spec(
        "mistral", "mistral", "Mistral", LLAMA_STYLE_MODULES,
        num_hidden_layers=5, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=96, vocab_size=384,
    ),
    "gemma": _spec(
        "gemma", "gemma3_text", "Gemma3Text", LLAMA_STYLE_MODULES,
        num_hidden_layers=2, hidden_size=40, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=80, vocab_size=416, tie_word_embeddings=True,
    ),
    "phi3": _spec(
        "phi3", "phi3", "Phi3", PHI3_MODULES,
        num_hidden_layers=3, hidden_size=56, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=112, vocab_size=480,
    ),
}  # fmt: skip


def get_family(family: str) -> FamilySpec:
    """Return the spec of `family`, with a message listing the known names when it is unknown."""
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"Unknown model family `{family}`; known families: {sorted(FAMILIES)}.") from None


def model_config(family: str, **overrides: Any) -> PretrainedConfig:
    """Return the transformers config of a tiny `family` model, with `overrides` applied on top of the spec.

    Token ids follow the shared tokenizer (`make_tokenizer`), so every family agrees on pad, bos and eos.
    `head_dim` is derived from `hidden_size // num_attention_heads` unless given, because some families
    (Gemma) otherwise keep a production default of 256.

    Args:
        family (`str`): a key of `FAMILIES`.
        **overrides: config values to change, e.g. `hidden_size=256, num_hidden_layers=8` for a bigger demo.

    Returns:
        `PretrainedConfig` of the family's class, in float32.

    Raises:
        `ValueError`: for an unknown family or inconsistent head counts.
    """
    import transformers

    spec = get_family(family)
    config_cls = getattr(transformers, spec.config_class)
    tokenizer = make_tokenizer()
    kwargs: dict[str, Any] = {
        **spec.config_kwargs,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **overrides,
    }
    heads, kv_heads = int(kwargs["num_attention_heads"]), int(kwargs["num_key_value_heads"])
    if heads % kv_heads:
        raise ValueError(f"`num_attention_heads` ({heads}) must be a multiple of `num_key_value_heads` ({kv_heads}).")
    accepted = inspect.signature(config_cls.__init__).parameters
    if "head_dim" not in overrides and "head_dim" in accepted:
        if kwargs["hidden_size"] % heads:
            raise ValueError(f"`hidden_size` ({kwargs['hidden_size']}) must be divisible by {heads} heads.")
        kwargs["head_dim"] = kwargs["hidden_size"] // heads
    if "query_pre_attn_scalar" in accepted and "query_pre_attn_scalar" not in overrides:
        # Gemma scales queries by this instead of head_dim; keep the usual 1/sqrt(head_dim) at tiny sizes.
        kwargs["query_pre_attn_scalar"] = kwargs["head_dim"]
    if int(kwargs["vocab_size"]) < len(tokenizer):
        raise ValueError(f"`vocab_size` ({kwargs['vocab_size']}) is smaller than the tokenizer ({len(tokenizer)}).")
    config = config_cls(**kwargs)
    config.dtype = torch.float32
    return config


def make_tiny_model(family: str, out_dir: Path | str, *, seed: int = 0, **overrides: Any) -> Path:
    """Build a seeded random tiny `family` model and save it, with the shared tokenizer, to `out_dir`.

    Args:
        family (`str`): a key of `FAMILIES`.
        out_dir (`Path | str`): target folder; created if missing.
        seed (`int`, *optional*, defaults to 0): initialisation seed; the same seed gives identical weights.
        **overrides: config values passed to `model_config`.

    Returns:
        `Path` of the saved model folder (`config.json`, `model.safetensors`, tokenizer files).

    Example:
        >>> path = make_tiny_model("qwen2", tmp_path / "qwen2")
        >>> AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
    """
    import transformers

    spec = get_family(family)
    out = Path(out_dir)
    config = model_config(family, **overrides)
    model_cls = getattr(transformers, spec.model_class)
    # Fork the RNG so seeding here never changes the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    make_tokenizer(out)
    return out


__all__ = [
    "FAMILIES", "LLAMA_STYLE_MODULES", "PHI3_MODULES", "FamilySpec", "get_family", "make_tiny_model", "model_config",
]
