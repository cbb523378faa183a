# SPDX-License-Identifier: Apache-2.0
"""`hf-heterofusion merge / check / mergekit-hook`: mergekit YAML configs end to end on tiny models.

The example YAMLs in `merge_methods/` are run as written (relative paths resolved against the YAML's folder), with
only their size and step parameters shrunk for the tiny fixtures.
"""

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from hf_heterofusion.cli.main import main
from hf_heterofusion.config import FusionConfig


EXAMPLES = Path(__file__).resolve().parents[2] / "merge_methods"
TINY = dict(embed_dim=32, num_heads=4, max_position_embeddings=32, num_projections=16, epochs=1,
            gradient_accumulation_steps=1, lr=1e-3, checkpoint_every=0, max_steps=2)
IDS = torch.tensor([[1, 40, 41, 42, 100, 200, 300]])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, fixture_zoo, replay_file) -> Path:
    """The folder layout the example YAMLs refer to, made of symlinks to the session's tiny models and adapters."""
    ws = tmp_path_factory.mktemp("merge_ws")
    links = {
        "models/llama": fixture_zoo.model("llama"),
        "models/qwen2": fixture_zoo.model("qwen2"),
        "adapters/llama-task-a": fixture_zoo.adapter("llama", seed=0),
        "adapters/llama-task-b": fixture_zoo.adapter("llama", seed=1),
        "adapters/qwen2-task-b": fixture_zoo.adapter("qwen2", seed=10),
        "adapters/phi3-task-c": fixture_zoo.adapter("phi3", seed=11),
        "replay.jsonl": replay_file,
    }
    for name, target in links.items():
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, ws / name)
    return ws


def example(ws: Path, name: str, *, params: dict | None = None, top: dict | None = None, tiny: bool = True,
            as_name: str | None = None) -> Path:
    """Copy an example YAML into the workspace with tiny sizes (and any overrides)."""
    data = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    if tiny:
        data["parameters"] = {**data.get("parameters", {}), **TINY}
    data["parameters"] = {**data.get("parameters", {}), **(params or {})}
    data.update(top or {})
    path = ws / (as_name or name)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_yaml(ws: Path, name: str, data: dict) -> Path:
    path = ws / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def adapter_run(workspace):
    cfg = example(workspace, "heterofusion_adapter.yml")
    out = workspace / "out-adapter"
    assert main(["merge", str(cfg), str(out), "--quiet"]) == 0
    return cfg, out


@pytest.fixture(scope="module")
def both_run(workspace):
    cfg = example(workspace, "heterofusion_adapter.yml", params={"output": "both"}, as_name="both.yml")
    out = workspace / "out-both"
    assert main(["merge", str(cfg), str(out), "--out-shard-size", "200K", "--quiet"]) == 0
    return cfg, out


