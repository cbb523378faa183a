# SPDX-License-Identifier: Apache-2.0
"""`push`: upload a finished fusion output to a Hub repo in one commit, loadable there by repo id.

The adapter written locally names its target base as the config did (a Hub id or a local path). On the Hub the
base must be a Hub id, or `AutoPeftModelForCausalLM.from_pretrained(repo_id)` (and every serving stack reading the
same field) fails; so the uploaded `adapter_config.json` is rewritten to the target's Hub id. The card is rendered
again for the repo (its id in the usage snippets and title, the Hub base in the front matter and body), and the
target base's tokenizer files go up with an adapter so that `AutoTokenizer.from_pretrained(repo_id)` works. The
local files stay as they are: what differs is uploaded from memory or from the base's folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from hf_heterofusion.constants import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    CARD_NAME,
    MERGED_SUBDIR,
    REPORT_NAME,
    TOKENIZER_FILES,
)
from hf_heterofusion.errors import HubError
from hf_heterofusion.hub.client import default_cache_dir, has_token, hub_call, make_api, offline
from hf_heterofusion.hub.refs import hub_id_of, split_revision
from hf_heterofusion.outputs.card import render_card
from hf_heterofusion.outputs.report import FusionReport


if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi

logger = logging.getLogger(__name__)
SKIPPED_PARTS = (".cache", "__pycache__", ".git")


def finished_output_dir(out_dir: Path | str) -> Path:
    """Refuse anything but a complete fusion output: report, adapter or merged model, and a card."""
    out = Path(out_dir)
    if not out.is_dir():
        raise HubError(f"output directory {out} does not exist")
    has_adapter = (out / ADAPTER_CONFIG_NAME).is_file() and (out / ADAPTER_WEIGHTS_NAME).is_file()
    has_merged = (out / MERGED_SUBDIR / "config.json").is_file()
    missing = [] if (out / REPORT_NAME).is_file() else [REPORT_NAME]
    if not (has_adapter or has_merged):
        missing.append(f"{ADAPTER_CONFIG_NAME} + {ADAPTER_WEIGHTS_NAME} (or {MERGED_SUBDIR}/config.json)")
    if missing:
        raise HubError(f"{out} is not a complete fusion output: missing {', '.join(missing)}")
    if not (out / CARD_NAME).is_file():
        raise HubError(f"{out} has no model card ({CARD_NAME}); write it with `hf-heterofusion card {out}`")
    return out


def push(
    out_dir: Path | str,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    api: HfApi | None = None,
    base_model: str | None = None,
) -> CommitInfo:
    """Upload a fusion output directory to a Hub repo in one commit.

    One commit means an interrupted push leaves the repo as it was. The repo is created if needed (`private` applies
    only then), and so is the branch `revision`. The uploaded `adapter_config.json` names the target base by its
    Hub id (`base_model_name_or_path`), so `AutoPeftModelForCausalLM.from_pretrained(repo_id)` loads it anywhere;
    a target that exists only locally is refused unless `base_model` names its Hub copy. The uploaded `README.md`
    is the card rendered from the report for `repo_id` (a local edit of the card is not uploaded), and an adapter
    goes up with the target base's tokenizer files when they are on this machine (the target's local folder, or
    the Hub cache a pull filled).

    Args:
        out_dir (`Path`): a complete output (`fusion_report.json`, the adapter or `merged/`, and `README.md`).
        repo_id (`str`): `namespace/name`.
        private (`bool`, *optional*): create the repo private.
        revision (`str`, *optional*): branch to push to (created from `main` if missing).
        create_pr (`bool`, *optional*): open a pull request instead of committing to the branch.
        commit_message (`str`, *optional*): defaults to "Upload HeteroFusion output".
        token (`str`, *optional*): write token; defaults to `HF_TOKEN` or the `hf auth login` token.
        api (`HfApi`, *optional*): client to use.
        base_model (`str`, *optional*): Hub id of the target base to record in the adapter config and the card;
            defaults to the target's Hub id from the fusion report (pulled from the Hub).

    Returns:
        `CommitInfo`: a `str` equal to the commit URL; `.pr_url` is set for a pull request.

    Raises:
        [`HubError`]: incomplete output, invalid repo id, missing or rejected token, offline.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    out = finished_output_dir(out_dir)
    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") != 1:
            raise HFValidationError("no namespace")
    except HFValidationError as err:
        raise HubError(f"`{repo_id}` is not a valid Hub repo id to push to (expected `namespace/name`)") from err
    if offline():
        raise HubError("cannot push while HF_HUB_OFFLINE=1 is set")
    report = FusionReport.load(out)
    overrides = _overrides(out, report, repo_id, base_model)  # refuses a local-only target before any network call
    tokenizer = tokenizer_files(out, report)
    api = api or make_api(token)
    if not has_token(api, token):
        raise HubError("pushing needs a Hub token with write access; run `hf auth login` or set HF_TOKEN")
    hub_call(repo_id, api, token, lambda: api.create_repo(repo_id, private=private, exist_ok=True))
    if revision is not None:
        branches = hub_call(repo_id, api, token, lambda: {b.name for b in api.list_repo_refs(repo_id).branches})
        if revision not in branches:
            hub_call(repo_id, api, token, lambda: api.create_branch(repo_id, branch=revision, exist_ok=True))
    info = hub_call(
        repo_id,
        api,
        token,
        lambda: api.create_commit(
            repo_id=repo_id,
            operations=_operations(out, overrides, tokenizer),
            commit_message=commit_message or "Upload HeteroFusion output",
            revision=revision,
            create_pr=create_pr,
        ),
    )
    logger.info("pushed %s to %s: %s", out, repo_id, info.pr_url or info.commit_url)
    return info


