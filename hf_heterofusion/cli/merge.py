# SPDX-License-Identifier: Apache-2.0
"""`hf-heterofusion merge | check | mergekit-hook`: mergekit YAML configs through our command.

* `merge CONFIG.yml OUT_DIR [--dry-run] [--overwrite] [every mergekit-yaml option]` is `mergekit-yaml` with the
  `heterofusion` method registered. Its options are mergekit's own click definitions (`add_merge_options`), so
  every `mergekit-yaml` flag is accepted and means the same. A config whose `merge_method` is not `heterofusion`
  runs exactly as `mergekit-yaml` would run it.
* `check CONFIG.yml` is `merge --dry-run` (or `fuse --dry-run` for a fuse-format config): it reads configs and
  adapter headers only and prints the plan, or the one-line reason the fusion cannot run (exit status 2).
* `mergekit-hook install|uninstall|status` manages the start-up `.pth` file that lets the plain `mergekit-yaml`
  command find `heterofusion` as well.

The argparse dispatcher in `cli/main.py` hands everything after `merge` to the click command untouched (the subparser
has no option prefix), so mergekit's options are parsed by mergekit's definitions and nothing is re-declared.
mergekit, torch and the fusion itself are imported inside the handlers (seconds to import), so parsing the command
line and printing help stay instant.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.constants import LOCK_NAME
from hf_heterofusion.errors import ConfigError, HeteroFusionError
from hf_heterofusion.files import apply_umask
from hf_heterofusion.hub.refs import config_format


if TYPE_CHECKING:
    import click
    from mergekit.options import MergeOptions


MERGE_HELP = "run a mergekit YAML (any merge_method; `heterofusion` fuses adapters across families)"


def add_merge_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `merge`, `check` and `mergekit-hook` to the `hf-heterofusion` argparse dispatcher."""
    # No option prefix: argparse must not parse (or reject) mergekit's flags; click parses them below.
    merge = subparsers.add_parser("merge", help=MERGE_HELP + "; `merge --help` lists every option",
                                  add_help=False, prefix_chars="\x00")
    merge.add_argument("argv", nargs="*")
    merge.set_defaults(func=lambda args: merge_main(args.argv, catch_errors=False))

    check = subparsers.add_parser("check", help="dry-run a config (mergekit YAML or fuse format): alignment, "
                                  "modules, hypernet size, memory and time estimates (exit 2 if it cannot run)")
    check.add_argument("config", help="mergekit YAML or fuse-format YAML file")
    check.add_argument("--force", action="store_true", help="do not stop when the estimated memory exceeds what is "
                       "available (same as `memory_check: false`)")
    check.add_argument("--teacher-preview", type=int, metavar="N", default=0,
                       help="also label N prompts per teaching source (N synthesized too when it synthesizes) and "
                       "print each with the filters' verdicts (loads the teachers)")
    check.set_defaults(func=lambda args: check_config(args.config, force=args.force, preview=args.teacher_preview))

    hook = subparsers.add_parser("mergekit-hook", help="let the plain `mergekit-yaml` command find `heterofusion` "
                                                       "(a start-up .pth file in this environment)")
    hook.add_argument("action", choices=("install", "uninstall", "status"))
    hook.add_argument("--site-dir", help="folder of the .pth file (default: this interpreter's site-packages)")
    hook.set_defaults(func=_cmd_hook)


def merge_main(argv: Sequence[str] | None = None, *, catch_errors: bool = True) -> int:
    """Run `merge` with command-line arguments; returns the exit status.

    With `catch_errors` (standalone use), a `HeteroFusionError` prints one line and returns 2; otherwise it
    propagates to the caller's handler (`cli.main` does the same).
    """
    import click

    command = merge_command()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args=argv, prog_name="hf-heterofusion merge", standalone_mode=False)
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except HeteroFusionError as err:
        if not catch_errors:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


