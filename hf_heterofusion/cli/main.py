# SPDX-License-Identifier: Apache-2.0
"""`hf-heterofusion`: a thin shell over the library.

Subcommands: `fuse` (a FusionConfig YAML), `merge` (a mergekit YAML, every mergekit-yaml option), `check` (a dry
run of either format), `pull` / `push` / `card` (Hub and model card), `demo` (the built-in end-to-end example),
`make-example` (the inputs of the example configs), `hf-extension` (`hf heterofusion ...`).
User errors (`HeteroFusionError`) print one line and exit with status 2; anything else keeps its traceback.

What a command needs beyond argument parsing (torch, transformers, mergekit: seconds to import) is imported inside
that command's handler, so `--help`, `--version` and a mistyped option answer at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from hf_heterofusion import __version__
from hf_heterofusion.cli.hub import add_hub_commands
from hf_heterofusion.cli.merge import add_merge_commands
from hf_heterofusion.config import FusionConfig
from hf_heterofusion.constants import LOCK_NAME
from hf_heterofusion.data.replay import parse_row
from hf_heterofusion.errors import ConfigError, HeteroFusionError, HeteroFusionWarning, ReplayDataError


def _cmd_fuse(args: argparse.Namespace) -> int:
    if _is_mergekit_yaml(args.config):  # one way in: a mergekit YAML given to `fuse` runs as `merge` would
        return _fuse_mergekit_yaml(args)
    cfg = FusionConfig.from_yaml(args.config)
    if args.force:
        cfg = cfg.model_copy(update={"memory_check": False})
    overrides = _split_overrides(args.set or [])
    if overrides:
        cfg = FusionConfig.from_mapping({**cfg.model_dump(), **_parse_values(overrides)}, where="--set")
    lock_file = Path(args.config).resolve().parent / LOCK_NAME  # written by `hf-heterofusion pull CONFIG.yml`
    lock = lock_file if lock_file.is_file() else None
    if args.dry_run:
        from hf_heterofusion.merge_methods.dry_run import describe_fusion

        print(describe_fusion(cfg, lock=lock, out_dir=args.out_dir))
        return 0
    from hf_heterofusion.outputs.evaluate import evaluate_output, held_out_for, held_out_share, summary_line
    from hf_heterofusion.pipeline import fuse

    out = Path(args.out_dir)
    eval_dir = out.parent / f".{out.name}.heterofusion-eval"
    train_cfg, held = held_out_for(cfg, fraction=held_out_share(args.eval, args.eval_fraction),
                                   eval_file=args.eval_file, work_dir=eval_dir, lock=lock)
    try:
        result = fuse(train_cfg, out, overwrite=args.overwrite, lock=lock, held_out=_labelled(held),
                      config_yaml=Path(args.config).read_text(encoding="utf-8"))
        if result is not None and held is not None:
            print(summary_line(evaluate_output(out, held, lock=lock, original_replay=cfg.replay)))
    finally:
        shutil.rmtree(eval_dir, ignore_errors=True)
    if result is not None:
        print(f"fused adapter written to {result.out_dir}")
    return 0


def _labelled(held):
    """The held-out rows that have an answer, as examples: where the per-source ablation is measured."""
    if held is None:
        return None
    examples = []
    for row in held.rows:
        try:
            examples.append(parse_row(row))
        except ReplayDataError:  # a prompt left for a teacher: no answer to measure a loss on
            continue
    return examples or None


def _is_mergekit_yaml(path: str) -> bool:
    """A readable mapping with `merge_method`; anything else is left to the fuse format's own (clearer) errors."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "merge_method" in data


def _fuse_mergekit_yaml(args: argparse.Namespace) -> int:
    from mergekit.options import MergeOptions

    from hf_heterofusion.cli.merge import run_merge_config
    from hf_heterofusion.outputs.evaluate import held_out_share

    if args.set:
        raise ConfigError("--set applies to fuse-format configs; edit the mergekit YAML's `parameters:` instead")
    return run_merge_config(args.config, args.out_dir, options=MergeOptions(), dry_run=args.dry_run, force=args.force,
                            overwrite=args.overwrite, evaluation=(held_out_share(args.eval, args.eval_fraction),
                                                                  args.eval_file))