def target_hub_id(report: FusionReport) -> str | None:
    """The target base's Hub id from a fusion report, or None when it was a local folder."""
    return hub_id_of(report.target.model, report.target.model_revision)


def _overrides(out: Path, report: FusionReport, repo_id: str, base_model: str | None) -> dict[str, bytes]:
    """Files to upload with other content than on disk: the adapter config naming the Hub base, and the card
    rendered for `repo_id`."""
    if base_model is not None:
        _check_base_model(base_model)
    overrides: dict[str, bytes] = {}
    config_path = out / ADAPTER_CONFIG_NAME
    if config_path.is_file():  # a merged model alone names no base to load
        hub_id = base_model or target_hub_id(report)
        if hub_id is None:
            raise HubError(f"the target base `{report.target.model}` exists only locally, so the pushed adapter could "
                           f"not be loaded by repo id; upload the base to the Hub and pass `--base-model "
                           f"NAMESPACE/NAME` (or fuse from its Hub id after `hf-heterofusion pull`)")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("base_model_name_or_path") != hub_id:
            config["base_model_name_or_path"] = hub_id
            if base_model is not None:
                config["revision"] = None  # a sha pinned for another base would not exist in this one
            overrides[ADAPTER_CONFIG_NAME] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    card = render_card(out, report=report, repo_id=repo_id, base_model=base_model)
    overrides[CARD_NAME] = card.encode()
    return overrides


def _check_base_model(base_model: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(base_model)
    except HFValidationError as err:
        raise HubError(f"`--base-model {base_model}` is not a valid Hub repo id (expected `namespace/name`)") from err


def tokenizer_files(out: Path, report: FusionReport) -> dict[str, Path]:
    """The target base's tokenizer files to upload next to an adapter (none the output already holds).

    A PEFT adapter repo without them fails `AutoTokenizer.from_pretrained(repo_id)`. They come from the target's
    local folder, or, for a Hub target, from the Hub cache at the pinned revision (a pull put them there): no
    download, so a push never fetches a whole base. A merged model carries its own (`--copy-tokenizer`).
    """
    if not (out / ADAPTER_CONFIG_NAME).is_file():
        return {}
    found = {}
    for name in TOKENIZER_FILES:
        path = _target_file(report, name)
        if path is not None and not (out / name).exists():
            found[name] = path
    if not found:
        logger.warning("no tokenizer files of the target base `%s` on this machine: the pushed repo has none, load "
                       "the tokenizer from the base model", report.target.model)
    return found


def _target_file(report: FusionReport, name: str) -> Path | None:
    """One file of the target base: from its local folder, else from the Hub cache (None when in neither)."""
    from huggingface_hub import try_to_load_from_cache

    model = report.target.model
    hub_id = target_hub_id(report)
    if hub_id is None:
        local = Path(model or "").expanduser() / name
        return local if model and local.is_file() else None
    revision = report.target.model_revision or split_revision(model or "")[1]
    cached = try_to_load_from_cache(hub_id, name, cache_dir=default_cache_dir(), revision=revision)
    return Path(cached) if isinstance(cached, str) else None


def _operations(out: Path, overrides: dict[str, bytes], extra: dict[str, Path]) -> list[CommitOperationAdd]:
    """One add per file of the output (caches, temporary files and VCS folders left out), plus `extra` files from
    elsewhere (the base's tokenizer); `overrides` replace a file's content."""
    from huggingface_hub import CommitOperationAdd

    files = {name: str(path) for name, path in extra.items()}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out)
        if any(part in SKIPPED_PARTS for part in rel.parts) or path.name.endswith(".tmp"):
            continue
        files[rel.as_posix()] = str(path)
    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=overrides.get(name, files[name]))
            for name in sorted(files)]
