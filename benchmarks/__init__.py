# SPDX-License-Identifier: Apache-2.0
"""The HeteroFusion benchmark (v2): real models from PyPI, synthetic IE tasks, four data regimes, tuned baselines,
controls and teacher variants, seeds, paired statistics, and performance.

Run it with `python -m benchmarks [--quick] [--grid full|reduced] [--regimes ...] [--out DIR]`; it
writes `results.md`, `results.json` and `results.png` into the output folder (default `bench_results/`).

Modules, in pipeline order: `grid` (sizes, regimes, sweeps), `models` (install and convert the GGUF models), `zoo`
(splits and cached LoRA experts), `regimes` (each regime's labelled rows and teacher prompts), `features` (which
pipeline switches this checkout has), `baselines` (Task Arithmetic / TIES / DARE transfer, placebo sources), `run`
(one run of a method), `tuning` (lr sweeps, seeds, LOSO refits, the run cache), `stats` (efficiency, retention,
paired t-intervals, rank agreement), `perf` (fit cost, export, memory, scaling), `report` (markdown, JSON, chart),
`suite` (all of it, resumable). Beside them, `teacher_rows` checks how close a teacher's rows are to the task.
"""

from __future__ import annotations
