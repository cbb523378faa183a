# SPDX-License-Identifier: Apache-2.0
"""The `--perf` table, the teacher slot and the labelling measurement (speed itself is measured by the benchmark,
never asserted here), and the one-way imports of the performance modules."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmarks.__main__ import build_parser
from benchmarks.measure import labelling_throughput
from benchmarks.perf_cli import perf_lines
from benchmarks.perf_target import teacher_throughput


def test_perf_flag_parses():
    assert build_parser().parse_args(["--perf"]).perf is True


def test_teacher_slot_reports_a_failure_as_a_note(tmp_path):
    bench = SimpleNamespace(replay_path=tmp_path / "missing.jsonl", source_dir=tmp_path, grid=SimpleNamespace(
        max_new_tokens=4))
    out = teacher_throughput(bench, sources=[str(tmp_path / "adapter")])
    assert out.keys() == {"note"} and out["note"].startswith("teacher throughput: FAILED (FileNotFoundError")


def test_labelling_throughput_times_every_pass_on_the_same_prompts(fixture_zoo):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base, adapter = fixture_zoo.model("llama"), fixture_zoo.adapter("llama", r=4, seed=0)
        prompts = ["Names in: Alice met Bob.\n", "Sentiment of: fine.\n", "Places in: Paris, Rome and Oslo.\n",
                   "Hi\n", "Locations in: a long sentence that has more tokens than the others do.\n"]
        out = labelling_throughput(base, adapter, prompts, batch_size=2, max_new_tokens=3)
    finally:
        torch.set_num_threads(threads)
    assert (out["prompts"], out["batch_size"], out["max_new_tokens"]) == (5, 2, 3)
    for name in ("unbatched", "static", "retiring", "batched"):
        assert out[f"{name}_rows_per_s"] > 0, name
    for name in ("static", "retiring"):
        assert out[f"{name}_speedup"] == pytest.approx(out[f"{name}_rows_per_s"] / out["unbatched_rows_per_s"])
        assert 0 <= out[f"{name}_same_tokens"] <= 5
    # The headline pair is the teacher's own path against one prompt at a time.
    assert out["batched_rows_per_s"] == out["retiring_rows_per_s"]
    assert out["speedup"] == pytest.approx(out["batched_rows_per_s"] / out["unbatched_rows_per_s"])
    assert 0 < out["mean_new_tokens"] <= 3


def test_perf_target_does_not_import_perf():
    # perf imports perf_target (and both import measure); the reverse would be an import cycle.
    code = ("import sys, benchmarks.perf_target; "
            "assert 'benchmarks.perf' not in sys.modules, sorted(m for m in sys.modules if m.startswith('bench'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_table_shows_ratios_export_teacher_and_memory():
    perf = {"grid": "reduced", "note": "n",
            "fit_vs_sft": [{"label": "LoRA SFT", "seconds_per_example": 0.5, "ratio_to_sft": 1.0, "peak_rss_mb": 1000,
                            "rss_to_sft": 1.0}],
            "export": [{"label": "HeteroFusion merged export", "seconds": 2.2, "peak_rss_mb": 1, "total_seconds": 3,
                        "side_files_seconds": 0.5, "process_seconds": 11.0},
                       {"label": "mergekit `linear`", "seconds": 2.0, "peak_rss_mb": 1, "process_seconds": 10.0}],
            "teacher": {"prompts": 32, "unbatched_rows_per_s": 1.5, "batched_rows_per_s": 6.0, "speedup": 4.0},
            "target_memory": {"note": "one-off", "bf16_to_fp32": 0.45, "estimate_8b": {"x": "8B: ~1 GiB"},
                              "rows": [{"dtype": "float32", "peak_rss_mb": 6000, "estimate_mb": 5000}]}}
    text = "\n".join(perf_lines(perf))
    assert "merged export / mergekit linear: 1.10x" in text and "= 1.10x" in text
    assert "bf16 / fp32 peak RSS: 0.45x" in text and "8B: ~1 GiB" in text
    assert "teacher rows/s: prompts 32, unbatched_rows_per_s 1.5, batched_rows_per_s 6.0, speedup 4.0" in text
    perf["teacher"] = {"note": "teacher throughput: FAILED (OSError: x)"}
    assert "teacher throughput: FAILED (OSError: x)" in "\n".join(perf_lines(perf))


@pytest.mark.slow  # transformers' continuous-batching manager takes ~1 min to start and stop on CPU
def test_transformers_continuous_batching_gives_the_same_greedy_tokens(fixture_zoo):
    base, adapter = fixture_zoo.model("llama"), fixture_zoo.adapter("llama", r=4, seed=0)
    prompts = ["Names in: Alice met Bob.\n", "Hi\n", "Locations in: a long sentence with more tokens than others.\n"]
    out = labelling_throughput(base, adapter, prompts, batch_size=2, max_new_tokens=3, continuous=True)
    assert out["continuous_rows_per_s"] > 0
    assert out["continuous_same_tokens"] == 3