def _cmd_make_example(args: argparse.Namespace) -> int:
    from hf_heterofusion.examples.make_example import EXAMPLES, FUSE_EXAMPLE, OUTPUTS, make_example_inputs

    out = make_example_inputs(args.dir, overwrite=args.overwrite)
    print(f"example inputs written to {out} (models/, adapters/, replay.jsonl); run one with")
    print(f"  hf-heterofusion check {out / EXAMPLES[0]}")
    for name in EXAMPLES:
        print(f"  hf-heterofusion merge {out / name} {OUTPUTS[name]}")
    print(f"  hf-heterofusion fuse {out / FUSE_EXAMPLE} {OUTPUTS[FUSE_EXAMPLE]} --eval")
    return 0


def _cmd_hf_extension(args: argparse.Namespace) -> int:
    from hf_heterofusion.cli import hf_extension

    if args.action == "install":
        path = hf_extension.install(args.executable)
        print(f"wrote {path}: `hf heterofusion ...` now runs this hf-heterofusion")
    elif args.action == "uninstall":
        path = hf_extension.uninstall()
        print(f"removed {path}" if path else "`hf heterofusion` was not registered")
    else:
        print(hf_extension.status())
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
    from hf_heterofusion.examples.demo import run_demo

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
    fuse.add_argument("--force", action="store_true", help="run even when the estimated memory exceeds what is "
                      "available (same as `memory_check: false`)")
    fuse.add_argument("--dry-run", action="store_true", help="read configs and adapter headers only; print the plan, "
                      "hypernet size, memory and time estimates, and exit (2 if the fusion cannot run)")
    add_eval_options(fuse)
    fuse.set_defaults(func=_cmd_fuse)

    example = sub.add_parser("make-example", help="write the tiny models, adapters and replay set the example "
                             "configs name, and the example configs, into DIR")
    example.add_argument("dir", help="folder to create (must be new or empty)")
    example.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    example.set_defaults(func=_cmd_make_example)

    ext = sub.add_parser("hf-extension", help="make `hf heterofusion ...` work (register this executable with the "
                         "`hf` CLI's extensions)")
    ext.add_argument("action", choices=("install", "uninstall", "status"))
    ext.add_argument("--executable", help="the hf-heterofusion executable to register (default: this one)")
    ext.set_defaults(func=_cmd_hf_extension)

    demo = sub.add_parser("demo", help="run the built-in offline example end to end and print the scores")
    demo.add_argument("--out-dir", default="out/demo", help="where the demo writes (default: out/demo)")
    demo.add_argument("--overwrite", action="store_true", default=True, help=argparse.SUPPRESS)
    demo.add_argument("--quick", action="store_true", help="fewer steps (used by the tests)")
    demo.set_defaults(func=_cmd_demo)

    add_merge_commands(sub)
    add_hub_commands(sub)
    return parser


def add_eval_options(parser: argparse.ArgumentParser) -> None:
    """`--eval`, `--eval-fraction`, `--eval-file`: score the output on rows kept out of training (card table)."""
    parser.add_argument("--eval", action="store_true", help="hold out 10%% of the replay rows, fuse on the rest, "
                        "and score fused vs anchor adapter on them (exact match, F1; written to the report and card)")
    parser.add_argument("--eval-fraction", type=float, metavar="F", help="share of replay rows held out (implies "
                        "--eval; default 0.1)")
    parser.add_argument("--eval-file", metavar="JSONL", help="score on these rows instead (training then uses the "
                        "whole replay set)")


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
    if args.command in ("fuse", "demo", "merge", "check", "make-example"):
        _quiet_libraries()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows up here, inside the handler below, not at interpreter exit
            return code
    except HeteroFusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`... | head -1`): stop quietly like any Unix filter, with the status a SIGPIPE gives
        # (128 + 13); what is still buffered goes to /dev/null so Python's exit flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"interrupted; {_interrupted_state(args)}", file=sys.stderr)
        return 130


def _interrupted_state(args: argparse.Namespace) -> str:
    """What an interrupted command left: outputs appear only when complete; a fit keeps its last checkpoint."""
    out = getattr(args, "out_dir", None) or getattr(args, "out_path", None)
    if out:
        checkpoint = Path(out).parent / f".{Path(out).name}.heterofusion-work" / "checkpoint.pt"
        if checkpoint.is_file():
            return (f"{out} was not written; the last training checkpoint was kept in {checkpoint.parent} and "
                    f"rerunning the same command resumes from it")
        return f"{out} was not written (no training checkpoint yet: rerunning starts over)"
    return "nothing was written"


if __name__ == "__main__":
    sys.exit(main())
