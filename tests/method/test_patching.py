# SPDX-License-Identifier: Apache-2.0
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from hf_heterofusion.method.patching import patch_lora_weights


@pytest.fixture()
def peft_llama(llama_target, llama_anchor):
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_target), llama_anchor).eval()


def test_patch_is_used_then_the_original_parameter_is_restored(peft_llama):
    path = "base_model.model.model.layers.0.self_attn.q_proj"
    layer = peft_llama.get_submodule(path).lora_B["default"]
    original = layer.weight
    ids = torch.tensor([[1, 5, 9, 12]])
    before = peft_llama(input_ids=ids).logits
    new_b = torch.randn_like(original, requires_grad=True)
    with patch_lora_weights(peft_llama, {path: new_b * 3}):
        assert layer.weight is not original
        patched = peft_llama(input_ids=ids).logits
        patched.sum().backward()
    assert layer.weight is original and isinstance(layer.weight, torch.nn.Parameter)
    assert "weight" in layer._parameters
    assert not torch.allclose(before, patched)
    assert new_b.grad is not None and new_b.grad.abs().sum() > 0
    assert original.grad is None


def test_patch_restores_even_when_the_body_raises(peft_llama):
    path = "base_model.model.model.layers.1.mlp.down_proj"
    layer = peft_llama.get_submodule(path).lora_B["default"]
    original = layer.weight
    with pytest.raises(RuntimeError, match="boom"), patch_lora_weights(peft_llama, {path: torch.zeros_like(original)}):
        raise RuntimeError("boom")
    assert layer.weight is original


def test_wrong_shape_is_refused_and_nothing_stays_patched(peft_llama):
    good = "base_model.model.model.layers.0.self_attn.q_proj"
    bad = "base_model.model.model.layers.0.self_attn.k_proj"
    g_layer = peft_llama.get_submodule(good).lora_B["default"]
    original = g_layer.weight
    with pytest.raises(ValueError, match="expected"), patch_lora_weights(
        peft_llama, {good: torch.zeros_like(original), bad: torch.zeros(3, 3)}
    ):
        pass
    assert g_layer.weight is original
