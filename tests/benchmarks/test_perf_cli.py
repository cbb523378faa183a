# SPDX-License-Identifier: Apache-2.0
"""The `--perf` table and the teacher slot (speed itself is measured by the benchmark, never asserted here)."""

import importlib.util

from benchmarks.__main__ import build_parser
from benchmarks.perf_cli import perf_lines
from benchmarks.perf_target import teacher_throughput


def test_perf_flag_parses():
    assert build_parser().parse_args(["--perf"]).perf is True


def test_teacher_slot_says_when_the_stage_is_missing():
    out = teacher_throughput(bench=None, sources=["s"])
    if importlib.util.find_spec("hf_heterofusion.teacher.plan") is None:
        assert out == {"note": "teacher throughput: not measured (teacher stage not available)"}
    else:  # the lead's teacher module exists: whatever it returns, or a FAILED note, is reported
        assert isinstance(out, dict)


def test_table_shows_ratios_export_and_memory():
    perf = {"grid": "reduced", "note": "n",
            "fit_vs_sft": [{"label": "LoRA SFT", "seconds_per_example": 0.5, "ratio_to_sft": 1.0, "peak_rss_mb": 1000,
                            "rss_to_sft": 1.0}],
            "export": [{"label": "HeteroFusion merged export", "seconds": 2.2, "peak_rss_mb": 1, "total_seconds": 3,
                        "side_files_seconds": 0.5, "process_seconds": 11.0},
                       {"label": "mergekit `linear`", "seconds": 2.0, "peak_rss_mb": 1, "process_seconds": 10.0}],
            "teacher": {"note": "teacher throughput: not measured (teacher stage not available)"},
            "target_memory": {"note": "one-off", "bf16_to_fp32": 0.45, "estimate_8b": {"x": "8B: ~1 GiB"},
                              "rows": [{"dtype": "float32", "peak_rss_mb": 6000, "estimate_mb": 5000}]}}
    text = "\n".join(perf_lines(perf))
    assert "merged export / mergekit linear: 1.10x" in text and "= 1.10x" in text
    assert "bf16 / fp32 peak RSS: 0.45x" in text and "not measured" in text and "8B: ~1 GiB" in text
