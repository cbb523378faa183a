# SPDX-License-Identifier: Apache-2.0
"""Faults, through the real `hf-heterofusion fuse` command, killed with SIGKILL in subprocesses:

* SIGKILL in the middle of the fit, then the same command again: it resumes from the last checkpoint and writes
  the same adapter, byte for byte, as an uninterrupted run with the same seed;
* SIGKILL during the export leaves no output directory (files are staged and moved into place when complete), and
  the same command then succeeds;
* a Hub token planted in `HF_TOKEN` appears in no output file and nowhere on stdout or stderr.

Every run gets `HF_TOKEN` set to `PLANTED_TOKEN`, so the leak check covers all of them. The scenarios share one
module fixture and run side by side: each CLI subprocess spends most of its ~10 s importing torch and transformers.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
import yaml

from hf_heterofusion.cli.main import main


CLI = str(Path(sys.executable).parent / "hf-heterofusion")
PLANTED_TOKEN = "hf_PlantedFakeToken0000000000000000000"
STEPS = 8  # 8 replay examples, accumulation 2, 2 epochs: 8 optimiser steps, a checkpoint after each but the last

# Runs the real CLI with one test hook: the loss plot, written into the staging folder after the adapter and the
# report, first drops a marker file and hangs, so the test can SIGKILL the process in the middle of the export.
HANG_IN_EXPORT = """
import sys, time
from pathlib import Path
import hf_heterofusion.outputs.writer as writer
from hf_heterofusion.cli.main import main

def hang(losses, path, **kwargs):
    Path(sys.argv[1]).write_text(str(path.parent))
    time.sleep(600)

