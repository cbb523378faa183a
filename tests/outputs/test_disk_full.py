# SPDX-License-Identifier: Apache-2.0
"""A full disk while the output is written: one `error:` line naming the folder and the space, exit status 2, no
traceback, and nothing left behind (the staging folder is deleted).

The CLI tests use a patched writer that fails like a full disk (`OSError(ENOSPC)`); where this process may mount
a tmpfs (root in a container), a real small filesystem fills up under our adapter writer, safetensors' Rust writer
and mergekit's checkpoint writer.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from hf_heterofusion.cli import main as cli
from hf_heterofusion.files import is_disk_full


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)  # an unexpected exception would propagate here, with its traceback
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and err.rstrip("\n").split("\n")[-1] == lines[0], err
    return lines[0]


@pytest.fixture()
def adapter_config(make_config, tmp_path) -> Path:
    """A fuse config that exports without training (`max_steps: 0`): the test is about the writing."""
    data = make_config(sources=("qwen2",), max_steps=0).model_dump(mode="json", exclude_defaults=True)
    data.pop("replay", None)
    cfg = tmp_path / "inputs" / "cfg.yml"
    cfg.parent.mkdir()
    cfg.write_text(yaml.safe_dump(data))
    return cfg


@pytest.mark.integration
def test_full_disk_while_writing_the_adapter_is_one_line(adapter_config, tmp_path, monkeypatch, capsys):
    real = pathlib.Path.write_bytes

    def full_disk(self, data):  # the staged output fills the disk; writes elsewhere are untouched
        if ".staging-" in str(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk)
    out = tmp_path / "out"
    before = _snapshot(tmp_path)
    code, err = _run(["fuse", str(adapter_config), str(out)], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert line.startswith(f"error: no space left on device while writing {out} (needs more than ")
    assert line.endswith(" MB it had written); free space or choose another output folder")
    assert _snapshot(tmp_path) == before  # no output, no staging folder


@pytest.mark.integration
def test_a_quota_error_is_a_full_disk_too(adapter_config, tmp_path, monkeypatch, capsys):
    def over_quota(self, data):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(self))

    monkeypatch.setattr(pathlib.Path, "write_bytes", over_quota)
    code, err = _run(["fuse", str(adapter_config), str(tmp_path / "out")], capsys)
    assert code == 2 and "no space left on device" in _one_error_line(err)
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())


def test_only_space_errors_count_as_a_full_disk():
    assert is_disk_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    wrapped = RuntimeError("writing shard 2 failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert is_disk_full(wrapped)  # a writer that wraps the OSError
    assert not is_disk_full(OSError(errno.EACCES, os.strerror(errno.EACCES)))
    assert not is_disk_full(ValueError("something else"))


# ------------------------------------------------------------------------------------- a real, small filesystem


@pytest.fixture()
def small_disk(tmp_path):
    """A 48 KiB tmpfs: room for the config copies, not for the tiny adapter (80 KB) or checkpoint (1 MB)."""
    mount = tmp_path / "small"
    mount.mkdir()
    name = f"hf-heterofusion-test-{uuid.uuid4().hex[:8]}"
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and `mount`")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", name, str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.integration
def test_safetensors_error_on_a_full_disk_is_recognised(small_disk):
    with pytest.raises(Exception) as rust_error:  # safetensors' Rust writer: SafetensorError("... os error 28")
        save_file({"w": torch.zeros(65536)}, small_disk / "w.safetensors")
    assert not isinstance(rust_error.value, OSError) and is_disk_full(rust_error.value)


@pytest.mark.integration
def test_real_full_disk_under_the_adapter_writer(adapter_config, small_disk, capsys):
    out = small_disk / "out"
    code, err = _run(["fuse", str(adapter_config), str(out)], capsys)
    assert code == 2
    assert _one_error_line(err).startswith(f"error: no space left on device while writing {out} (needs ")
    assert list(small_disk.iterdir()) == []  # everything it had written is gone


@pytest.mark.integration
def test_real_full_disk_under_mergekits_checkpoint_writer(fixture_zoo, replay_file, small_disk, tmp_path, capsys):
    from hf_heterofusion.merge_methods import METHOD_NAME

    config = {
        "merge_method": METHOD_NAME,
        "base_model": f"{fixture_zoo.model('llama')}+{fixture_zoo.adapter('llama')}",
        "models": [{"model": f"{fixture_zoo.model('qwen2')}+{fixture_zoo.adapter('qwen2', seed=10)}"}],
        "parameters": {"replay": str(replay_file), "max_steps": 0, "output": "merged", "embed_dim": 32,
                       "num_heads": 4, "max_position_embeddings": 32, "num_projections": 16},
    }
    cfg = tmp_path / "merge.yml"
    cfg.write_text(yaml.safe_dump(config))
    out = small_disk / "out"
    code, err = _run(["merge", str(cfg), str(out), "--quiet"], capsys)
    assert code == 2, err
    line = _one_error_line(err)
    assert line.startswith(f"error: no space left on device while writing {out} (needs ~")
    assert list(small_disk.iterdir()) == []
