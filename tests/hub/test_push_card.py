# SPDX-License-Identifier: Apache-2.0
"""What `push` puts on the Hub besides the weights, against the local Hub server with the real huggingface_hub
client: the card rendered for the repo (its id in the title and usage snippets, the `--base-model` id in the front
matter and body) and the target base's tokenizer, so that a new user loads both by repo id alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_heterofusion.constants import TOKENIZER_FILES
from hf_heterofusion.outputs.push import push
from hf_heterofusion.pipeline import fuse


pytestmark = [pytest.mark.hub, pytest.mark.integration]

REPO = "alice/fused-card"
BASE = "alice/card-llama-base"
LOAD = f"""
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{REPO}")
model = AutoPeftModelForCausalLM.from_pretrained("{REPO}")
ids = tokenizer("Name the colour 1:", return_tensors="pt").input_ids
out = model.generate(input_ids=ids, max_new_tokens=2, do_sample=False)
print("loaded", out.shape[1] - ids.shape[1], model.peft_config["default"].base_model_name_or_path)
"""


@pytest.fixture
def local_output(make_config, tmp_path) -> Path:
    """A fusion of a local target (so its card says `local` and names a placeholder repo)."""
    out = tmp_path / "out"
    fuse(make_config(max_steps=1), out, show_progress=False)
    return out


def test_push_renders_the_card_for_the_repo_and_the_hub_base(local_output, hub_env, fixture_zoo):
    api = hub_env.api()
    api.create_repo(BASE, exist_ok=True)
    api.upload_folder(repo_id=BASE, folder_path=fixture_zoo.model("llama"))
    before = {p.name: p.read_bytes() for p in local_output.iterdir() if p.is_file()}
    assert "your-namespace/" in before["README.md"].decode()

    push(local_output, REPO, base_model=BASE)
    text = Path(api.hf_hub_download(REPO, "README.md")).read_text(encoding="utf-8")
    card = ModelCard(text)
    assert card.data.base_model == BASE and card.data.base_model_relation == "adapter"
    assert "your-namespace" not in text
    assert f"\n# {REPO}\n" in text
    assert f'model = PeftModel.from_pretrained(base, "{REPO}")' in text
    assert f'model = AutoPeftModelForCausalLM.from_pretrained("{REPO}")' in text
    assert f"hf download {REPO} --local-dir fused-card" in text
    assert f'base = AutoModelForCausalLM.from_pretrained("{BASE}")' in text
    target_line = next(line for line in text.splitlines() if line.startswith("- **Target base model:**"))
    assert target_line.startswith(f"- **Target base model:** [{BASE}](https://huggingface.co/{BASE}) at `main`")
    assert "(local)" not in target_line and "A PEFT LoRA adapter for `" not in text
    # The local output is left as it was: the repo's card and config were uploaded from memory.
    assert {p.name: p.read_bytes() for p in local_output.iterdir() if p.is_file()} == before


def test_pushed_adapter_and_tokenizer_load_by_repo_id_in_a_fresh_cache(local_output, hub_env, fixture_zoo, tmp_path):
    api = hub_env.api()
    api.create_repo(BASE, exist_ok=True)
    api.upload_folder(repo_id=BASE, folder_path=fixture_zoo.model("llama"))
    push(local_output, REPO, base_model=BASE)
    files = set(api.list_repo_files(REPO))
    target = fixture_zoo.model("llama")
    shipped = {name for name in TOKENIZER_FILES if (target / name).is_file()}
    assert {"tokenizer.json", "tokenizer_config.json"} <= shipped <= files
    for name in shipped:
        assert Path(api.hf_hub_download(REPO, name)).read_bytes() == (target / name).read_bytes()
    assert not any((local_output / name).exists() for name in shipped)  # uploaded from the base, not copied here
    assert json.loads(Path(api.hf_hub_download(REPO, "adapter_config.json")).read_text())[
        "base_model_name_or_path"] == BASE

    fresh = tmp_path / "fresh_home"
    env = dict(os.environ, HF_HOME=str(fresh), HF_HUB_CACHE=str(fresh / "hub"), HF_HUB_OFFLINE="0")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", LOAD], env=env, cwd=elsewhere, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-3:] == ["loaded", "2", BASE]
