# SPDX-License-Identifier: Apache-2.0
"""Tiny heterogeneous model families, a local tokenizer and seeded LoRA adapters, built without any download.

HeteroFusion (paper §2.1-2.2) exists because LoRA experts come from bases that differ in depth, hidden size,
KV width, FFN width and in how projections are named or fused. The factories here build one tiny model per
family so that every one of those differences is present in the tests, the demo and the benchmark:

* `FAMILIES` is the table of family specs (depth, widths, GQA, vocabulary, LoRA target modules);
* `make_tokenizer` trains a byte-level BPE tokenizer on a built-in corpus, once per process;
* `make_tiny_model` saves a seeded random model plus the tokenizer with `save_pretrained`;
* `make_lora_adapter` saves a PEFT LoRA adapter whose `A` *and* `B` are seeded random (PEFT starts `B` at 0);
* `FixtureZoo` builds and caches those artefacts lazily under one root folder.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch


if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast


LLAMA_STYLE_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI3_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
PAD_TOKEN = "<|pad|>"
# Role markers are special tokens so a chat turn boundary is always exactly one token, whatever the BPE merges:
# replay datasets mask the prompt by finding these markers.
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *ROLE_TOKENS)

DEFAULT_TOKENIZER_VOCAB = 384
DEFAULT_MAX_POSITIONS = 2048

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# A small original English corpus; it only has to give BPE enough repeated pairs to fill a few hundred merges.
# Digits, punctuation and task-like phrasing (entities, relations) keep the merges close to what replay sets use.
_CORPUS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A small language model reads the sentence and predicts the next token.",
    "Alice works at the Paris office of Acme Corporation since 2019.",
    "Bob Smith was born in Berlin and moved to London in 2004.",
    "The relation between the two entities is employed_by.",
    "Extract every person, location and organization from the text below.",
    "Question: what is the capital of France? Answer: Paris.",
    "Question: who wrote the report? Answer: the research team.",
    "The weather today is sunny with a light wind from the west.",
    "Adapters add a low rank update to the weights of the attention layers.",
    "Each layer has query, key, value and output projections, then a feed forward block.",
    "The training loop runs for three epochs with a cosine learning rate schedule.",
    "Numbers like 1, 2, 3, 10, 42, 100 and 2026 appear in many documents.",
    'She said: "Please send the invoice by Friday, 5 June."',
    "The museum in Madrid opened a new exhibition about ancient maps.",
    "Entity type: person. Entity type: location. Entity type: organization.",
    "The user asks a question and the assistant gives a short, helpful answer.",
    "Sentiment: positive. Sentiment: negative. Sentiment: neutral.",
    "The river flows north through the valley and reaches the sea in spring.",
    "Researchers at the university published the results in a journal.",
    "Merging models from different families needs aligned layers and matched roles.",
    "The target model keeps its own adapter and gains new skills from other sources.",
    "Tokens are grouped into blocks, and each block is encoded by a shared network.",
    "John Doe, the chief executive of Example Ltd, visited Tokyo last week.",
    "Is the second sentence a paraphrase of the first one? Yes. No.",
    "The cat sat on the mat, and the dog slept by the warm fire.",
    "Input: the movie was great fun. Label: positive.",
    "Input: the service was slow and the food was cold. Label: negative.",
)


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


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _trained_tokenizer_json(vocab_size: int) -> str:
    """Train the byte-level BPE once per process and vocabulary size; the JSON string is the immutable cache."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    # Byte-level pre-tokenisation maps every byte to a symbol, so any text (emoji, CJK, control bytes) encodes.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Repeating the corpus only scales pair counts, it never reorders them; it keeps enough pairs above
    # `min_frequency` to reach the requested vocabulary on a short corpus.
    tokenizer.train_from_iterator(list(_CORPUS) * 2, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    # Prepend BOS like Llama tokenizers do, so `tokenizer(text)` gives model-ready ids.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return tokenizer.to_str()


def make_tokenizer(
    out_dir: Path | str | None = None, *, vocab_size: int = DEFAULT_TOKENIZER_VOCAB
) -> PreTrainedTokenizerFast:
    """Build the tiny byte-level BPE tokenizer shared by all factory models.

    Training is deterministic and happens once per process for a given `vocab_size`; each call returns a fresh
    `PreTrainedTokenizerFast`, so callers may mutate theirs freely.

    Args:
        out_dir (`Path | str`, *optional*):
            Where to write the tokenizer with `save_pretrained`. Nothing is written when omitted.
        vocab_size (`int`, *optional*, defaults to 384):
            Total vocabulary size including the 256 byte symbols and the special tokens.

    Returns:
        `PreTrainedTokenizerFast` with `<|bos|>`, `<|eos|>`, `<|pad|>`, role tokens and a chat template.

    Raises:
        `ValueError`: if `vocab_size` cannot hold the byte alphabet and the special tokens.

    Example:
        >>> tok = make_tokenizer()
        >>> tok.decode(tok("héllo 🌍").input_ids, skip_special_tokens=True)
        'héllo 🌍'
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(f"`vocab_size` must be at least {minimum} (256 bytes + special tokens), got {vocab_size}.")
    backend = Tokenizer.from_str(_trained_tokenizer_json(vocab_size))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        # Byte-level BPE decodes exactly; the legacy clean-up would turn " ," into "," and break round trips.
        clean_up_tokenization_spaces=False,
        model_max_length=DEFAULT_MAX_POSITIONS,
    )
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Adapters
# ----------------------------------------------------------------------------------------------------------------


def _family_of(base_dir: Path) -> FamilySpec | None:
    model_type = json.loads((base_dir / "config.json").read_text())["model_type"]
    return next((spec for spec in FAMILIES.values() if spec.model_type == model_type), None)


def make_lora_adapter(
    base_dir: Path | str,
    out_dir: Path | str,
    *,
    r: int = 4,
    lora_alpha: int = 8,
    target_modules: Sequence[str] | None = None,
    seed: int = 0,
    scale: float = 0.02,
) -> Path:
    """Save a PEFT LoRA adapter for the model in `base_dir` whose `A` and `B` are both seeded random.

    PEFT initialises `B` to zero, which would make every factory adapter a no-op and hide fusion bugs;
    here `A ~ U(-1/sqrt(d_in), 1/sqrt(d_in))` (PEFT's Kaiming bound) and `B ~ N(0, scale^2)`, so
    `dW = lora_alpha / r * B @ A` changes the logits clearly without swamping the base weights (on the default
    families, r=4, alpha=8: about 0.02-0.14 nats of KL from the base next-token distribution).

    Args:
        base_dir (`Path | str`): a folder written by `make_tiny_model` (or any local causal LM).
        out_dir (`Path | str`): where `adapter_config.json` and `adapter_model.safetensors` go.
        r (`int`, *optional*, defaults to 4): LoRA rank.
        lora_alpha (`int`, *optional*, defaults to 8): LoRA alpha; the scaling is `lora_alpha / r`.
        target_modules (`Sequence[str]`, *optional*):
            Module names to adapt; defaults to all linear projections of the family.
        seed (`int`, *optional*, defaults to 0): the same seed gives identical tensors.
        scale (`float`, *optional*, defaults to 0.02): standard deviation of `B`, the base init's std.

    Returns:
        `Path` of the adapter folder; its `base_model_name_or_path` is the absolute `base_dir`.

    Raises:
        `ValueError`: if `target_modules` is omitted and the base is not a known family.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = Path(base_dir).resolve()
    out = Path(out_dir)
    if target_modules is None:
        spec = _family_of(base)
        if spec is None:
            raise ValueError(f"Cannot infer LoRA `target_modules` for {base}; pass them explicitly.")
        target_modules = spec.target_modules
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora_config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora_config)
    generator = torch.Generator().manual_seed(seed)
    # Sorted names make the draw order, hence the tensors, independent of module registration order.
    named = sorted((name, module) for name, module in peft_model.named_modules() if hasattr(module, "lora_A"))
    with torch.no_grad():
        for _, module in named:
            lora_a = module.lora_A["default"].weight  # (r, d_in)
            lora_b = module.lora_B["default"].weight  # (d_out, r)
            bound = 1.0 / math.sqrt(lora_a.shape[1])
            lora_a.copy_(torch.empty(lora_a.shape).uniform_(-bound, bound, generator=generator))
            lora_b.copy_(torch.randn(lora_b.shape, generator=generator) * scale)
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Lazy cache
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FixtureZoo:
    """Builds tiny models and adapters under `root` on first request and returns the cached path afterwards.

    Tests, the demo and the benchmark share one zoo per session, so a model is saved once however many
    adapters or tests use it. Mutable by design: it is a cache.

    Example:
        >>> zoo = FixtureZoo(tmp_path)
        >>> zoo.adapter("qwen2", r=4, seed=1)  # builds the qwen2 base first  # doctest: +SKIP
    """

    root: Path
    _models: dict[tuple[str, int], Path] = field(default_factory=dict, repr=False)
    _adapters: dict[tuple[Any, ...], Path] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def model(self, family: str, *, seed: int = 0) -> Path:
        """Return the folder of the tiny `family` base model, building it on first use."""
        key = (family, seed)
        if key not in self._models:
            self._models[key] = make_tiny_model(family, self.root / "models" / f"{family}-s{seed}", seed=seed)
        return self._models[key]

    def adapter(
        self,
        family: str,
        *,
        r: int = 4,
        seed: int = 0,
        lora_alpha: int | None = None,
        target_modules: Sequence[str] | None = None,
    ) -> Path:
        """Return the folder of a LoRA adapter on the `family` base, building both on first use.

        `lora_alpha` defaults to `2 * r`, so the scaling `lora_alpha / r` is the same at every rank.
        """
        alpha = 2 * r if lora_alpha is None else lora_alpha
        modules = tuple(target_modules) if target_modules is not None else get_family(family).target_modules
        key = (family, r, seed, alpha, modules)
        if key not in self._adapters:
            tag = "all" if target_modules is None else "-".join(modules)
            out = self.root / "adapters" / f"{family}-r{r}-a{alpha}-s{seed}-{tag}"
            self._adapters[key] = make_lora_adapter(
                self.model(family), out, r=r, lora_alpha=alpha, target_modules=modules, seed=seed
            )
        return self._adapters[key]
