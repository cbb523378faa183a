# SPDX-License-Identifier: Apache-2.0
"""The HeteroFusion benchmark: real models from PyPI, synthetic IE tasks, baselines, seeds, and performance.

Run it with `python -m hf_heterofusion.bench [--quick] [--grid full|reduced] [--out DIR]`; it writes
`results.md`, `results.json` and `results.png` into the output folder (default `bench_results/`).

Modules, in pipeline order: `grid` (sizes), `models` (install and convert the GGUF models), `zoo` (splits and cached
LoRA experts), `baselines` (naive / Task Arithmetic / TIES / DARE transfer, placebo sources), `run` (methods x
settings x seeds), `perf` (fit cost, export, memory, scaling), `report` (markdown, JSON, chart), `suite` (all).
"""

from __future__ import annotations