@pytest.mark.integration
def test_adapter_output_loads_with_peft(adapter_run, fixture_zoo):
    cfg, out = adapter_run
    for name in ("adapter_config.json", "adapter_model.safetensors", "fusion_report.json", "loss_curve.png",
                 "heterofusion_config.yml", "mergekit_config.yml"):
        assert (out / name).is_file(), name
    assert not (out / "merged").exists()
    base = AutoModelForCausalLM.from_pretrained(fixture_zoo.model("llama"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, out).eval()
    assert model(IDS).logits.isfinite().all()

    report = json.loads((out / "fusion_report.json").read_text())
    assert report["output_kind"] == "adapter"
    assert [s["family"] for s in report["sources"]] == ["qwen2", "phi3"]
    assert report["training"]["optimizer_steps"] == 2
    assert (out / "mergekit_config.yml").read_text() == cfg.read_text() == report["config_yaml"]
    # The config copy is a runnable FusionConfig with paths resolved against the YAML's folder.
    fusion = FusionConfig.from_yaml(out / "heterofusion_config.yml")
    assert fusion.target_adapter == str(cfg.parent / "adapters" / "llama-task-a")
    assert fusion.sources[0].base_model == str(cfg.parent / "models" / "qwen2")
    assert fusion.sources[1].base_model is None and fusion.sources[1].adapter.endswith("phi3-task-c")


@pytest.mark.integration
def test_both_layout_merged_checkpoint_equals_peft_merge_and_is_sharded(both_run, fixture_zoo):
    _, out = both_run
    merged = out / "merged"
    assert (out / "adapter_model.safetensors").is_file()
    index = json.loads((merged / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and all((merged / s).is_file() for s in shards)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "fusion_report.json", "mergekit_config.yml"):
        assert (merged / name).is_file(), name
    assert json.loads((merged / "fusion_report.json").read_text())["output_kind"] == "merged"

    base = AutoModelForCausalLM.from_pretrained(fixture_zoo.model("llama"), dtype=torch.float32)
    reference = PeftModel.from_pretrained(base, out).merge_and_unload().eval()
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    with torch.no_grad():
        expected, actual = reference(IDS).logits, model(IDS).logits
        plain = AutoModelForCausalLM.from_pretrained(fixture_zoo.model("llama"), dtype=torch.float32).eval()(IDS)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    assert (actual - plain.logits).abs().max() > 1e-3  # the fused update is really in the weights


def test_merged_example_writes_a_checkpoint_with_the_yaml_dtypes(workspace):
    # max_steps 0: the export equals the anchor; this test is about the layout and dtype handling.
    cfg = example(workspace, "heterofusion_merged.yml", params={"max_steps": 0})
    out = workspace / "out-merged"
    assert main(["merge", str(cfg), str(out), "--quiet"]) == 0
    assert not (out / "adapter_model.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model(IDS).logits.isfinite().all()
    report = json.loads((out / "fusion_report.json").read_text())
    assert report["sources"][0]["family"] == "qwen2" and report["mergekit"]["out_dtype"] == "bfloat16"


@pytest.mark.parametrize("params, top, expected", [
    ({"embed_dimm": 32}, None, "unknown heterofusion parameter `embed_dimm` under `parameters`; did you mean "
                               "`embed_dim`?"),
    (None, {"parameter": {"seed": 1}}, "unknown top-level key `parameter`; did you mean `parameters`?"),
    ({"block_size": [64, 128]}, None, "`parameters.block_size` must be a single value"),
    ({"layer_alignment": "diagonal"}, None, "`layer_alignment`"),
    ({"embed_dim": 30}, None, "`embed_dim` (30)"),
])
def test_config_errors_are_one_line_and_name_the_key(workspace, capsys, params, top, expected):
    cfg = example(workspace, "heterofusion_adapter.yml", params=params, top=top, as_name="bad.yml")
    assert main(["merge", str(cfg), str(workspace / "never"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {cfg}: ")  # which file, then what
    assert not (workspace / "never").exists()


def test_unknown_per_model_key_is_an_error(workspace, capsys):
    data = yaml.safe_load((EXAMPLES / "heterofusion_adapter.yml").read_text())
    data["models"][0]["parameters"] = {"weigth": 0.5}
    assert main(["check", str(write_yaml(workspace, "bad_model.yml", data))]) == 2
    assert "unknown heterofusion parameter `weigth` under `models[0].parameters`; did you mean `weight`?" in \
        capsys.readouterr().err


def test_dry_run_prints_the_plan_and_writes_nothing(workspace, capsys):
    cfg = example(workspace, "heterofusion_adapter.yml", params={"output": "both"}, as_name="dry.yml")
    out = workspace / "out-dry"
    assert main(["merge", "--dry-run", str(cfg), str(out)]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    for needle in (
        "target   llama: 4 layers, hidden 64, rank 4",
        "[0] qwen2: 3 layers, hidden 48, rank 4", "[1] phi3: 3 layers, hidden 56, rank 4",
        "alignment `tail`", "source 0: target 1..3 <- source 0..2",
        "layer 3 <- [0] L2: q k v o gate up down | [1] L2: q k v o gate up down",
        "untouched target modules (7", "model.layers.*.self_attn.q_proj: layers 0",
        "hypernet parameters", "total", "estimates (rough", "memory: hypernets", "time per optimiser step",
        "2 optimiser steps", f"{out}/merged: merged checkpoint",
    ):
        assert needle in text, needle
    assert main(["check", str(cfg)]) == 0
    assert "hypernet parameters" in capsys.readouterr().out


def test_dry_run_exits_2_when_the_fusion_cannot_run(workspace, fixture_zoo, capsys):
    anchor = fixture_zoo.adapter("llama", target_modules=("v_proj",))
    source = fixture_zoo.adapter("qwen2", seed=3, target_modules=("q_proj",))
    data = {"merge_method": "heterofusion", "base_model": f"{fixture_zoo.model('llama')}+{anchor}",
            "models": [{"model": str(source)}], "parameters": {"replay": "replay.jsonl", **TINY}}
    cfg = write_yaml(workspace, "impossible.yml", data)
    assert main(["merge", "--dry-run", str(cfg), str(workspace / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no target module has an aligned source module") and len(err.splitlines()) == 1
    assert main(["check", str(cfg)]) == 2


@pytest.mark.integration
def test_existing_output_needs_overwrite_before_any_training(adapter_run, capsys):
    cfg, out = adapter_run
    assert main(["merge", str(cfg), str(out), "--quiet"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_plain_mergekit_config_runs_unchanged(workspace, fixture_zoo, capsys):
    a, b = fixture_zoo.model("llama", seed=0), fixture_zoo.model("llama", seed=1)
    cfg = write_yaml(workspace, "linear.yml", {"merge_method": "linear", "dtype": "float32",
                                               "models": [{"model": str(a), "parameters": {"weight": 1.0}},
                                                          {"model": str(b), "parameters": {"weight": 1.0}}]})
    out = workspace / "out-linear"
    assert main(["merge", str(cfg), str(out), "--quiet"]) == 0
    name = "model.layers.0.self_attn.q_proj.weight"
    tensors = []
    for folder in (a, b, out):
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            tensors.append(f.get_tensor(name))
    torch.testing.assert_close(tensors[2], (tensors[0] + tensors[1]) / 2)
    assert (out / "mergekit_config.yml").read_text() == cfg.read_text()
    assert main(["check", str(cfg)]) == 0
    assert "plain mergekit config" in capsys.readouterr().out


def test_data_free_example_merges_adapters_on_the_base(workspace, fixture_zoo):
    cfg = example(workspace, "heterofusion_data_free.yml", tiny=False)
    out = workspace / "out-data-free"
    assert main(["merge", str(cfg), str(out), "--quiet"]) == 0
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(fixture_zoo.model("llama"), dtype=torch.float32).eval()
    with torch.no_grad():
        assert (model(IDS).logits - base(IDS).logits).abs().max() > 1e-4
    assert "HeteroFusion" in (out / "README.md").read_text()


@pytest.mark.parametrize("change, expected", [
    ({"parameters": {"embed_dim": 32}}, "`parameters.embed_dim` is a trained-mode parameter"),
    ({"models": [{"model": "./adapters/qwen2-task-b"}]}, "does not fit the base model"),
    ({"parameters": {"output": "adapter"}}, "the data-free mode writes a merged model"),
])
def test_data_free_mode_explains_what_it_cannot_do(workspace, capsys, change, expected):
    data = {**yaml.safe_load((EXAMPLES / "heterofusion_data_free.yml").read_text()), **change}
    assert main(["check", str(write_yaml(workspace, "df_bad.yml", data))]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err


def test_merge_accepts_every_mergekit_yaml_option(capsys):
    from mergekit.options import MergeOptions

    assert main(["merge", "--help"]) == 0
    text = capsys.readouterr().out
    for field in MergeOptions.model_fields:
        flag = {"verbosity": "-v", "num_threads": "--num-threads"}.get(field, "--" + field.replace("_", "-"))
        assert flag in text, flag
    assert "--dry-run" in text and "--overwrite" in text


def test_merge_without_out_path_is_a_usage_error(workspace, capsys):
    cfg = example(workspace, "heterofusion_adapter.yml", as_name="usage.yml")
    assert main(["merge", str(cfg)]) == 2
    assert "OUT_PATH" in capsys.readouterr().err


def test_mergekit_hook_command(tmp_path, capsys):
    assert main(["mergekit-hook", "status", "--site-dir", str(tmp_path)]) == 0
    assert "not installed" in capsys.readouterr().out
    assert main(["mergekit-hook", "install", "--site-dir", str(tmp_path)]) == 0
    assert (tmp_path / "hf_heterofusion_mergekit.pth").is_file()
    assert main(["mergekit-hook", "uninstall", "--site-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "hf_heterofusion_mergekit.pth").exists()