def check_config(config: str, *, echo: Callable[[str], Any] = print, force: bool = False, preview: int = 0) -> int:
    """`check CONFIG.yml`: the dry run of either config format (a `fuse` config or a mergekit YAML); `preview` > 0
    also labels that many prompts per teaching source (`--teacher-preview`, fuse-format configs)."""
    from hf_heterofusion.merge_methods.yaml_config import read_merge_yaml

    doc = read_merge_yaml(config)
    if preview < 0:
        raise ConfigError(f"--teacher-preview must be a positive number of prompts, got {preview}")
    if config_format(doc.data) == "fuse":
        from hf_heterofusion.merge_methods.dry_run import describe_fusion

        lock = doc.base_dir / LOCK_NAME
        cfg = FusionConfig.from_yaml(config)
        echo(describe_fusion(cfg.model_copy(update={"memory_check": False}) if force else cfg,
                             lock=lock if lock.is_file() else None))
        if preview:
            from hf_heterofusion.cli.preview import teacher_preview

            echo("\nteacher preview:\n" + teacher_preview(cfg, preview, lock=lock if lock.is_file() else None))
        return 0
    if preview:
        raise ConfigError("--teacher-preview reads fuse-format configs; run it on the `hf-heterofusion fuse` YAML "
                          "of this fusion (same keys as the `parameters:` block)")
    from mergekit.options import MergeOptions

    return run_merge_config(config, None, options=MergeOptions(), dry_run=True, echo=echo, force=force)


def merge_command() -> click.Command:
    """The click command: our arguments plus mergekit's own option definitions (every `mergekit-yaml` flag)."""
    import click
    from mergekit.options import PrettyPrintHelp, add_merge_options

    @click.command("hf-heterofusion merge", cls=PrettyPrintHelp)
    @click.argument("config_file")
    @click.argument("out_path", required=False)
    @click.option("--dry-run", is_flag=True, help="Read configs and adapter headers only; print the fusion plan, "
                  "memory and time estimates, and exit (2 if the fusion cannot run)")
    @click.option("--overwrite", is_flag=True, help="heterofusion: replace a non-empty OUT_PATH")
    @click.option("--eval", "evaluate", is_flag=True, help="heterofusion: hold out 10% of the replay rows, fuse on "
                  "the rest and score fused vs anchor on them (report and card)")
    @click.option("--eval-fraction", type=float, default=None, help="heterofusion: share of replay rows held out "
                  "(implies --eval)")
    @click.option("--eval-file", default=None, help="heterofusion: score on the rows of this JSONL instead")
    @click.option("--force", is_flag=True, help="heterofusion: run even when the estimated memory exceeds what is "
                  "available (same as `memory_check: false`)")
    @add_merge_options
    def merge(merge_options: MergeOptions, config_file: str, out_path: str | None, dry_run: bool,
              overwrite: bool, evaluate: bool, eval_fraction: float | None, eval_file: str | None,
              force: bool) -> int:
        """Run a mergekit YAML config with the `heterofusion` method registered (mergekit-yaml compatible)."""
        from hf_heterofusion.outputs.evaluate import held_out_share

        if out_path is None and not dry_run:
            raise click.UsageError("Missing argument 'OUT_PATH' (or pass --dry-run).")
        merge_options.apply_global_options()
        return run_merge_config(config_file, out_path, options=merge_options, dry_run=dry_run, overwrite=overwrite,
                                evaluation=(held_out_share(evaluate, eval_fraction), eval_file), force=force)

    return merge


def run_merge_config(config_file: str, out_path: str | None, *, options: MergeOptions, dry_run: bool = False,
                     overwrite: bool = False, echo: Callable[[str], Any] = print,
                     evaluation: tuple[float | None, str | None] = (None, None), force: bool = False) -> int:
    """Route one mergekit YAML: trained heterofusion, data-free heterofusion, or plain mergekit.

    `evaluation` is (held-out fraction, held-out file) of `--eval`; (None, None) evaluates nothing.
    Returns 0; raises `HeteroFusionError` for user errors (the caller prints it and exits with 2).
    """
    from hf_heterofusion.merge_methods import register_all
    from hf_heterofusion.merge_methods.yaml_config import check_merge_method, read_merge_yaml

    register_all()
    doc = read_merge_yaml(config_file)
    check_merge_method(doc)
    wants_eval = evaluation != (None, None) and not dry_run
    if wants_eval and not (doc.is_heterofusion and doc.mode == "trained"):
        raise ConfigError("--eval scores a trained heterofusion fusion (`base_model: target+anchor_adapter`); "
                          "this config is not one")
    if not doc.is_heterofusion:
        return _run_plain_mergekit(doc, out_path, options=options, dry_run=dry_run, echo=echo)
    if doc.mode == "trained":
        from hf_heterofusion.merge_methods.yaml_trained import trained_job

        job = trained_job(doc, random_seed=options.random_seed, trust_remote_code=options.trust_remote_code)
        if force:
            job = dataclasses.replace(job, config=job.config.model_copy(update={"memory_check": False}))
        if dry_run:
            from hf_heterofusion.merge_methods.dry_run import describe_trained

            echo(describe_trained(job, out_dir=out_path))
            return 0
        _run_trained(job, _required(out_path), options=options, overwrite=overwrite,
                     evaluation=evaluation if wants_eval else (None, None), echo=echo)
        echo(f"heterofusion ({job.config.output}) written to {out_path}")
        return 0
    from hf_heterofusion.merge_methods.yaml_data_free import data_free_configuration

    config, uses_lora = data_free_configuration(doc)
    if dry_run:
        from hf_heterofusion.merge_methods.dry_run import describe_data_free

        echo(describe_data_free(doc, config))
        return 0
    from pathlib import Path

    from mergekit.merge import run_merge

    with _lora_merge_cache(options, uses_lora) as opts:
        run_merge(config, _required(out_path), options=opts, config_source=doc.text)
    apply_umask(Path(out_path))  # mergekit's writer creates its shards 0600
    echo(f"heterofusion (data-free) merged model written to {out_path}")
    return 0


