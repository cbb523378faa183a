# SPDX-License-Identifier: Apache-2.0
"""The whole Hub workflow against the local Hub server, through the real `hf` CLI and huggingface_hub client:

upload a target base, an anchor and two heterogeneous source adapters -> `hf-heterofusion pull` a mergekit YAML
that references them by repo id and revision -> `hf-heterofusion merge` -> `hf-heterofusion push` to a new private
repo -> `hf download` into an empty folder -> load with PEFT; the card parses; anonymous users see nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from hf_heterofusion.cli.main import main as cli_main
from hf_heterofusion.testing.hub_fixtures import hf_cli_path


pytestmark = [pytest.mark.hub, pytest.mark.integration]

SMALL = dict(block_size="auto", embed_dim=32, num_heads=4, max_position_embeddings=32, num_projections=16,
             epochs=1, gradient_accumulation_steps=2, lr=1e-3, max_steps=2, checkpoint_every=0)


def _hf(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([hf_cli_path(), *args], env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=120)


def test_upload_pull_merge_push_download_load(hub_env, fixture_zoo, replay_file, tmp_path, capsys):
    from huggingface_hub import ModelCard
    from huggingface_hub.errors import RepositoryNotFoundError
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    uploads = {
        "alice/llama-base": fixture_zoo.model("llama"),
        "alice/llama-anchor": fixture_zoo.adapter("llama"),
        "alice/qwen2-expert": fixture_zoo.adapter("qwen2", seed=10),
        "alice/phi3-expert": fixture_zoo.adapter("phi3", seed=11),
    }
    for repo, folder in uploads.items():
        done = _hf("upload", repo, str(folder), ".", "--commit-message", f"upload {repo}")
        assert done.returncode == 0, done.stderr
    api = hub_env.api()
    api.create_branch("alice/phi3-expert", branch="v1")
    pinned = api.model_info("alice/phi3-expert", revision="v1").sha

    cfg_dir = tmp_path / "project"
    cfg_dir.mkdir()
    (cfg_dir / "replay.jsonl").write_bytes(Path(replay_file).read_bytes())
    config = {
        "merge_method": "heterofusion",
        "base_model": "alice/llama-base+alice/llama-anchor",
        "models": [{"model": "alice/qwen2-expert"}, {"model": "alice/phi3-expert@v1", "parameters": {"weight": 0.5}}],
        "parameters": {"replay": "replay.jsonl", "seed": 0, **SMALL},
        "dtype": "float32",
    }
    cfg = cfg_dir / "fusion.yml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))

    assert cli_main(["pull", str(cfg)]) == 0
    assert (cfg_dir / "heterofusion.lock.json").is_file()
    out = tmp_path / "fused"
    assert cli_main(["merge", str(cfg), str(out)]) == 0
    capsys.readouterr()
    assert cli_main(["push", str(out), "alice/fused-private", "--private"]) == 0
    assert "/alice/fused-private/commit/" in capsys.readouterr().out

    dest = tmp_path / "downloaded"
    dest.mkdir()
    done = _hf("download", "alice/fused-private", "--local-dir", str(dest))
    assert done.returncode == 0, done.stderr
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(fixture_zoo.model("llama")), dest)
    assert model(input_ids=torch.tensor([[1, 20, 30]])).logits.shape[-1] > 0

    card = ModelCard((dest / "README.md").read_text(encoding="utf-8"))
    meta = card.data.to_dict()
    assert meta["base_model"] == "alice/llama-base"
    assert meta["base_model_relation"] == "adapter" and meta["library_name"] == "peft"
    assert {"heterofusion", "merge", "mergekit", "lora"} <= set(meta["tags"])
    assert pinned in card.text  # the source's pinned revision is in the body

    with pytest.raises(RepositoryNotFoundError):
        hub_env.api(token=False).model_info("alice/fused-private")

    # A second pull works offline from the cache, pinned by the lock.
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        assert cli_main(["pull", str(cfg)]) == 0
    finally:
        os.environ.pop("HF_HUB_OFFLINE")
