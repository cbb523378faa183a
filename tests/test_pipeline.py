# SPDX-License-Identifier: Apache-2.0
"""End to end: Llama target + Qwen2 and Phi-3 sources -> train a few steps -> export -> reload with PEFT."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hf_heterofusion.errors import LowEnergyWarning
from hf_heterofusion.method.adapters import load_adapter
from hf_heterofusion.outputs.report import source_reports
from hf_heterofusion.pipeline import fit, fuse
from hf_heterofusion.prepare import prepare


def _load(out_dir):
    return load_file(out_dir / "adapter_model.safetensors")


@pytest.mark.integration
def test_fuse_end_to_end_reloads_with_peft_and_generates(make_config, fixture_zoo, tmp_path):
    cfg = make_config(max_steps=3)
    result = fuse(cfg, tmp_path / "out", show_progress=False)
    out = result.out_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "fusion_report.json", "loss_curve.png",
                 "heterofusion_config.yml"):
        assert (out / name).is_file(), name
    base = AutoModelForCausalLM.from_pretrained(fixture_zoo.model("llama"))
    model = PeftModel.from_pretrained(base, out).eval()
    generated = model.generate(input_ids=torch.tensor([[1, 40, 41]]), max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 7)

    report = json.loads((out / "fusion_report.json").read_text())
    assert report["training"]["optimizer_steps"] == 3
    assert set(report["roles"]) == {"q", "k", "v", "o", "gate", "up", "down"}
    assert abs(sum(s["contribution"] for s in report["sources"]) - 1) < 1e-6
    for role in report["roles"].values():
        assert 0 <= role["gate_sparsity"] <= 1 and role["parameters"] > 0
    assert [p["source"] for p in report["alignment"]["per_source"]] == [0, 1]


@pytest.mark.integration
def test_b_only_keeps_every_A_and_changes_aligned_B(make_config, fixture_zoo, tmp_path):
    cfg = make_config(max_steps=2)
    tensors = fit(cfg, show_progress=False).tensors
    anchor = load_adapter(fixture_zoo.adapter("llama"))
    prepared = prepare(cfg)
    aligned = {mm.target.module for g in prepared.groups for mm in g.matched}
    for key, value in anchor.tensors.items():
        module = key.rsplit(".lora_", 1)[0]
        if ".lora_A." in key or module not in aligned:
            assert torch.equal(tensors[key], value), key
    changed = [k for k in tensors if ".lora_B." in k and not torch.equal(tensors[k], anchor.tensors[k])]
    assert changed and all(k.rsplit(".lora_", 1)[0] in aligned for k in changed)


@pytest.mark.integration
def test_without_training_the_zero_decoder_exports_the_target_exactly(make_config, fixture_zoo):
    cfg = make_config(max_steps=0, replay=None)
    tensors = fit(cfg, show_progress=False).tensors
    anchor = load_adapter(fixture_zoo.adapter("llama"))
    assert tensors.keys() == anchor.tensors.keys()
    for key in tensors:
        assert torch.equal(tensors[key], anchor.tensors[key]), key


@pytest.mark.integration
def test_same_seed_gives_identical_tensors_and_other_seed_differs(make_config):
    a = fit(make_config(max_steps=2, seed=3), show_progress=False).tensors
    b = fit(make_config(max_steps=2, seed=3), show_progress=False).tensors
    c = fit(make_config(max_steps=2, seed=4), show_progress=False).tensors
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_gradients_reach_only_transfer_nets_and_alphas(make_config):
    from hf_heterofusion.method.fusion import FusionModel
    from hf_heterofusion.method.patching import patch_lora_weights
    from hf_heterofusion.pipeline import _load_target

    cfg = make_config()
    prepared = prepare(cfg)
    model, _ = _load_target(prepared, cfg)
    fusion = FusionModel(prepared.target, prepared.groups, cfg, prepared.block_size, 2)
    with torch.no_grad():  # move off the zero init so the gradient reaches every net parameter
        for net in fusion.nets.values():
            net.decoder_out.weight.normal_(0, 0.01)
    out = fusion(generator=torch.Generator().manual_seed(0))
    with patch_lora_weights(model, out.b_patches, out.a_patches):
        loss = model(input_ids=torch.tensor([[1, 30, 31, 32]]), labels=torch.tensor([[1, 30, 31, 32]])).loss
    (loss + out.regulariser).backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in fusion.alphas.values())
    for name, p in fusion.named_parameters():
        if "source_embedding" not in name:
            assert p.grad is not None, name


def test_unequal_source_rank_is_refactored_and_reported(make_config):
    cfg = make_config(sources=("qwen2", "mistral"), ranks=[8, 2], max_steps=1)
    with pytest.warns(LowEnergyWarning, match=r"re-factored from rank 8 to the anchor's rank 4, it keeps only \d+%"):
        prepared = prepare(cfg)
    assert all(m.rank == 4 for s in prepared.sources for m in s.modules)
    r8, r2 = source_reports(prepared)
    assert r8.original_rank == 8 and 0 < r8.energy_kept < 1 and r8.rank == 4
    assert r2.original_rank == 2 and r2.energy_kept == pytest.approx(1.0) and r2.rank == 4


@pytest.mark.integration
def test_replay_balance_task_trains_on_equal_task_shares_and_reports_them(make_config, tmp_path):
    """6 `a` rows and 2 `b` rows: `replay_balance: task` trains on 6 + 6 (one window more per epoch than 8 rows);
    `none` (the default) trains on the 8 rows as they are and reports no balance."""
    replay = tmp_path / "tagged.jsonl"
    rows = [{"prompt": f"Q{i}:", "response": f" a{i}", "task": "a" if i < 6 else "b"} for i in range(8)]
    replay.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = fit(make_config(sources=("qwen2",), replay=str(replay)), show_progress=False).report.training
    balanced = fit(make_config(sources=("qwen2",), replay=str(replay), replay_balance="task"),
                   show_progress=False).report.training
    assert plain.replay_balance is None and plain.replay_examples == 8 and plain.optimizer_steps == 4
    assert balanced.replay_balance == {"mode": "task", "groups": {"a": 6, "b": 2}, "rows_per_group": 6,
                                       "rows": 12}
    assert balanced.replay_examples == 12 and balanced.optimizer_steps == 6
