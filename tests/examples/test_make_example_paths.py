# SPDX-License-Identifier: Apache-2.0
"""`make-example` suggests exactly the commands the README walks through."""

from pathlib import Path

from hf_heterofusion.cli.main import main


README = Path(__file__).resolve().parents[2] / "README.md"


def test_make_example_prints_the_readme_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["make-example", "ex"]) == 0
    suggested = [line.strip() for line in capsys.readouterr().out.splitlines()[1:]]
    readme = {line.split("#")[0].strip() for line in README.read_text(encoding="utf-8").splitlines()}
    assert suggested and all(command in readme for command in suggested), suggested
