# SPDX-License-Identifier: Apache-2.0
"""`hf-heterofusion`: a thin shell over the library.

Subcommands: `fuse` (a FusionConfig YAML), `merge` / `check` (a mergekit YAML, every mergekit-yaml option),
`pull` / `push` / `card` (Hub and model card), `demo` (the built-in end-to-end example).
User errors (`HeteroFusionError`) print one line and exit with status 2; anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from . import __version__
from .errors import ConfigError, HeteroFusionError, HeteroFusionWarning


def _cmd_fuse(args: argparse.Namespace) -> int:
    from .config import FusionConfig
    from .pipeline import fuse

    cfg = FusionConfig.from_yaml(args.config)
    overrides = _split_overrides(args.set or [])
    if overrides:
        cfg = FusionConfig.from_mapping({**cfg.model_dump(), **_parse_values(overrides)}, where="--set")
    from pathlib import Path

    from .constants import LOCK_NAME

    lock = Path(args.config).resolve().parent / LOCK_NAME  # written by `hf-heterofusion pull CONFIG.yml`
    result = fuse(cfg, args.out_dir, overwrite=args.overwrite, lock=lock if lock.is_file() else None,
                  config_yaml=Path(args.config).read_text(encoding="utf-8"))
    if result is not None:
        print(f"fused adapter written to {result.out_dir}")
    return 0


def _split_overrides(items: Sequence[str]) -> dict[str, str]:
    bad = [kv for kv in items if "=" not in kv or not kv.split("=", 1)[0].strip()]
    if bad:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. `--set lr=1e-4`), got {bad[0]!r}")
    return dict(kv.split("=", 1) for kv in items)


def _parse_values(overrides: dict[str, str]) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in overrides.items()}


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out_dir, overwrite=args.overwrite, quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-heterofusion",
        description="Fuse LoRA experts from different model families into one adapter for a target model "
        "(HeteroFusion, arXiv 2604.01674).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fuse = sub.add_parser("fuse", help="run a fusion from a HeteroFusion config YAML")
    fuse.add_argument("config", help="YAML with target_model, target_adapter, sources, replay and parameters")
    fuse.add_argument("out_dir", help="output directory (PEFT adapter, report, card)")
    fuse.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    fuse.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    fuse.set_defaults(func=_cmd_fuse)

    demo = sub.add_parser("demo", help="run the built-in offline example end to end and print the scores")
    demo.add_argument("--out-dir", default="out/demo", help="where the demo writes (default: out/demo)")
    demo.add_argument("--overwrite", action="store_true", default=True, help=argparse.SUPPRESS)
    demo.add_argument("--quick", action="store_true", help="fewer steps (used by the tests)")
    demo.set_defaults(func=_cmd_demo)

    for module, hook in (("merge_cli", "add_merge_commands"), ("hub_cli", "add_hub_commands")):
        try:
            mod = __import__(f"{__package__}.{module}", fromlist=[hook])
        except ImportError as err:  # pragma: no cover - both modules ship with the package
            if err.name and err.name.endswith(module):
                continue
            raise
        getattr(mod, hook)(sub)
    return parser


def _quiet_libraries() -> None:
    """Keep the terminal for our own progress: no per-file weight-loading bars or known-harmless deprecations."""
    import warnings

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*torch_dtype.*is deprecated.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def _one_line_warnings(original):
    """Our own warnings are for the user: one `warning: ...` line without the source location; others unchanged."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, HeteroFusionWarning):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.command in ("fuse", "demo", "merge", "check"):
        _quiet_libraries()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return int(args.func(args) or 0)
    except HeteroFusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; outputs were not written (rerun to resume from the last checkpoint)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
