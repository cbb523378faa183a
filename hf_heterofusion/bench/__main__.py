# SPDX-License-Identifier: Apache-2.0
"""`python -m hf_heterofusion.bench [--quick] [--grid full|reduced] [--out DIR]`: run the benchmark."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .grid import GRIDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hf_heterofusion.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny random fixtures, ~1 min: checks the pipeline only")
    p.add_argument("--grid", choices=sorted(GRIDS), default=None,
                   help="`full` (the issue's sizes; GPU or long night), `reduced` (fits a 2-core CPU in hours) or "
                        "`quick`; default `full` (`quick` with --quick)")
    p.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder (default bench_results/)")
    p.add_argument("--cache", type=Path, default=None,
                   help="models and experts cache (default ~/.cache/hf_heterofusion/bench, or <out>/cache with "
                        "--quick; also $HF_HETEROFUSION_BENCH_CACHE)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a machine shared with other "
                        "jobs, where threads spin-wait on each other)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the grid's, 3)")
    p.add_argument("--skip-perf", action="store_true", help="skip the performance section")
    p.add_argument("--perf", action="store_true", help="only the performance section, printed (grid `reduced`)")
    p.add_argument("--only", nargs="+", default=None, metavar="METHOD", help="run only these methods")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .suite import run_suite

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    if args.perf:  # the performance section alone (bench/perf_cli.py)
        from .perf_cli import run_perf_only

        run_perf_only(grid_name=args.grid or ("quick" if args.quick else "reduced"), out=args.out, cache=args.cache,
                      threads=args.threads)
        return 0
    run_suite(grid_name=args.grid or ("quick" if args.quick else "full"), out=args.out, cache=args.cache,
              threads=args.threads, seeds=args.seeds, perf=not args.skip_perf, only=args.only,
              command=" ".join(["python -m hf_heterofusion.bench", *(argv if argv is not None else sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
