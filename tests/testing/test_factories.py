# SPDX-License-Identifier: Apache-2.0
"""The tiny model families, tokenizer and adapters used by every other test really are what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from hf_heterofusion.testing import FAMILIES, make_lora_adapter, make_tiny_model, make_tokenizer, model_config


def _kv_width(config) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_key_value_heads * head_dim


def _lora_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def test_families_differ_on_every_axis(tiny_models: dict[str, Path]) -> None:
    configs = {family: AutoConfig.from_pretrained(path) for family, path in tiny_models.items()}
    assert set(configs) >= {"llama", "qwen2", "mistral", "gemma", "phi3"}
    axes = {
        "depth": {c.num_hidden_layers for c in configs.values()},
        "hidden": {c.hidden_size for c in configs.values()},
        "kv_width": {_kv_width(c) for c in configs.values()},
        "ffn": {c.intermediate_size for c in configs.values()},
        "vocab": {c.vocab_size for c in configs.values()},
    }
    for axis, values in axes.items():
        assert len(values) >= 3, f"{axis} takes only {sorted(values)}"
    for family, config in configs.items():
        spec = FAMILIES[family]
        assert config.model_type == spec.model_type
        assert (config.num_hidden_layers, config.hidden_size, _kv_width(config)) == (
            spec.num_hidden_layers,
            spec.hidden_size,
            spec.kv_width,
        )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_model_loads_runs_and_adapter_changes_logits(
    family: str, tiny_models: dict[str, Path], tiny_adapters: dict[str, Path]
) -> None:
    from peft import PeftModel

    spec = FAMILIES[family]
    model = AutoModelForCausalLM.from_pretrained(tiny_models[family]).eval()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[family])
    assert model.config.vocab_size >= len(tokenizer)
    assert (model.config.pad_token_id, model.config.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
    batch = tokenizer(["Alice works at Acme in Paris.", "Hi"], return_tensors="pt", padding=True)

    with torch.no_grad():
        base_logits = model(**batch).logits  # (2, T, V)
    assert base_logits.shape == (2, batch["input_ids"].shape[1], spec.vocab_size)
    assert torch.isfinite(base_logits).all()

    adapter_dir = tiny_adapters[family]
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_models[family].resolve())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (4, 8)
    assert set(adapter_config["target_modules"]) == set(spec.target_modules)

    peft_model = PeftModel.from_pretrained(model, adapter_dir).eval()
    lora_a = [p for n, p in peft_model.named_parameters() if "lora_A" in n]
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert len(lora_a) == len(lora_b) == spec.num_hidden_layers * len(spec.target_modules)
    assert all(p.abs().min() > 0 for p in lora_a)
    assert all(p.abs().mean() > 0.005 for p in lora_b)
    with torch.no_grad():
        fused_logits = peft_model(**batch).logits
    delta = (fused_logits - base_logits).abs().max().item()
    # Noticeable but not absurd: the adapter perturbs the logits without drowning the base model.
    assert 1e-3 < delta < 10 * base_logits.abs().max().item()


def test_phi3_adapter_has_fused_projections(tiny_adapters: dict[str, Path]) -> None:
    tensors = _lora_tensors(tiny_adapters["phi3"])
    modules = {key.split(".lora_")[0].rsplit(".", 1)[1] for key in tensors}
    assert modules == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    spec = FAMILIES["phi3"]
    qkv_b = tensors["base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight"]  # (d_q + 2 * d_kv, r)
    assert qkv_b.shape == (spec.hidden_size + 2 * spec.kv_width, 4)
    gate_up_b = tensors["base_model.model.model.layers.0.mlp.gate_up_proj.lora_B.weight"]  # (2 * ffn, r)
    assert gate_up_b.shape == (2 * spec.intermediate_size, 4)


def test_qwen2_has_qkv_biases_and_llama_has_none(tiny_models: dict[str, Path]) -> None:
    qwen = load_file(str(tiny_models["qwen2"] / "model.safetensors"))
    for proj in ("q_proj", "k_proj", "v_proj"):
        assert f"model.layers.0.self_attn.{proj}.bias" in qwen
    assert "model.layers.0.self_attn.o_proj.bias" not in qwen
    llama = load_file(str(tiny_models["llama"] / "model.safetensors"))
    assert not any(key.endswith(".bias") for key in llama)


def test_tokenizer_round_trips_any_text_and_renders_chat(llama_target: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama_target)
    for text in ["Hello, world!", "  leading spaces ,  odd  spacing\n\ttabs", "héllo wörld — 東京 🌍🚀", "\x00\x7f"]:
        ids = tokenizer(text).input_ids
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|bos|><|system|>\nBe brief.<|eos|>\n<|user|>\nCapital of France?<|eos|>\n<|assistant|>\nParis.<|eos|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>\nCapital of France?<|eos|>\n<|assistant|>\n")
    # Role markers are single special tokens, so prompt masking can find them by id.
    assert len(tokenizer("<|assistant|>", add_special_tokens=False).input_ids) == 1
    assert make_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_factories_are_deterministic(tmp_path: Path, fixture_zoo) -> None:
    base = fixture_zoo.model("mistral")
    again = make_tiny_model("mistral", tmp_path / "mistral")
    first, second = load_file(str(base / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    seed0 = _lora_tensors(fixture_zoo.adapter("mistral", r=4, seed=0))
    repeat = _lora_tensors(make_lora_adapter(base, tmp_path / "a0", r=4, lora_alpha=8, seed=0))
    other = _lora_tensors(make_lora_adapter(base, tmp_path / "a1", r=4, lora_alpha=8, seed=1))
    assert all(torch.equal(seed0[k], repeat[k]) for k in seed0)
    assert not all(torch.equal(seed0[k], other[k]) for k in seed0)


def test_model_config_overrides_and_errors() -> None:
    big = model_config("gemma", hidden_size=128, num_attention_heads=4, num_hidden_layers=6)
    assert (big.hidden_size, big.head_dim, big.num_hidden_layers) == (128, 32, 6)
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        model_config("llama", vocab_size=100)
    with pytest.raises(ValueError, match="Unknown model family `gpt2`"):
        model_config("gpt2")