writer.write_loss_plot = hang
sys.exit(main(sys.argv[2:]))
"""


def _env() -> dict[str, str]:
    # One thread per run: two runs at a time share two cores, and every run (the in-process reference too) then
    # reduces in the same order, which a bit-for-bit comparison needs.
    return dict(os.environ, HF_TOKEN=PLANTED_TOKEN, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
                TOKENIZERS_PARALLELISM="false")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as sink:
        return subprocess.Popen(args, env=_env(), stdout=sink, stderr=subprocess.STDOUT)


def _kill_when(conditions: list[tuple[Path, subprocess.Popen]], timeout: float = 240) -> None:
    """SIGKILL each process as soon as its file appears (all polled together: the runs go on in parallel)."""
    deadline, pending = time.monotonic() + timeout, list(conditions)
    while pending:
        for path, proc in list(pending):
            if path.exists():
                _kill(proc)
                pending.remove((path, proc))
            else:
                assert proc.poll() is None, f"the run ended (status {proc.returncode}) before {path.name} appeared"
        assert time.monotonic() < deadline, f"{[str(p) for p, _ in pending]} did not appear within {timeout} s"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _finish(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=300) == 0, log.read_text(errors="replace")


def _fuse_in_this_process(cfg: Path, out: Path, log: Path) -> None:
    """The uninterrupted reference: the same CLI entry point, run here, where the libraries are imported already
    (each subprocess spends most of its time importing). One thread, as in the subprocesses."""
    threads, buffer = torch.get_num_threads(), io.StringIO()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch, redirect_stdout(buffer), redirect_stderr(buffer):
            patch.setenv("HF_TOKEN", PLANTED_TOKEN)
            code = main(["fuse", str(cfg), str(out)])
    finally:
        torch.set_num_threads(threads)
        log.write_text(buffer.getvalue())
    assert code == 0, buffer.getvalue()


def _config(folder: Path, fixture_zoo, replay_file, **overrides) -> Path:
    from conftest import SMALL

    data = dict(SMALL, target_model=str(fixture_zoo.model("llama")), target_adapter=str(fixture_zoo.adapter("llama")),
                sources=[str(fixture_zoo.adapter("qwen2", seed=10))], replay=str(replay_file), seed=7, epochs=2,
                checkpoint_every=1, **overrides)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cfg.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _report(out: Path) -> dict:
    return json.loads((out / "fusion_report.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fixture_zoo, replay_file) -> dict:
    """All fault scenarios, run side by side to keep the wall time down (each CLI run spends most of it importing).

    Phase 1: a run killed right after its first checkpoint appears (mid-fit) and a run killed while its export is
    half-written. Phase 2: the two killed commands run again, unchanged, and an uninterrupted reference run.
    """
    root = tmp_path_factory.mktemp("faults")
    cfg = _config(root, fixture_zoo, replay_file)
    ref, fit, export = root / "ref" / "out", root / "fit" / "out", root / "export" / "out"
    checkpoint = fit.parent / ".out.heterofusion-work" / "checkpoint.pt"
    marker = root / "export" / "exporting"
    log = {name: root / f"{name}.log" for name in ("ref", "fit", "fit-rerun", "export", "export-rerun")}

    killed_in_fit = _start([CLI, "fuse", str(cfg), str(fit)], log["fit"])
    killed_in_export = _start([sys.executable, "-c", HANG_IN_EXPORT, str(marker), "fuse", str(cfg), str(export)],
                              log["export"])
    _kill_when([(checkpoint, killed_in_fit), (marker, killed_in_export)])
    stage = Path(marker.read_text())
    after_kill = {
        "fit_step": torch.load(checkpoint, weights_only=True)["step"], "fit_out": fit.exists(),
        "export_out": export.exists(), "stage_files": sorted(p.name for p in stage.iterdir()),
        "stage_parent": stage.parent,
    }
    reruns = [_start([CLI, "fuse", str(cfg), str(fit)], log["fit-rerun"]),
              _start([CLI, "fuse", str(cfg), str(export)], log["export-rerun"])]
    _fuse_in_this_process(cfg, ref, log["ref"])  # meanwhile: the uninterrupted reference
    for proc, name in zip(reruns, ("fit-rerun", "export-rerun")):
        _finish(proc, log[name])
    return {"root": root, "ref": ref, "fit": fit, "export": export, "after_kill": after_kill}


@pytest.mark.integration
def test_sigkill_mid_fit_then_rerun_resumes_and_matches_uninterrupted_run(runs):
    killed_at = runs["after_kill"]["fit_step"]
    assert 0 < killed_at < STEPS  # the kill landed in the middle of the fit
    assert not runs["after_kill"]["fit_out"]
    training, reference = _report(runs["fit"])["training"], _report(runs["ref"])["training"]
    assert training["resumed_from_step"] == killed_at and reference["resumed_from_step"] is None
    assert training["optimizer_steps"] == reference["optimizer_steps"] == STEPS
    assert training["losses"] == reference["losses"]
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (runs["fit"] / name).read_bytes() == (runs["ref"] / name).read_bytes(), name
    assert sorted(p.name for p in runs["fit"].parent.iterdir()) == ["out"]  # work folder removed once output is in


@pytest.mark.integration
def test_sigkill_during_export_leaves_no_output_and_rerun_succeeds(runs):
    after_kill, out = runs["after_kill"], runs["export"]
    assert after_kill["stage_parent"] == out.parent  # staged next to the output, on the same file system
    assert "adapter_model.safetensors" in after_kill["stage_files"]  # killed with the export half-written
    assert "README.md" not in after_kill["stage_files"]
    assert not after_kill["export_out"]
    assert {"adapter_model.safetensors", "adapter_config.json", "fusion_report.json", "loss_curve.png",
            "README.md"} <= {p.name for p in out.iterdir()}
    assert _report(out)["training"]["resumed_from_step"] == STEPS - 1  # the fit's last checkpoint survived
    assert (out / "adapter_model.safetensors").read_bytes() == (runs["ref"] / "adapter_model.safetensors").read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["exporting", "out"]  # stale staging folder removed


@pytest.mark.integration
def test_planted_hub_token_never_appears_in_outputs_or_logs(runs):
    files = [p for p in runs["root"].rglob("*") if p.is_file()]
    assert {"README.md", "fusion_report.json", "heterofusion_config.yml", "ref.log"} <= {p.name for p in files}
    leaks = [str(p) for p in files if PLANTED_TOKEN.encode() in p.read_bytes()]
    assert leaks == []  # stdout + stderr of every run, adapter, report, config copy, card, plots


def test_adapter_bytes_do_not_depend_on_the_metadata_order_of_the_process(tmp_path):
    """safetensors keeps metadata in a Rust hash map, whose key order differs between processes. The export sorts
    it, so a resumed run can be compared byte for byte with an uninterrupted one."""
    from safetensors.torch import load_file, save

    from hf_heterofusion.method.export import _sorted_metadata

    weight = torch.arange(6.0).reshape(2, 3)
    raw = save({"w": weight}, metadata={"format": "pt", "hf_heterofusion_version": "0"})
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    files = []
    for keys in (("format", "hf_heterofusion_version"), ("hf_heterofusion_version", "format")):
        header["__metadata__"] = {k: header["__metadata__"][k] for k in keys}
        files.append(raw[:8] + json.dumps(header, separators=(",", ":")).encode().ljust(size) + raw[8 + size :])
    assert files[0] != files[1] and _sorted_metadata(files[0]) == _sorted_metadata(files[1])
    (tmp_path / "a.safetensors").write_bytes(_sorted_metadata(files[1]))
    assert torch.equal(load_file(tmp_path / "a.safetensors")["w"], weight)