def _run_trained(job, out_path: str, *, options: MergeOptions, overwrite: bool,
                 evaluation: tuple[float | None, str | None], echo: Callable[[str], Any]) -> None:
    """The trained mode through our planner, on the replay rows left after any `--eval` hold-out."""
    import shutil
    from pathlib import Path

    from hf_heterofusion.merge_methods.planner import run_trained_merge
    from hf_heterofusion.outputs.evaluate import evaluate_output, held_out_for, summary_line

    out = Path(out_path)
    eval_dir = out.parent / f".{out.name}.heterofusion-eval"
    fraction, eval_file = evaluation
    try:
        cfg, held = held_out_for(job.config, fraction=fraction, eval_file=eval_file, work_dir=eval_dir, lock=job.lock)
        # mergekit's --quiet also silences training's own per-step bar; without it that bar is the one shown.
        run_trained_merge(cfg, out, options=options, config_source=job.doc.text, dtype=job.dtype,
                          out_dtype=job.out_dtype, overwrite=overwrite, lock=job.lock)
        if held is not None:
            echo(summary_line(evaluate_output(out, held, lock=job.lock, original_replay=job.config.replay)))
    finally:
        shutil.rmtree(eval_dir, ignore_errors=True)


def _run_plain_mergekit(doc, out_path: str | None, *, options: MergeOptions, dry_run: bool,
                        echo: Callable[[str], Any]) -> int:
    """Exactly what `mergekit-yaml` does with the file (same parse, same `run_merge` call)."""
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge

    if dry_run:
        from hf_heterofusion.merge_methods.dry_run import describe_other
        from hf_heterofusion.merge_methods.yaml_config import merge_configuration

        echo(describe_other(doc, merge_configuration(doc)))
        return 0
    merge_config = MergeConfiguration.model_validate(yaml.safe_load(doc.text))
    run_merge(merge_config, _required(out_path), options=options, config_source=doc.text)
    return 0


@contextlib.contextmanager
def _lora_merge_cache(options: MergeOptions, needed: bool) -> Iterator[MergeOptions]:
    """mergekit refuses `base+lora` inputs without `--lora-merge-cache`; give it a fresh one for this run.

    A fresh folder also avoids mergekit's stale-cache trap (its cache is keyed on paths, not file contents).
    """
    if not needed or options.lora_merge_cache:
        yield options
        return
    with tempfile.TemporaryDirectory(prefix="hf-heterofusion-lora-") as tmp:
        yield options.model_copy(update={"lora_merge_cache": tmp})


def _required(out_path: str | None) -> str:
    if not out_path:
        raise ConfigError("OUT_PATH is required unless --dry-run is given")
    return out_path


def _cmd_hook(args: argparse.Namespace) -> int:
    from hf_heterofusion.merge_methods import hook

    if args.action == "install":
        path = hook.install_pth(args.site_dir)
        print(f"installed {path}: `mergekit-yaml` in this environment now finds `heterofusion`")
    elif args.action == "uninstall":
        path = hook.uninstall_pth(args.site_dir)
        print(f"removed {path}" if path else "the mergekit hook was not installed")
    else:
        path = hook.pth_path(args.site_dir)
        print(f"installed: {path}" if path else f"not installed (would be {hook.default_site_dir() / hook.PTH_NAME})")
    return 0


def yaml_main() -> None:
    """Console-script entry (`hf-heterofusion-yaml CONFIG OUT [options]`): `mergekit-yaml` with heterofusion."""
    sys.exit(merge_main())


__all__ = ["add_merge_commands", "check_config", "merge_command", "merge_main", "run_merge_config", "yaml_main"]
