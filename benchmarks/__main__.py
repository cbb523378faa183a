# SPDX-License-Identifier: Apache-2.0
"""`python -m benchmarks [--quick] [--grid full|reduced] [--regimes ...] [--out DIR]`: run the benchmark.

Every run is cached by content hash (`tuning.py`), so an interrupted invocation resumes where it stopped; with
`--background` the invocation detaches and logs to `<out>/bench.log`. `--report-only [--snapshot docs]`
re-renders (and copies into docs/) the report of what is complete, without running anything; `--cached-only`
builds that report from the run cache itself (e.g. after regimes ran as separate, parallel invocations).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from . import child_env
from .grid import ALL_REGIMES, GRIDS, REGIMES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny random fixtures, ~1 min: checks the pipeline only")
    p.add_argument("--grid", choices=sorted(GRIDS), default=None,
                   help="`full` (the paper's sizes; GPU or long night), `reduced` (fits a 2-core CPU in hours) or "
                        "`quick`; default `full` (`quick` with --quick)")
    p.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder (default bench_results/)")
    p.add_argument("--cache", type=Path, default=None,
                   help="models and experts cache (default ~/.cache/hf_heterofusion/bench, or <out>/cache with "
                        "--quick; also $HF_HETEROFUSION_BENCH_CACHE)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a machine shared with other "
                        "jobs, where threads spin-wait on each other)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the grid's, 3)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps of every trained method (default: the grid's; reduced: 72, about one "
                        "epoch of the few-label rows)")
    p.add_argument("--skip-perf", action="store_true", help="skip the performance section")
    p.add_argument("--perf", action="store_true", help="only the performance section, printed (grid `reduced`)")
    p.add_argument("--only", nargs="+", default=None, metavar="METHOD", help="run only these methods")
    p.add_argument("--regimes", nargs="+", default=None, choices=ALL_REGIMES, metavar="REGIME",
                   help=f"run only these regimes ({', '.join(ALL_REGIMES)}; default: {', '.join(REGIMES)})")
    p.add_argument("--no-loso", action="store_true", help="skip the leave-one-source-out refits")
    p.add_argument("--cached-only", action="store_true",
                   help="compute no run: build the report from the run cache (e.g. after invocations run in "
                        "parallel); missing cells are reported incomplete")
    p.add_argument("--background", action="store_true",
                   help="detach (nohup-like) and log to <out>/bench.log; rerun the same command to resume")
    p.add_argument("--report-only", action="store_true", help="re-render <out>/results.{md,png} from results.json")
    p.add_argument("--snapshot", type=Path, default=None, metavar="DIR",
                   help="with --report-only: also copy the report and chart to DIR/benchmark_results.{md,png}")
    return p


def _detach(argv: Sequence[str], out: Path) -> int:
    """Start this command again in a new session, stdout/stderr to `<out>/bench.console.log`; print its pid."""
    out.mkdir(parents=True, exist_ok=True)
    args = [a for a in argv if a != "--background"]
    with open(out / "bench.console.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks", *args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                env=child_env())
    print(f"benchmark running in the background: pid {proc.pid}, log {out / 'bench.log'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.background:
        return _detach(argv, args.out)
    # The run modules are imported only once a command needs them: they load torch, transformers and the library
    # (seconds), which `--help` and `--background` (a parent that only starts the real run) never use.
    if args.report_only:
        from .suite import report_only

        paths = report_only(args.out, args.snapshot)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    if args.perf:  # the performance section alone (benchmarks/perf_cli.py)
        from .perf_cli import run_perf_only

        run_perf_only(grid_name=args.grid or ("quick" if args.quick else "reduced"), out=args.out, cache=args.cache,
                      threads=args.threads)
        return 0
    from .suite import run_suite

    run_suite(grid_name=args.grid or ("quick" if args.quick else "full"), out=args.out, cache=args.cache,
              threads=args.threads, seeds=args.seeds, budget=args.steps, perf=not args.skip_perf, only=args.only,
              regimes=args.regimes, loso=not args.no_loso, cached_only=args.cached_only,
              command=" ".join(["python -m benchmarks", *argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
