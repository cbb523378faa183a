# SPDX-License-Identifier: Apache-2.0
"""The one writer of a fusion output's side files, for `fuse` and for mergekit's `merge` alike.

Next to the weights (a PEFT adapter, a merged checkpoint, or both), every output folder holds::

    fusion_report.json       the `FusionReport`, serialised
    heterofusion_config.yml  the fusion config that ran (and mergekit_config.yml, the YAML as given, for `merge`)
    loss_curve.png           replay CE and RDM per optimiser step
    teacher_replay.jsonl     the rows the teachers labelled (teacher runs only)
    README.md, alignment.png the model card

The caller writes into a staging folder (`files.staged_output`), so nothing appears before all of it is there. The
card is documentation: a failure to render it is logged and never discards a finished fusion (a full disk still
fails the output, which is then not complete).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hf_heterofusion.constants import (
    CONFIG_COPY_NAME,
    LOSS_PLOT_NAME,
    MERGEKIT_CONFIG_NAME,
    REPORT_NAME,
    TEACHER_REPLAY_NAME,
)
from hf_heterofusion.files import is_disk_full, write_atomic
from hf_heterofusion.outputs.card import write_card
from hf_heterofusion.outputs.report import FusionReport


if TYPE_CHECKING:
    from hf_heterofusion.teacher.run import TeacherResult

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputFiles:
    """What one output folder holds besides its weights."""

    report: FusionReport
    fusion_yaml: str  # the FusionConfig as YAML (or the user's own fuse-format YAML)
    mergekit_yaml: str | None = None  # `merge` only: the mergekit YAML as given
    teacher: TeacherResult | None = None
    card: bool = True


def write_side_files(folder: Path, files: OutputFiles) -> None:
    """Write the report, configs, loss plot, teacher rows and card into `folder` (see the module docstring)."""
    report = files.report
    (folder / REPORT_NAME).write_text(report.dumps(), encoding="utf-8")
    (folder / CONFIG_COPY_NAME).write_text(files.fusion_yaml, encoding="utf-8")
    if files.mergekit_yaml is not None:
        (folder / MERGEKIT_CONFIG_NAME).write_text(files.mergekit_yaml, encoding="utf-8")
    write_loss_plot(list(report.training.losses), folder / LOSS_PLOT_NAME,
                    trainer=report.config.get("trainer", "transfer_nets"))
    if files.teacher is not None:
        files.teacher.write_jsonl(folder / TEACHER_REPLAY_NAME)
    if files.card:
        write_card_safely(folder, report)


def rewrite_report(folder: Path, report: FusionReport) -> None:
    """Replace the report of a finished output (e.g. with `--eval` scores) and render its card again."""
    write_atomic(folder / REPORT_NAME, report.dumps())
    write_card_safely(folder, report)


def write_card_safely(folder: Path, report: FusionReport) -> None:
    try:
        write_card(folder, report=report)
    except Exception as err:
        if is_disk_full(err):
            raise  # the output is not finished: `staged_output` turns this into one line
        LOG.exception("could not write the model card in %s; the fusion output is complete without it", folder)


def write_loss_plot(losses: list[dict], path: Path, *, trainer: str = "transfer_nets") -> None:
    """A PNG of the training terms per optimiser step: replay CE and, for the transfer nets, the RDM regulariser,
    each on its own axis (their sum would hide the CE: `lambda * RDM` is on another scale and can dominate it).
    `trainer: lora` has no regulariser: one panel, titled for what was trained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = trainer != "lora"
    fig, axes = plt.subplots(2 if nets else 1, 1, figsize=(6, 4.4 if nets else 2.8), dpi=100, sharex=True,
                             squeeze=False)
    ax_ce = axes[0][0]
    steps = [r["step"] for r in losses]
    if losses:
        ax_ce.plot(steps, [r["ce"] for r in losses], label="replay CE", color="tab:blue")
    if nets:
        ax_rdm = axes[1][0]
        if losses and all("rdm" in r for r in losses):
            ax_rdm.plot(steps, [r["rdm"] for r in losses], label="RDM (before lambda)", color="tab:orange")
        ax_rdm.set_ylabel("RDM")
    ax_ce.set_ylabel("replay CE")
    axes[-1][0].set_xlabel("optimiser step")
    ax_ce.set_title("HeteroFusion transfer-net training" if nets else "anchor LoRA training (trainer: lora)")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


__all__ = ["OutputFiles", "rewrite_report", "write_card_safely", "write_loss_plot", "write_side_files"]
