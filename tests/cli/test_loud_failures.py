# SPDX-License-Identifier: Apache-2.0
"""Failures a user must see: a mistyped merge method, an interrupted fit, a teacher that keeps almost nothing."""

import pytest

import hf_heterofusion.pipeline as pipeline
from hf_heterofusion.cli.main import main


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("ex") / "ex"
    assert main(["make-example", str(root)]) == 0
    return root


@pytest.mark.parametrize("command", ["check", "merge", "fuse"])
def test_a_mistyped_merge_method_is_one_line_with_a_did_you_mean(example, tmp_path, capsys, command):
    typo = tmp_path / "typo.yml"
    typo.write_text((example / "heterofusion_adapter.yml").read_text().replace("merge_method: heterofusion",
                                                                               "merge_method: heterofuson"))
    args = [command, str(typo)] + ([] if command == "check" else [str(tmp_path / "out")])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == f"error: {typo}: unknown `merge_method: heterofuson`; did you mean `heterofusion`?\n"
    assert not (tmp_path / "out").exists()


def test_ctrl_c_says_whether_a_checkpoint_was_kept_and_that_rerunning_resumes(example, tmp_path, capsys,
                                                                              monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "fuse", interrupted)
    out = tmp_path / "out"
    assert main(["fuse", str(example / "fuse_adapter.yml"), str(out)]) == 130
    assert "out was not written (no training checkpoint yet: rerunning starts over)" in capsys.readouterr().err
    work = tmp_path / ".out.heterofusion-work"
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(b"")
    assert main(["fuse", str(example / "fuse_adapter.yml"), str(out)]) == 130
    err = capsys.readouterr().err
    assert "the last training checkpoint was kept" in err and "rerunning the same command resumes from it" in err


def _huge(example, tmp_path):
    huge = example / "huge.yml"  # next to the example's models: its paths are relative
    huge.write_text((example / "heterofusion_adapter.yml").read_text().replace("embed_dim: 32", "embed_dim: 65536"))
    return huge


@pytest.mark.filterwarnings("default::hf_heterofusion.outputs.sizing.HypernetSizeWarning")
def test_check_and_merge_stop_before_allocating_what_cannot_fit(example, tmp_path, capsys):
    huge = _huge(example, tmp_path)
    assert main(["check", str(huge)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: the fit needs about 2,358.4 GiB") and "GiB available; set `embed_dim:" in err
    assert err.endswith("or set `memory_check: false` (CLI: --force) to run anyway")
    assert main(["merge", str(huge), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    assert main(["check", "--force", str(huge)]) == 0  # the estimate is still printed
    assert "fit: ~2358.4 GiB peak" in capsys.readouterr().out


def test_fuse_checks_memory_against_what_the_machine_has(example, tmp_path, capsys, monkeypatch):
    import hf_heterofusion.outputs.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 2**20)  # a machine with 1 MiB free
    assert main(["fuse", str(example / "fuse_adapter.yml"), str(tmp_path / "out")]) == 2
    assert "but cpu has 0.0 GiB available" in capsys.readouterr().err and not (tmp_path / "out").exists()
