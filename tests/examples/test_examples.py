# SPDX-License-Identifier: Apache-2.0
"""Every shipped example config runs as shipped, with exactly the commands the README gives."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from hf_heterofusion.cli.main import main
from hf_heterofusion.examples.make_example import EXAMPLES, make_example_inputs


ROOT = Path(__file__).resolve().parents[2]


def readme_example_commands() -> list[str]:
    """The bash block of the README that starts with `hf-heterofusion make-example` (comments stripped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
        lines = [line for line in lines if line]
        if lines and lines[0].startswith("hf-heterofusion make-example"):
            return lines
    raise AssertionError("the README has no `hf-heterofusion make-example` block")


@pytest.mark.integration
def test_readme_runs_every_shipped_example(tmp_path, monkeypatch, capsys):
    commands = readme_example_commands()
    shipped = sorted(p.name for p in (ROOT / "merge_methods").glob("*.yml"))
    assert sorted(EXAMPLES) == shipped
    for name in shipped:  # each shipped example is run by one README line
        assert any(f"merge ex/{name}" in line for line in commands), name
    monkeypatch.chdir(tmp_path)
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "hf-heterofusion"
        assert main(argv[1:]) == 0, line
    capsys.readouterr()
    for out in ("fused", "fuse-adapter"):
        assert (tmp_path / "out" / out / "adapter_model.safetensors").is_file()
        config = json.loads((tmp_path / "out" / out / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(tmp_path / "ex" / "models" / "llama")
    assert (tmp_path / "out" / "merged" / "config.json").is_file()
    assert (tmp_path / "out" / "data-free" / "model.safetensors").is_file()
    report = json.loads((tmp_path / "out" / "fuse-adapter" / "fusion_report.json").read_text())
    assert report["evaluation"]["rows"] == 2  # `--eval`: 10 % of the 24 replay rows


def test_make_example_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "ex").mkdir()
    (tmp_path / "ex" / "keep.txt").write_text("mine")
    assert main(["make-example", str(tmp_path / "ex")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    with pytest.raises(Exception, match="exists and is not empty"):
        make_example_inputs(tmp_path / "ex")
