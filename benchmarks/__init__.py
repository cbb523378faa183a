# SPDX-License-Identifier: Apache-2.0
"""The HeteroFusion benchmark (v2): real models from PyPI, synthetic IE tasks, four data regimes, tuned baselines,
controls and teacher variants, seeds, paired statistics, and performance.

Run it with `python -m benchmarks [--quick] [--grid full|reduced] [--regimes ...] [--out DIR]`; it
writes `results.md`, `results.json` and `results.png` into the output folder (default `bench_results/`).

The package lives at the repository root, beside the library it measures, and is not installed with it; run it
from a checkout. Modules, in pipeline order: `grid` (sizes, regimes, sweeps), `models` (install and convert the
GGUF models), `zoo` (splits and cached LoRA experts), `regimes` (each regime's labelled rows and teacher prompts),
`features` (which pipeline switches the library offers), `baselines` (Task Arithmetic / TIES / DARE transfer,
placebo sources), `run` (one run of a method), `tuning` (lr sweeps, seeds, LOSO refits, the run cache), `stats`
(efficiency, retention, paired t-intervals, rank agreement), `perf` with `perf_target` and `measure` (fit cost,
export, memory, scaling, labelling throughput; `perf_cli` prints it alone), `report` (markdown, JSON, chart),
`suite` (all of it, resumable). Stand-alone tools beside them: `teacher_rows` (how close a teacher's rows are to
the task), `labelling` (labelling throughput on a real model), `synthesis` (how on-task synthesized prompts are)
and `profile_step` (the top ops of one optimiser step).
"""

from __future__ import annotations

import os
from pathlib import Path


REPOSITORY = Path(__file__).resolve().parents[1]  # the checkout this package sits in (it is not installed)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a `python -m benchmarks...` child process: this one's, `extra`, and the repository on
    `PYTHONPATH` first, so the child imports this same `benchmarks` package whatever folder it starts in."""
    paths = [str(REPOSITORY), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, **extra, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)))
