# SPDX-License-Identifier: Apache-2.0
"""`adapters.py`: PEFT's scaling rule (one function for the reader and the merged export) and the LoRA-key helper."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.merge_methods.planner import lora_folds
from hf_heterofusion.method.adapters import load_adapter, lora_key, peft_scaling


# Patterns that a "last match wins" rule reads differently from PEFT's "first match wins": for layer 1's q_proj
# both `layers.1.self_attn.q_proj` (first) and `q_proj` (later) match, so PEFT's alpha is 4, not 32. PEFT writes
# adapter_config.json with sorted keys and matches in that order when it loads the adapter, so the patterns are
# given sorted here (otherwise the trained model and the reloaded one would disagree, a PEFT quirk).
RANK_PATTERN = {"layers.0.self_attn.v_proj": 8, "v_proj": 2}
ALPHA_PATTERN = {"k_proj": 2, "layers.1.self_attn.q_proj": 4, "q_proj": 32}


@pytest.fixture(scope="module")
def patterned_adapter(fixture_zoo, tmp_path_factory):
    """A real PEFT adapter with rank_pattern and alpha_pattern, and PEFT's own `scaling` of each module."""
    base = fixture_zoo.model("llama")
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"], rank_pattern=RANK_PATTERN,
                        alpha_pattern=ALPHA_PATTERN, lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # B = 0 would be a valid adapter too, but make it non-trivial
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    out = tmp_path_factory.mktemp("patterned") / "adapter"
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    peft_model.save_pretrained(str(out))
    # What PEFT itself applies to the adapter on disk: load it back the way users do.
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(out))
    expected = {name: module.scaling["default"] for name, module in reloaded.named_modules()
                if isinstance(getattr(module, "scaling", None), dict)}
    return base, out, expected


def test_reader_scaling_equals_peft_with_rank_and_alpha_patterns(patterned_adapter):
    _, out, expected = patterned_adapter
    adapter = load_adapter(out)
    by_module = {m.module: m for m in adapter.modules}
    assert set(by_module) == set(expected)
    for module, scaling in expected.items():
        assert by_module[module].scale == pytest.approx(scaling, rel=1e-12), module
    layers = "base_model.model.model.layers"
    assert by_module[f"{layers}.1.self_attn.q_proj"].scale == 4 / 4  # the first match; the last would give 32 / 4
    assert by_module[f"{layers}.2.self_attn.q_proj"].scale == 32 / 4
    assert by_module[f"{layers}.0.self_attn.v_proj"].rank == 8 and by_module[f"{layers}.1.self_attn.v_proj"].rank == 2


def test_merged_export_folds_with_the_same_scaling(patterned_adapter, replay_file):
    base, out, expected = patterned_adapter
    cfg = FusionConfig(target_model=str(base), target_adapter=str(out), sources=[str(out)], replay=str(replay_file),
                       output="merged")
    folds = lora_folds(cfg)
    assert {f.module: f.scale for f in folds} == pytest.approx(expected, rel=1e-12)


def test_peft_scaling_matches_whole_dotted_tails_only():
    config = {"lora_alpha": 8, "alpha_pattern": {"q_proj": 16}}
    assert peft_scaling(config, "model.layers.0.self_attn.q_proj", 4) == 4.0
    assert peft_scaling(config, "base_model.model.model.layers.0.self_attn.q_proj", 4) == 4.0  # PEFT's key prefix
    assert peft_scaling(config, "model.layers.0.self_attn.xq_proj", 4) == 2.0  # `q_proj` is not a dotted tail here
    assert peft_scaling({"lora_alpha": 8, "use_rslora": True}, "model.layers.0.mlp.up_proj", 4) == 4.0


def test_lora_key_finds_both_spellings():
    tensors = {"m.lora_A.weight": torch.zeros(1), "n.lora_B.default.weight": torch.zeros(1)}
    assert lora_key(tensors, "m", "A") == "m.lora_A.weight"
    assert lora_key(tensors, "n", "B") == "n.lora_B.default.weight"
    with pytest.raises(KeyError):
        lora_key(tensors, "m", "B")
