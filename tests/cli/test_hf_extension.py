# SPDX-License-Identifier: Apache-2.0
"""`hf heterofusion ...` through the real `hf` CLI of huggingface_hub 2.x, with HOME and HF_HOME in tmp folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_heterofusion import __version__
from hf_heterofusion.testing.hub_fixtures import hf_cli_path


ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return dict(os.environ, HOME=str(home), HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_UPDATE_CHECK="1",
                HF_HUB_OFFLINE="1", NO_COLOR="1")


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def _ours(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "hf_heterofusion.cli.main", *args], env)


@pytest.mark.integration
def test_hf_extension_install_makes_hf_heterofusion_work_and_uninstall_removes_it(tmp_path):
    env = _env(tmp_path)
    hf = hf_cli_path()
    assert "heterofusion" not in _run([hf, "extensions", "list"], env).stdout
    done = _ours(env, "hf-extension", "install")
    assert done.returncode == 0, done.stderr
    manifest = Path(env["HOME"]) / ".local/share/hf/extensions/hf-heterofusion/manifest.json"
    assert manifest.is_file() and str(manifest) in done.stdout
    listed = _run([hf, "extensions", "list"], env)
    assert listed.returncode == 0 and "hf heterofusion" in listed.stdout, listed.stdout + listed.stderr
    version = _run([hf, "heterofusion", "--version"], env)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"hf-heterofusion {__version__}"
    helptext = _run([hf, "heterofusion", "--help"], env)
    assert "make-example" in helptext.stdout and "pull" in helptext.stdout
    assert "registered: `hf heterofusion`" in _ours(env, "hf-extension", "status").stdout
    assert _ours(env, "hf-extension", "uninstall").returncode == 0
    assert not manifest.exists()
    assert "heterofusion" not in _run([hf, "extensions", "list"], env).stdout
    assert "was not registered" in _ours(env, "hf-extension", "uninstall").stdout


def test_packaging_fits_hf_extensions_install():
    """`hf extensions install OWNER/hf-heterofusion` pip-installs the repo and runs its `hf-heterofusion` script.

    A file named `hf-heterofusion` at the repository root would instead be installed as a shell-script extension.
    """
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"]["hf-heterofusion"] == "hf_heterofusion.cli.main:main"
    assert not (ROOT / "hf-heterofusion").exists()
    assert project["description"]  # `hf extensions list` shows it (read from pyproject.toml)
