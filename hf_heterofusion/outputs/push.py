# SPDX-License-Identifier: Apache-2.0
"""`push`: upload a finished fusion output to a Hub repo in one commit, loadable there by repo id.

The adapter written locally names its target base as the config did (a Hub id or a local path). On the Hub the
base must be a Hub id, or `AutoPeftModelForCausalLM.from_pretrained(repo_id)` (and every serving stack reading the
same field) fails; so the uploaded `adapter_config.json` is rewritten to the target's Hub id, the local files stay
as they are.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from hf_heterofusion.constants import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, CARD_NAME, MERGED_SUBDIR, REPORT_NAME
from hf_heterofusion.errors import HubError
from hf_heterofusion.hub.client import has_token, hub_call, make_api, offline
from hf_heterofusion.hub.refs import hub_id_of
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
    a target that exists only locally is refused unless `base_model` names its Hub copy.

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
    overrides = _base_model_overrides(out, base_model)  # refuses a local-only target before any network call
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
            operations=_operations(out, overrides),
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


def _base_model_overrides(out: Path, base_model: str | None) -> dict[str, bytes]:
    """Files to upload with other content than on disk: the adapter config (and the card) naming the Hub base."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    config_path = out / ADAPTER_CONFIG_NAME
    if not config_path.is_file():
        return {}  # a merged model: nothing names a base to load
    report = FusionReport.load(out)
    hub_id = base_model or target_hub_id(report)
    if hub_id is None:
        local = report.target.model
        raise HubError(f"the target base `{local}` exists only locally, so the pushed adapter could not be loaded by "
                       f"repo id; upload the base to the Hub and pass `--base-model NAMESPACE/NAME` (or fuse from "
                       f"its Hub id after `hf-heterofusion pull`)")
    try:
        validate_repo_id(hub_id)
    except HFValidationError as err:
        raise HubError(f"`--base-model {hub_id}` is not a valid Hub repo id (expected `namespace/name`)") from err
    config = json.loads(config_path.read_text(encoding="utf-8"))
    overrides: dict[str, bytes] = {}
    if config.get("base_model_name_or_path") != hub_id:
        config["base_model_name_or_path"] = hub_id
        if base_model is not None:
            config["revision"] = None  # a sha pinned for another base would not exist in this one
        overrides[ADAPTER_CONFIG_NAME] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    if base_model is not None and (out / CARD_NAME).is_file():
        from huggingface_hub import ModelCard

        card = ModelCard((out / CARD_NAME).read_text(encoding="utf-8"))
        if card.data.base_model != hub_id:
            card.data.base_model = hub_id
            card.data.base_model_relation = "adapter"
            overrides[CARD_NAME] = str(card).encode()
    return overrides


def _operations(out: Path, overrides: dict[str, bytes]) -> list[CommitOperationAdd]:
    """One add per file of the output (caches, temporary files and VCS folders left out)."""
    from huggingface_hub import CommitOperationAdd

    ops = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out)
        if any(part in SKIPPED_PARTS for part in rel.parts) or path.name.endswith(".tmp"):
            continue
        name = rel.as_posix()
        ops.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=overrides.get(name, str(path))))
    return ops
