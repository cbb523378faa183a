# SPDX-License-Identifier: Apache-2.0
"""`hf-heterofusion check cfg.yml | head -1`: a reader that goes away ends the command quietly."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_heterofusion.cli.main import main


CLI = str(Path(sys.executable).parent / "hf-heterofusion")


@pytest.mark.integration
def test_check_into_a_closed_pipe_ends_quietly(tmp_path):
    assert main(["make-example", str(tmp_path / "ex")]) == 0
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write is a broken pipe
    proc = subprocess.run([CLI, "check", str(tmp_path / "ex" / "heterofusion_adapter.yml")], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert proc.returncode == 141 and proc.stderr == ""  # 128 + SIGPIPE, like any Unix filter; no traceback
