# SPDX-License-Identifier: Apache-2.0
"""`hf-heterofusion pull | push | card`: argparse wiring over `hf_heterofusion.hub` and `hf_heterofusion.outputs.card`.

Tokens come from `HF_TOKEN` or `hf auth login`, never from the command line: a `--token` flag would leave the
secret in the shell history and in `ps` output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_heterofusion.constants import LOCK_NAME


def _cmd_pull(args: argparse.Namespace) -> int:
    from hf_heterofusion.hub import pull

    inputs: list[str] = args.inputs
    is_config = len(inputs) == 1 and Path(inputs[0]).is_file() and Path(inputs[0]).suffix in (".yml", ".yaml")
    # A plain list of references is pinned in ./heterofusion.lock.json (or --lock), a config next to itself.
    lock_path = args.lock or (None if is_config else Path.cwd() / LOCK_NAME)
    lock = pull(
        inputs[0] if is_config else inputs,
        cache_dir=args.cache_dir,
        lock_path=lock_path,
        include_bin=args.include_bin,
        verify=not args.no_verify,
    )
    for key, entry in sorted(lock.entries.items()):
        print(f"{key}  {entry.sha[:12]}  {entry.kind}, {len(entry.files)} files  {entry.folder(args.cache_dir)}")
    if lock.path is not None:
        print(f"lock written to {lock.path}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from hf_heterofusion.outputs.push import push

    info = push(
        args.out_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        base_model=args.base_model,
    )
    print(info.commit_url)
    if info.pr_url:
        print(f"pull request: {info.pr_url}")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from hf_heterofusion.outputs.card import write_card

    print(write_card(args.out_dir, title=args.title))
    return 0


def add_hub_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the `pull`, `push` and `card` subcommands; each sets `func` to a handler returning an exit code."""
    pull = subparsers.add_parser(
        "pull",
        help="pin and download the Hub inputs of a config (or of repo ids) and write heterofusion.lock.json",
        description="Resolve every Hub reference to a commit sha, download only the files the fusion needs (the "
        "bases of source adapters only when they teach: `teacher: sources`), verify them and write the lock file. With HF_HUB_OFFLINE=1 the "
        "pinned snapshots are served from the cache. Tokens come from HF_TOKEN or `hf auth login`.",
    )
    pull.add_argument("inputs", nargs="+", metavar="CONFIG.yml | REPO_ID[@REV]",
                      help="a config (mergekit YAML or fuse format) or repo ids")
    pull.add_argument("--cache-dir", type=Path, help="Hub cache (default: HF_HUB_CACHE or HF_HOME/hub)")
    pull.add_argument("--lock", type=Path, help=f"lock file (default: {LOCK_NAME} next to the config, or here)")
    pull.add_argument("--include-bin", action="store_true", help="accept pickle *.bin weights when no safetensors")
    pull.add_argument("--no-verify", action="store_true", help="skip the size and sha256 check of downloaded files")
    pull.set_defaults(func=_cmd_pull)

    push = subparsers.add_parser(
        "push",
        help="upload a fusion output directory to a Hub repo in one commit",
        description="Create the repo if needed and upload the output directory (adapter or merged model, report, "
        "card) in a single commit; prints the commit URL. Needs a write token (HF_TOKEN or `hf auth login`).",
    )
    push.add_argument("out_dir", type=Path, help="fusion output directory")
    push.add_argument("repo_id", help="target repo, `namespace/name`")
    push.add_argument("--private", action="store_true", help="create the repo private (ignored if it exists)")
    push.add_argument("--revision", metavar="BRANCH", help="branch to push to (created from main if missing)")
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    push.add_argument("--commit-message", metavar="MSG", help="commit title")
    push.add_argument("--base-model", metavar="ID", help="Hub id of the target base, written into the uploaded "
                      "adapter_config.json and card (needed when the target was a local folder)")
    push.set_defaults(func=_cmd_push)

    card = subparsers.add_parser(
        "card",
        help="(re-)render README.md and alignment.png of a fusion output from its fusion_report.json",
    )
    card.add_argument("out_dir", type=Path, help="fusion output directory")
    card.add_argument("--title", help="card title (default: <target adapter>-heterofusion)")
    card.set_defaults(func=_cmd_card)
