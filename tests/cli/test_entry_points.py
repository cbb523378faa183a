# SPDX-License-Identifier: Apache-2.0
"""One way in, whichever tool the user reaches for: both config formats in `check` / `fuse --dry-run`, the
hypernet size said (and warned about) in every entry point, plain `mergekit-yaml` on a trained-mode config, the
`--eval` card, output modes under the umask and the loss plot."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from PIL import Image

from hf_heterofusion.cli.main import main
from hf_heterofusion.merge_methods import hook
from hf_heterofusion.outputs.sizing import HypernetSizeWarning


MERGEKIT = {"merge_method": "heterofusion"}


def _fuse_yaml(tmp_path: Path, cfg, name: str = "fusion.yml", **extra) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**cfg.model_dump(mode="json", exclude_defaults=True), **extra}), encoding="utf-8")
    return path


def _mergekit_yaml(tmp_path: Path, cfg, **params) -> Path:
    data = {
        **MERGEKIT,
        "base_model": f"{cfg.target_model}+{cfg.target_adapter}",
        "models": [{"model": s.adapter} for s in cfg.sources],
        "parameters": {"replay": cfg.replay, "embed_dim": cfg.embed_dim, "num_heads": cfg.num_heads,
                       "max_position_embeddings": cfg.max_position_embeddings, **params},
    }
    path = tmp_path / "mergekit.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_block_size_auto_is_the_default():
    from hf_heterofusion.config import FusionConfig

    assert FusionConfig.model_fields["block_size"].default == "auto"


def test_check_and_fuse_dry_run_accept_both_formats(make_config, tmp_path, capsys):
    cfg = make_config(max_steps=1)
    fuse_cfg, merge_cfg = _fuse_yaml(tmp_path, cfg), _mergekit_yaml(tmp_path, cfg)
    outputs = []
    for argv in (["check", str(fuse_cfg)], ["check", str(merge_cfg)],
                 ["fuse", str(fuse_cfg), str(tmp_path / "o"), "--dry-run"],
                 ["fuse", str(merge_cfg), str(tmp_path / "o"), "--dry-run"]):
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out)
    for text in outputs:
        assert "hypernet parameters" in text and "target model 250,432 parameters" in text
        assert "block size 64" in text  # `auto` on 64-wide models
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


@pytest.mark.integration
def test_every_entry_point_prints_the_hypernet_size_and_warns_when_it_dwarfs_the_target(make_config, tmp_path,
                                                                                        capsys):
    from hf_heterofusion.pipeline import fuse

    big = make_config(max_steps=0, embed_dim=128)  # 4x the tests' E: larger than the 250 K-parameter target
    with pytest.warns(HypernetSizeWarning, match=r"set `embed_dim: 32` \(or smaller\)"):
        fuse(big, tmp_path / "python")
    assert "hypernet: " in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("always", HypernetSizeWarning)
        assert main(["fuse", str(_fuse_yaml(tmp_path, big)), str(tmp_path / "cli")]) == 0
        assert main(["merge", str(_mergekit_yaml(tmp_path, big, max_steps=0)), str(tmp_path / "merge")]) == 0
    err = capsys.readouterr().err
    assert err.count("hypernet: ") == 2 and err.count("warning: the transfer nets have") == 2
    assert main(["check", str(_fuse_yaml(tmp_path, big))]) == 0
    assert "warning: the transfer nets are larger than the target model; set `embed_dim: 32` (or smaller)" in \
        capsys.readouterr().out
    paper = make_config(max_steps=0, embed_dim=1024, num_heads=8, max_position_embeddings=4096)
    with pytest.warns(HypernetSizeWarning, match=r"set `embed_dim: \d+`, `max_position_embeddings: \d+` \(or"):
        fuse(paper, tmp_path / "paper", show_progress=False)  # the README snippet's defaults on tiny models
    small = make_config(max_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HypernetSizeWarning)  # the tests' sizes fit: no warning
        fuse(small, tmp_path / "small")


@pytest.mark.integration
def test_plain_mergekit_yaml_on_a_trained_config_says_to_run_hf_heterofusion_merge(make_config, tmp_path):
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    hook.install_pth(site_dir)
    config = _mergekit_yaml(tmp_path, make_config())
    code = (f"import site, sys\nsite.addsitedir({str(site_dir)!r})\n"
            "from mergekit.scripts.run_yaml import main\n"
            f"sys.argv = ['mergekit-yaml', {str(config)!r}, {str(tmp_path / 'out')!r}]\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("Error: this heterofusion config trains transfer nets")
    assert f"run it with `hf-heterofusion merge CONFIG.yml {tmp_path / 'out'}`" in lines[0]
    assert not (tmp_path / "out").exists()


def test_guard_leaves_other_configs_to_mergekit():
    import types

    calls = []
    module = types.SimpleNamespace(run_merge=lambda config, out, **kw: calls.append(out))
    hook.guard_run_merge(module)
    hook.guard_run_merge(module)  # idempotent: one wrapper
    data_free = types.SimpleNamespace(merge_method="heterofusion", base_model=types.SimpleNamespace(lora=None))
    module.run_merge(data_free, "out-1")
    module.run_merge(types.SimpleNamespace(merge_method="ties", base_model=None), "out-2")
    assert calls == ["out-1", "out-2"]
    trained = types.SimpleNamespace(merge_method="heterofusion", base_model=types.SimpleNamespace(lora="x"))
    with pytest.raises(ValueError, match="hf-heterofusion merge CONFIG.yml out-3"):
        module.run_merge(trained, "out-3")


@pytest.mark.integration
def test_fuse_eval_holds_rows_out_and_the_card_shows_the_measured_scores(make_config, tmp_path, capsys):
    cfg = make_config(max_steps=1)
    path = _fuse_yaml(tmp_path, cfg)
    out = tmp_path / "out"
    assert main(["fuse", str(path), str(out), "--eval-fraction", "0.25"]) == 0
    printed = capsys.readouterr().out
    assert "evaluation on 2 held-out rows: fused F1" in printed
    report = json.loads((out / "fusion_report.json").read_text())
    evaluation = report["evaluation"]
    assert evaluation["rows"] == 2 and evaluation["data"] == "2 of 8 replay rows held out of training (25%, seed 0)"
    assert set(evaluation["results"]) == {"fused", "anchor"}
    assert report["training"]["replay_examples"] == 6  # the held-out rows were not trained on
    assert report["config"]["replay"] == cfg.replay  # the user's file, not the temporary training split
    card = (out / "README.md").read_text()
    assert "| Subset | Rows | Fused F1 |" in card and "Measured on 2 of 8 replay rows" in card
    assert "keeps the anchor adapter's task and gains" not in card
    assert not list(tmp_path.glob(".out.heterofusion-eval*"))  # the split is cleaned up


@pytest.mark.integration
def test_unevaluated_card_says_so(make_config, tmp_path):
    from hf_heterofusion.pipeline import fuse

    fuse(make_config(max_steps=0), tmp_path / "out", show_progress=False)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "This adapter was not evaluated" in card


@pytest.mark.integration
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_follow_the_umask(make_config, tmp_path, umask):
    from hf_heterofusion.pipeline import fuse

    old = os.umask(umask)
    try:
        fuse(make_config(max_steps=0), tmp_path / "out", show_progress=False)
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    for name in ("adapter_model.safetensors", "adapter_config.json", "fusion_report.json", "README.md"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name


@pytest.mark.integration
def test_adapter_config_names_the_base_as_the_config_gave_it(make_config, tmp_path):
    from hf_heterofusion.pipeline import fuse

    cfg = make_config(max_steps=0)
    fuse(cfg, tmp_path / "out", show_progress=False)
    written = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert written["base_model_name_or_path"] == cfg.target_model


def test_loss_plot_draws_ce_and_rdm_on_their_own_axes(tmp_path):
    from hf_heterofusion.outputs.writer import write_loss_plot

    losses = [{"step": i, "ce": 3.0 - 0.1 * i, "rdm": 40.0 - i, "loss": 3.2 - 0.1 * i} for i in range(1, 6)]
    write_loss_plot(losses, tmp_path / "loss.png")
    import matplotlib.pyplot as plt

    assert Image.open(tmp_path / "loss.png").size == (600, 440)  # two stacked panels
    plt.close("all")


@pytest.mark.integration
def test_merge_eval_on_a_mergekit_yaml_and_its_refusal_for_data_free(make_config, fixture_zoo, tmp_path, capsys):
    cfg = make_config(max_steps=1)
    config = _mergekit_yaml(tmp_path, cfg, max_steps=1, num_projections=16, gradient_accumulation_steps=2)
    assert main(["merge", str(config), str(tmp_path / "out"), "--eval-fraction", "0.25"]) == 0
    assert "evaluation on 2 held-out rows" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "fusion_report.json").read_text())
    assert report["evaluation"]["rows"] == 2 and report["training"]["replay_examples"] == 6
    data_free = tmp_path / "df.yml"
    data_free.write_text(yaml.safe_dump({**MERGEKIT, "base_model": str(fixture_zoo.model("llama")),
                                         "models": [{"model": str(fixture_zoo.adapter("llama"))}]}))
    assert main(["merge", str(data_free), str(tmp_path / "df"), "--eval"]) == 2
    assert "--eval scores a trained heterofusion fusion" in capsys.readouterr().err
