# SPDX-License-Identifier: Apache-2.0
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import hf_heterofusion.method.train as train_mod
from hf_heterofusion.config import FusionConfig
from hf_heterofusion.method.adapters import load_adapter
from hf_heterofusion.method.train import epoch_order, lr_schedule_steps
from hf_heterofusion.pipeline import fit
from hf_heterofusion.prepare import prepare


def test_every_partial_window_counts_as_an_optimiser_step():
    cfg = FusionConfig(target_model="t", target_adapter="a", sources=["s"], replay="r", gradient_accumulation_steps=8)
    assert lr_schedule_steps(1800, cfg, 1) == (225, 675)  # the paper's 6 x 300 replay set
    assert lr_schedule_steps(10, cfg, 1) == (2, 6)  # 8 + 2: the reference would drop the 2


def test_min_steps_adds_passes_over_a_small_set_and_max_steps_still_caps():
    cfg = FusionConfig(target_model="t", target_adapter="a", sources=["s"], replay="r", gradient_accumulation_steps=8,
                       min_steps=20)
    assert lr_schedule_steps(10, cfg, 1) == (2, 20)  # 10 passes instead of 3
    assert lr_schedule_steps(1800, cfg, 1) == (225, 675)  # a set that fills them: `epochs` passes, as before
    assert lr_schedule_steps(10, cfg.model_copy(update={"max_steps": 7}), 1) == (2, 7)
    assert lr_schedule_steps(0, cfg, 1) == (0, 0)  # nothing to train on: no step


@pytest.mark.integration
def test_min_steps_trains_that_many_steps_past_the_epochs(make_config):
    result = fit(make_config(epochs=1, min_steps=5), show_progress=False)
    assert result.report.training.optimizer_steps == 5
    assert [r["step"] for r in result.report.training.losses] == [1, 2, 3, 4, 5]


def test_epoch_order_is_a_seeded_permutation():
    assert epoch_order(10, 0, 0) == epoch_order(10, 0, 0)
    assert sorted(epoch_order(10, 0, 1)) == list(range(10))
    assert epoch_order(10, 0, 0) != epoch_order(10, 0, 1)


@pytest.mark.integration
def test_resume_from_checkpoint_gives_the_uninterrupted_result(make_config, tmp_path, monkeypatch):
    cfg = make_config(max_steps=4, checkpoint_every=1, epochs=2)
    reference = fit(cfg, show_progress=False).tensors

    real_run_window, calls = train_mod._run_window, {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # stands in for a kill after two optimiser steps
        return real_run_window(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_run_window", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, work_dir=tmp_path / "work", show_progress=False)
    monkeypatch.setattr(train_mod, "_run_window", real_run_window)
    resumed = fit(cfg, work_dir=tmp_path / "work", show_progress=False)
    assert resumed.report.training.resumed_from_step == 2
    assert resumed.report.training.optimizer_steps == 4
    assert all(torch.equal(reference[k], resumed.tensors[k]) for k in reference)


@pytest.mark.integration
def test_amortized_nets_match_per_micro_step_nets_without_regulariser(make_config):
    # With lambda_reg = 0 the two schedules compute the same gradient; only float summation order differs.
    # `amortize_nets: false` is the reference path (nets run per micro-batch); `true` (the default) amortizes them.
    reference = make_config(max_steps=2, lambda_reg=0.0, amortize_nets=False)
    a = fit(reference, show_progress=False).tensors
    b = fit(make_config(max_steps=2, lambda_reg=0.0, amortize_nets=True), show_progress=False).tensors
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    anchor = load_adapter(reference.target_adapter).tensors
    assert any(not torch.equal(a[k], anchor[k]) for k in a)  # the fits moved the factors: the match means something


@pytest.mark.integration
def test_accelerate_two_processes_match_one_process(make_config, tmp_path):
    """Two processes with half the accumulation each = one process, same effective batch.

    `accelerate launch --cpu --num_processes 2` silently runs ONE process (accelerate needs MPI for multi-CPU);
    `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2` really starts two gloo ranks.
    """
    single = make_config(max_steps=2, gradient_accumulation_steps=4)
    double = make_config(max_steps=2, gradient_accumulation_steps=2)
    one, two = _launch(single, 1, tmp_path / "one", 29517), _launch(double, 2, tmp_path / "two", 29517)
    # The exported adapter is the anchor with the aligned modules' B fused: every A and every module without an
    # aligned source stay the anchor's, bit for bit; training moved some aligned B (else "two = one" is vacuous).
    anchor = load_adapter(single.target_adapter).tensors
    aligned = {mm.target.module for g in prepare(single).groups for mm in g.matched}
    assert one.keys() == two.keys() == anchor.keys()
    for key, value in anchor.items():
        if ".lora_A." in key or key.rsplit(".lora_", 1)[0] not in aligned:
            assert torch.equal(one[key], value) and torch.equal(two[key], value), key
    changed = [k for k in one if ".lora_B." in k and not torch.equal(one[k], anchor[k])]
    assert changed and all(k.rsplit(".lora_", 1)[0] in aligned for k in changed)
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), k


@pytest.mark.integration
def test_accelerate_two_processes_match_one_process_with_distillation(make_config, tmp_path):
    """The replay loss with a row signal (anchor self-distillation on every untagged row) under 2 processes equals
    one process with twice the accumulation: the signal travels with its row through accelerate's sharding."""
    single = make_config(max_steps=2, gradient_accumulation_steps=4, trainer="lora", anchor_kd_weight=1.0, lr=1e-2)
    double = make_config(max_steps=2, gradient_accumulation_steps=2, trainer="lora", anchor_kd_weight=1.0, lr=1e-2)
    one, two = _launch(single, 1, tmp_path / "one", 29519), _launch(double, 2, tmp_path / "two", 29519)
    anchor = load_adapter(single.target_adapter).tensors
    assert any(not torch.equal(one[k], anchor[k]) for k in anchor)
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), k


def _launch(cfg, procs: int, stem, port: int) -> dict:
    """`pipeline.fit` of `cfg` under `accelerate launch` with `procs` real CPU processes; the fused tensors."""
    cfg_path, out = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")))
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu" if procs > 1 else "--cpu",
           "--num_processes", str(procs), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), "-m", "hf_heterofusion.testing.fit_script", str(cfg_path), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"world_size={procs}" in proc.stdout
    return load_file(out)
