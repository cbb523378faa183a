# SPDX-License-Identifier: Apache-2.0
"""The Hub round trip as a user does it, against the local Hub server with the real `hf` CLI, huggingface_hub and
PEFT: upload -> `pull` a fuse-format config -> `fuse` -> `push` -> in a clean cache, with every original folder
gone, `AutoPeftModelForCausalLM.from_pretrained("ns/fused")` and `AutoTokenizer.from_pretrained("ns/fused")` load
and generate. Plus what `push` refuses, the lock's cache-relative paths and the teacher stage's source bases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_heterofusion.cli.main import main
from hf_heterofusion.errors import ConfigError, HubError
from hf_heterofusion.hub import Lock, pull, resolve_with_lock
from hf_heterofusion.outputs.push import push
from hf_heterofusion.testing.hub_fixtures import hf_cli_path


pytestmark = pytest.mark.hub

TINY = dict(embed_dim=32, num_heads=4, max_position_embeddings=32, num_projections=16, epochs=1,
            gradient_accumulation_steps=2, lr=1e-3, max_steps=1, checkpoint_every=0, seed=0)
LOAD_AND_GENERATE = """
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("alice/fused-roundtrip")
tokenizer = AutoTokenizer.from_pretrained("alice/fused-roundtrip")  # pushed with the adapter, from the pulled base
ids = tokenizer("Name the colour 1:", return_tensors="pt").input_ids
out = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
print("generated", out.shape[1] - ids.shape[1], model.peft_config["default"].base_model_name_or_path)
"""


def _hf(*args: str) -> None:
    done = subprocess.run([hf_cli_path(), *args], env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def uploaded(hub_env, fixture_zoo, tmp_path):
    """Copies of a tiny Llama base, its anchor, a Qwen2 expert and the Qwen2 base, uploaded with `hf upload`."""
    folders = {"alice/llama-base": fixture_zoo.model("llama"), "alice/llama-anchor": fixture_zoo.adapter("llama"),
               "alice/qwen2-expert": fixture_zoo.adapter("qwen2", seed=10), "alice/qwen2-base": fixture_zoo.model("qwen2")}
    copies = {}
    for repo, folder in folders.items():
        copies[repo] = shutil.copytree(folder, tmp_path / "originals" / repo.replace("/", "--"))
        _hf("upload", repo, str(copies[repo]), ".", "--commit-message", f"upload {repo}")
    return copies


def _project(tmp_path: Path, replay_file: Path, config: dict, name: str = "fusion.yml") -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    shutil.copyfile(replay_file, project / "replay.jsonl")
    path = project / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.integration
def test_pull_fuse_push_then_load_by_repo_id_in_a_clean_cache(uploaded, hub_env, replay_file, tmp_path, capsys):
    config = _project(tmp_path, replay_file, {
        "target_model": "alice/llama-base", "target_adapter": "alice/llama-anchor",
        "sources": ["alice/qwen2-expert"], "replay": "replay.jsonl", **TINY})
    assert main(["pull", str(config)]) == 0  # the fuse format, like a mergekit YAML
    lock = Lock.load(config.parent / "heterofusion.lock.json")
    assert sorted(lock.entries) == ["alice/llama-anchor", "alice/llama-base", "alice/qwen2-expert"]
    raw = json.loads(lock.path.read_text())
    assert all(not Path(e["local_path"]).is_absolute() for e in raw["repos"].values())  # relative to the cache
    assert raw["repos"]["alice/llama-base"]["local_path"].startswith("models--alice--llama-base/snapshots/")
    assert main(["check", str(config)]) == 0
    assert "hypernet parameters" in capsys.readouterr().out

    out = tmp_path / "fused"
    assert main(["fuse", str(config), str(out)]) == 0
    written = json.loads((out / "adapter_config.json").read_text())
    base_sha = lock.entries["alice/llama-base"].sha
    assert (written["base_model_name_or_path"], written["revision"]) == ("alice/llama-base", base_sha)
    capsys.readouterr()
    assert main(["push", str(out), "alice/fused-roundtrip"]) == 0
    assert "/alice/fused-roundtrip/commit/" in capsys.readouterr().out
    card = Path(hub_env.api().hf_hub_download("alice/fused-roundtrip", "README.md")).read_text(encoding="utf-8")
    assert 'AutoPeftModelForCausalLM.from_pretrained("alice/fused-roundtrip")' in card and "your-namespace" not in card
    assert f"[alice/llama-base](https://huggingface.co/alice/llama-base/tree/{base_sha})" in card  # the pin is kept

    # A new user: empty cache, nothing of the original folders left, only the repo id.
    shutil.rmtree(hub_env.cache_dir)
    shutil.rmtree(out)
    shutil.rmtree(tmp_path / "originals")
    fresh_home = tmp_path / "fresh_home"
    env = dict(os.environ, HF_HOME=str(fresh_home), HF_HUB_CACHE=str(fresh_home / "hub"), HF_HUB_OFFLINE="0")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", LOAD_AND_GENERATE], env=env, cwd=elsewhere, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-3:] == ["generated", "4", "alice/llama-base"]


@pytest.mark.integration
def test_push_refuses_a_local_only_target_unless_base_model_is_given(make_config, hub_env, fixture_zoo, tmp_path,
                                                                      capsys):
    from hf_heterofusion.pipeline import fuse

    out = tmp_path / "local-out"
    fuse(make_config(max_steps=0), out, show_progress=False)
    with pytest.raises(HubError, match=r"exists only locally.*pass `--base-model NAMESPACE/NAME`"):
        push(out, "alice/local-target")
    assert main(["push", str(out), "alice/local-target"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line
    assert not hub_env.api().repo_exists("alice/local-target")  # refused before anything was created
    assert main(["push", str(out), "alice/local-target", "--base-model", "alice/llama-base"]) == 0
    api = hub_env.api()
    config = json.loads(Path(api.hf_hub_download("alice/local-target", "adapter_config.json")).read_text())
    assert config["base_model_name_or_path"] == "alice/llama-base"
    from huggingface_hub import ModelCard

    card = ModelCard(Path(api.hf_hub_download("alice/local-target", "README.md")).read_text())
    assert card.data.base_model == "alice/llama-base" and card.data.base_model_relation == "adapter"
    local = json.loads((out / "adapter_config.json").read_text())
    assert local["base_model_name_or_path"] != "alice/llama-base"  # the local output is left as it was


@pytest.mark.integration
def test_lock_paths_follow_the_cache_root(uploaded, hub_env, tmp_path, monkeypatch):
    lock = pull(["alice/qwen2-expert"], lock_path=tmp_path / "refs.lock.json")
    entry = lock.entries["alice/qwen2-expert"]
    moved = tmp_path / "moved-cache"
    shutil.move(str(hub_env.cache_dir), moved)
    monkeypatch.setenv("HF_HUB_CACHE", str(moved))
    assert resolve_with_lock("alice/qwen2-expert", tmp_path / "refs.lock.json") == moved / entry.local_path
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(HubError, match="is not in the Hub cache"):
        resolve_with_lock("alice/qwen2-expert", tmp_path / "refs.lock.json")


@pytest.mark.integration
@pytest.mark.parametrize("form", ["fuse", "mergekit"])
def test_teaching_sources_pull_their_base_and_the_lock_pins_it(uploaded, hub_env, replay_file, tmp_path, form):
    from hf_heterofusion.inputs import resolve_input

    if form == "fuse":
        config = {"target_model": "alice/llama-base", "target_adapter": "alice/llama-anchor",
                  "sources": [{"adapter": "alice/qwen2-expert", "base_model": "alice/qwen2-base"}],
                  "replay": "replay.jsonl", "teacher": "sources"}
    else:
        config = {"merge_method": "heterofusion", "base_model": "alice/llama-base+alice/llama-anchor",
                  "models": [{"model": "alice/qwen2-base+alice/qwen2-expert"}],
                  "parameters": {"replay": "replay.jsonl", "teacher": "sources"}}
    path = _project(tmp_path, replay_file, config)
    lock = pull(path)
    base = lock.entries["alice/qwen2-base"]
    assert base.kind == "model" and {"config.json", "model.safetensors"} <= set(base.files)
    assert any(name.startswith("tokenizer") for name in base.files)
    folder, sha = resolve_input("alice/qwen2-base", what="source base model", lock=lock.path)
    assert sha == base.sha and (folder / "model.safetensors").is_file()

    # Without `teacher: sources` nothing changes: the source's base is never downloaded.
    shutil.rmtree(hub_env.cache_dir)
    if form == "fuse":
        del config["teacher"]
    else:
        del config["parameters"]["teacher"]
    lock = pull(_project(tmp_path, replay_file, config, name="no-teacher.yml"))
    assert "alice/qwen2-base" not in lock.entries
    assert not (hub_env.cache_dir / "models--alice--qwen2-base").exists()


@pytest.mark.parametrize("form", ["fuse", "mergekit"])
def test_a_teaching_source_without_base_fails_before_any_download(hub_env, replay_file, tmp_path, form):
    if form == "fuse":
        config = {"target_model": "alice/llama-base", "target_adapter": "alice/llama-anchor",
                  "sources": ["alice/qwen2-expert"], "replay": "replay.jsonl", "teacher": "sources"}
    else:
        config = {"merge_method": "heterofusion", "base_model": "alice/llama-base+alice/llama-anchor",
                  "models": [{"model": "alice/qwen2-expert"}], "parameters": {"teacher": "sources"}}
    with pytest.raises(ConfigError, match=r"source `alice/qwen2-expert` .* teaches .* write it as `base\+adapter`"):
        pull(_project(tmp_path, replay_file, config))
    assert not hub_env.cache_dir.exists() or not any(hub_env.cache_dir.iterdir())
