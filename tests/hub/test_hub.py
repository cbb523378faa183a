# SPDX-License-Identifier: Apache-2.0
"""Hub helpers against the fake Hub, through the real huggingface_hub client and the real `hf` CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from hf_heterofusion.cli.main import main as cli_main
from hf_heterofusion.errors import ConfigError, HubError
from hf_heterofusion.hub import HubRef, parse_ref, pull, references_in_mergekit_config, resolve_with_lock
from hf_heterofusion.outputs.card import write_card
from hf_heterofusion.outputs.push import push
from hf_heterofusion.testing.fakehub import FakeHub
from hf_heterofusion.testing.hub_fixtures import ALICE_TOKEN, BOB_TOKEN, HubEnv, hf_cli_path


ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "README.md"}
CONFIG = """\
merge_method: heterofusion
base_model: alice/tiny-base+alice/tiny-anchor
models:
  - model: alice/tiny-base+alice/tiny-anchor
  - model: alice/src-base+alice/tiny-source@v1
    parameters: {weight: 0.5}
parameters: {layer_alignment: tail}
"""


def _adapter(folder: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    tensors = {"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": rng.standard_normal((4, 16), np.float32)}
    save_file(tensors, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: peft\n---\nA tiny adapter.\n")
    (folder / "training_args.bin").write_bytes(b"\0pickle")  # never needed: must not be downloaded
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "optimizer.pt").write_bytes(b"\0state")
    return folder


def _base(folder: Path) -> Path:
    folder.mkdir(parents=True)
    save_file({"embed.weight": np.ones((8, 16), np.float32)}, folder / "model.safetensors")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (folder / name).write_text(json.dumps({"name": name}))
    (folder / "pytorch_model.bin").write_bytes(b"\0pickle weights")  # safetensors exist: never pulled
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"\0onnx")  # not at the top level: never pulled
    return folder


def _hf(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run the real `hf` CLI with an explicit environment."""
    return subprocess.run([hf_cli_path(), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def published(fake_hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Repos uploaded once per module with the `hf` CLI; returns the sha of the source's `v1` branch."""
    from huggingface_hub import HfApi

    root = tmp_path_factory.mktemp("published")
    env = {
        **os.environ,
        "HF_ENDPOINT": fake_hub.url,
        "HF_TOKEN": ALICE_TOKEN,
        "HF_HOME": str(root / "hf_home"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    env.pop("HF_HUB_OFFLINE", None)
    for repo, folder in (
        ("alice/tiny-base", _base(root / "base")),
        ("alice/tiny-anchor", _adapter(root / "anchor", 0)),
        ("alice/tiny-source", _adapter(root / "source", 1)),
    ):
        result = _hf(env, "upload", repo, str(folder), ".", "--commit-message", "upload with the hf CLI")
        assert result.returncode == 0, result.stderr
    api = HfApi(endpoint=fake_hub.url, token=ALICE_TOKEN)
    api.create_branch("alice/tiny-source", branch="v1")
    v1 = api.model_info("alice/tiny-source", revision="v1").sha
    api.upload_file(path_or_fileobj=b"later", path_in_repo="later.txt", repo_id="alice/tiny-source")  # main moves on
    api.upload_folder(repo_id=api.create_repo("alice/src-base").repo_id, folder_path=_base(root / "src-base"))
    api.create_repo("alice/private-lora", private=True)
    api.upload_folder(repo_id="alice/private-lora", folder_path=_adapter(root / "private", 2))
    return {"v1": str(v1), "env_home": str(root / "hf_home")}


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg" / "fusion.yml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    return path


def _output_dir(folder: Path) -> Path:
    """A complete fusion output: adapter, report and card."""
    _adapter(folder, 3)
    for junk in ("training_args.bin",):
        (folder / junk).unlink()
    report = {
        "output_kind": "adapter",
        "target": {"model": "alice/tiny-base", "adapter": "alice/tiny-anchor", "model_revision": "a" * 40},
        "sources": [{"adapter": "alice/tiny-source", "revision": "b" * 40, "license": None}],
        "alignment": {"mode": "tail", "per_source": [{"source": 0, "pairs": [[0, 0], [1, 1]]}]},
    }
    (folder / "fusion_report.json").write_text(json.dumps(report))
    write_card(folder)
    return folder


# ----------------------------------------------------------------------------------------------------------------------
def test_references_in_mergekit_config_forms(tmp_path: Path) -> None:
    local = tmp_path / "local-adapter"
    local.mkdir()
    data = {
        "base_model": "org/base@r1+org/anchor@r2",
        "models": [
            {"model": "org/base@r1+org/anchor@r2"},  # the target itself: not a source
            {"model": "qwen/base+org/qwen-lora@abc"},
            {"model": {"model": {"path": "mistral/base"}, "lora": {"path": "org/mistral-lora", "revision": "v2"}}},
            {"model": str(local)},
            {"model": "org/bare-lora"},
        ],
        "slices": [{"sources": [{"model": "gemma/base+org/gemma-lora", "layer_range": [0, 4]}]}],
    }
    uses = references_in_mergekit_config(data)
    assert [(u.role, u.ref.key) for u in uses] == [
        ("target_model", "org/base@r1"),
        ("target_adapter", "org/anchor@r2"),
        ("source_adapter", "org/qwen-lora@abc"),
        ("source_adapter", "org/mistral-lora@v2"),
        ("source_adapter", str(local.resolve())),
        ("source_adapter", "org/bare-lora"),
        ("source_adapter", "org/gemma-lora"),
    ]
    assert uses[2].base_model == HubRef("qwen/base") and uses[2].where == "models[1].model"
    anchor_in_models = references_in_mergekit_config({"base_model": "a/base", "models": ["a/base+a/lora", "b/x"]})
    assert [(u.role, u.ref.key) for u in anchor_in_models][:2] == [
        ("target_model", "a/base"),
        ("target_adapter", "a/lora"),
    ]


def test_reference_errors() -> None:
    with pytest.raises(HubError, match=r"^`not a repo!!` is not a valid Hub repo id"):
        parse_ref("not a repo!!")
    with pytest.raises(HubError, match="is not a valid Hub repo id"):
        parse_ref("org/lora@")
    with pytest.raises(ConfigError, match="no `base_model`"):
        references_in_mergekit_config({"models": ["a/b"]})
    with pytest.raises(ConfigError, match="must be `model`, `adapter` or `model\\+adapter`"):
        references_in_mergekit_config({"base_model": "a/b+c/d+e/f"})
    assert parse_ref("org/lora@refs/pr/1") == HubRef("org/lora", "refs/pr/1")


@pytest.mark.integration
@pytest.mark.hub
def test_pull_pins_revisions_and_downloads_only_needed_files(
    published: dict[str, str], hub_env: HubEnv, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    lock = pull(config)
    assert lock.path == config.parent / "heterofusion.lock.json" and lock.path.is_file()
    assert sorted(lock.entries) == ["alice/tiny-anchor", "alice/tiny-base", "alice/tiny-source@v1"]
    source = lock.entries["alice/tiny-source@v1"]
    assert source.sha == published["v1"] and source.revision == "v1" and source.kind == "adapter"
    assert set(source.files) == ADAPTER_FILES and source.files["adapter_model.safetensors"].sha256
    base = lock.entries["alice/tiny-base"]
    assert set(base.files) == {
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"
    }  # fmt: skip
    cached = {p.relative_to(hub_env.cache_dir).parts[0] for p in hub_env.cache_dir.iterdir()}
    assert "models--alice--src-base" not in cached  # a source's base model is never downloaded
    for key, entry in lock.entries.items():
        folder = resolve_with_lock(key, lock.path)
        assert {p.name for p in folder.iterdir()} == set(entry.files)
    on_disk = json.loads(lock.path.read_text())
    assert on_disk["repos"]["alice/tiny-source@v1"]["sha"] == published["v1"]


@pytest.mark.integration
@pytest.mark.hub
def test_offline_pull_from_cache_and_offline_not_cached(
    published: dict[str, str], hub_env: HubEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    online = pull(config)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: any request would fail
    offline = pull(config)
    assert {k: e.sha for k, e in offline.entries.items()} == {k: e.sha for k, e in online.entries.items()}
    assert resolve_with_lock("alice/tiny-source@v1", offline).is_dir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(HubError, match=r"`alice/tiny-anchor` is not in the local cache and HF_HUB_OFFLINE=1"):
        pull(["alice/tiny-anchor"])


@pytest.mark.integration
@pytest.mark.hub
def test_corrupt_cached_file_is_fetched_again(
    published: dict[str, str], hub_env: HubEnv, caplog: pytest.LogCaptureFixture
) -> None:
    entry = pull(["alice/tiny-anchor"]).entries["alice/tiny-anchor"]
    weights = entry.folder() / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(bytes(len(good)))  # same size: only the sha256 check can notice
    with caplog.at_level(logging.WARNING, logger="hf_heterofusion.hub"):
        again = pull("alice/tiny-anchor").entries["alice/tiny-anchor"]  # one reference as a plain string
    assert "re-downloading adapter_model.safetensors" in caplog.text
    assert (again.folder() / "adapter_model.safetensors").read_bytes() == good


@pytest.mark.integration
@pytest.mark.hub
def test_pull_errors_are_one_clear_line(
    published: dict[str, str], hub_env: HubEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(HubError, match=r"revision `nope` not found in Hub repo `alice/tiny-anchor`"):
        pull(["alice/tiny-anchor@nope"])
    assert pull(["alice/private-lora"]).entries["alice/private-lora"].kind == "adapter"  # alice's HF_TOKEN
    with pytest.raises(HubError, match="does not exist or the token in use cannot read it"):
        pull(["alice/private-lora"], token=BOB_TOKEN)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError) as err:
        pull(["alice/private-lora"])
    assert str(err.value) == (
        "Hub repo `alice/private-lora` is private or does not exist; pass a token with `hf auth login` or HF_TOKEN"
    )
    with pytest.raises(HubError, match="is not a valid Hub repo id"):
        pull(["bad//id"])


@pytest.mark.integration
@pytest.mark.hub
def test_push_private_then_hf_download(published: dict[str, str], hub_env: HubEnv, tmp_path: Path) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    out = _output_dir(tmp_path / "out")
    info = push(out, "alice/fused-private", private=True, commit_message="Add fused adapter")
    assert info.startswith(f"{hub_env.url}/alice/fused-private/commit/")
    api = hub_env.api()
    assert api.model_info("alice/fused-private").private
    assert [c.title for c in api.list_repo_commits("alice/fused-private")] == ["Add fused adapter", "initial commit"]
    with pytest.raises(RepositoryNotFoundError):
        hub_env.api(token=False).model_info("alice/fused-private")
    dest = tmp_path / "downloaded"
    dest.mkdir()
    result = _hf(dict(os.environ), "download", "alice/fused-private", "--local-dir", str(dest))
    assert result.returncode == 0, result.stderr
    for name in ("adapter_model.safetensors", "fusion_report.json"):
        assert (dest / name).read_bytes() == (out / name).read_bytes()
    # The card is rendered for the repo it went to; the local one keeps its placeholder.
    assert 'from_pretrained("alice/fused-private")' in (dest / "README.md").read_text()
    assert "your-namespace/" in (out / "README.md").read_text()
    # The uploaded adapter config names the target base by its Hub id (the local file is left as it was).
    uploaded = json.loads((dest / "adapter_config.json").read_text())
    assert uploaded == {**json.loads((out / "adapter_config.json").read_text()), "base_model_name_or_path": "alice/tiny-base"}
    anonymous = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    assert _hf(anonymous, "download", "alice/fused-private", "--local-dir", str(tmp_path / "anon")).returncode != 0


@pytest.mark.integration
@pytest.mark.hub
def test_push_to_branch_and_as_pull_request(published: dict[str, str], hub_env: HubEnv, tmp_path: Path) -> None:
    out = _output_dir(tmp_path / "out")
    push(out, "alice/fused-branches", revision="experiments")
    api = hub_env.api()
    assert "fusion_report.json" in api.list_repo_files("alice/fused-branches", revision="experiments")
    assert "fusion_report.json" not in api.list_repo_files("alice/fused-branches")
    (out / "extra.txt").write_text("reviewed change")
    info = push(out, "alice/fused-branches", create_pr=True)
    assert info.pr_revision == "refs/pr/1"


@pytest.mark.integration
@pytest.mark.hub
def test_push_refusals(published: dict[str, str], hub_env: HubEnv, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(HubError, match="missing fusion_report.json"):
        push(_adapter(tmp_path / "bare", 4), "alice/nope")
    out = _output_dir(tmp_path / "out")
    (out / "README.md").unlink()
    with pytest.raises(HubError, match="has no model card .* `hf-heterofusion card"):
        push(out, "alice/nope")
    out = _output_dir(tmp_path / "out2")
    with pytest.raises(HubError, match="not a valid Hub repo id to push to"):
        push(out, "no-namespace")
    with pytest.raises(HubError, match=r"rejected the token \(401\)"):
        push(out, "alice/nope", token="hf_wrong")
    with pytest.raises(HubError, match="may not write to `bob/nope`"):
        push(out, "bob/nope", token=ALICE_TOKEN)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="pushing needs a Hub token"):
        push(out, "alice/nope")


@pytest.mark.integration
@pytest.mark.hub
def test_planted_token_never_leaks(
    published: dict[str, str], hub_env: HubEnv, fake_hub: FakeHub, tmp_path: Path, capfd, caplog
) -> None:
    caplog.set_level(logging.INFO)
    config = _config(tmp_path)
    out = _output_dir(tmp_path / "out")
    assert cli_main(["pull", str(config)]) == 0
    assert cli_main(["card", str(out)]) == 0
    assert cli_main(["push", str(out), "alice/fused-secret", "--private"]) == 0
    assert cli_main(["push", str(out), "bob/not-allowed"]) == 2  # an error path prints too
    printed = capfd.readouterr()
    assert "/alice/fused-secret/commit/" in printed.out and "error: the token in use may not write" in printed.err
    assert ALICE_TOKEN not in printed.out + printed.err + caplog.text
    for root in (tmp_path, fake_hub.store.root):
        for path in root.rglob("*"):
            if path.is_file():
                assert ALICE_TOKEN.encode() not in path.read_bytes(), path
