# SPDX-License-Identifier: Apache-2.0
"""The data flow in one place: prepare -> (teachers) -> train -> export -> write.

    prepare(cfg)        adapters -> AlignmentPlan -> ModuleGroups (tokens + spectra)   no model weights loaded
    fit(cfg)            + teachers, target model, replay set, trainer, train()          -> FitResult (tensors, report)
    fuse(cfg, out_dir)  fit + the output folder (outputs.writer)                        -> FusionResult
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.encoding import encode_replay, pad_token_id
from hf_heterofusion.data.models import load_causal_lm, load_tokenizer
from hf_heterofusion.data.replay import ReplayExample, balance_tasks
from hf_heterofusion.errors import ConfigError, HeteroFusionWarning, LossBlewUpWarning
from hf_heterofusion.files import ensure_new_output, staged_output
from hf_heterofusion.method.ablation import source_ablation
from hf_heterofusion.method.budget import BudgetSelector, split_for_budget
from hf_heterofusion.method.export import adapter_base_reference, fused_tensors, write_adapter
from hf_heterofusion.method.fusion import FusionModel
from hf_heterofusion.method.lora_trainer import AnchorLora
from hf_heterofusion.method.signals import attach_signals
from hf_heterofusion.method.train import lr_schedule_steps, train
from hf_heterofusion.outputs.memory import check_fits
from hf_heterofusion.outputs.report import FusionReport, build_report, with_ablation
from hf_heterofusion.outputs.sizing import announce_hypernet_size
from hf_heterofusion.outputs.writer import OutputFiles, write_side_files
from hf_heterofusion.prepare import PreparedFusion, prepare
from hf_heterofusion.teacher.plan import source_names
from hf_heterofusion.teacher.run import TeacherResult, run_teachers


@dataclass(frozen=True)
class FitResult:
    tensors: dict[str, torch.Tensor]
    adapter_config: dict
    report: FusionReport
    teacher: TeacherResult | None = None  # the labelled rows, written as teacher_replay.jsonl


@dataclass(frozen=True)
class FusionResult:
    out_dir: Path
    report: FusionReport = field(repr=False)


def fit(cfg: FusionConfig, *, work_dir: Path | None = None, accelerator=None, show_progress: bool = True,
        prepared: PreparedFusion | None = None, lock: str | Path | None = None,
        held_out: Sequence[ReplayExample] | None = None) -> FitResult:
    """Train the transfer nets (or, `trainer: lora`, the anchor adapter) on the replay set plus the teachers' rows,
    and predict the fused adapter. `held_out` rows (never trained on), when given, are where the per-source
    ablation is measured; otherwise it uses training rows."""
    # accelerate is imported here, not at the top: `check` and `--dry-run` import this module and never train.
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prepared = prepared or prepare(cfg, lock=lock)
    cfg = prepared.config  # with every `auto` resolved (block size, embed_dim): what trains and what is reported
    if cfg.trainer == "transfer_nets":  # `trainer: lora` builds no nets: nothing to size or warn about
        announce_hypernet_size(prepared, show=show_progress)
    examples = prepared.replay.examples if prepared.replay else ()
    acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
    if examples or prepared.teaching:  # something will be trained: stop now if it cannot fit, not when killed
        check_fits(prepared, str(acc.device))
    taught = None
    if prepared.teaching:  # before the target is loaded: one model in memory at a time
        t_teach = time.perf_counter()
        taught = run_teachers(prepared.teaching, cfg, accelerator=acc, show_progress=show_progress)
        timings["teacher_s"] = time.perf_counter() - t_teach
        examples = tuple(examples) + taught.examples()
        if not examples:
            raise ConfigError("the teachers kept no answer and the replay set has no labelled row: nothing to train "
                              "on; see the teacher counts above (loosen `teacher_min_logprob`, raise "
                              "`teacher_max_new_tokens`) or add labelled replay rows")
    budget_rows: tuple[ReplayExample, ...] = ()
    n_labelled = len(examples) - (len(taught.rows) if taught else 0)  # teacher rows come last
    labelled = frozenset(map(id, examples[:n_labelled]))  # by identity: a chat row's prompt does not hash
    if cfg.selects_step and examples:  # held out before balancing: a repeated row never leaks
        examples, budget_rows = split_for_budget(examples, cfg.seed,
                                                 spare=frozenset(range(n_labelled, len(examples))))
        if not budget_rows:
            warnings.warn("`max_steps: auto` / `step_selection` found no task with 4 or more rows to hold out a slice from; training "
                          "the full `epochs` budget", HeteroFusionWarning, stacklevel=2)
    rows, balance = examples, None
    if cfg.replay_balance != "none" and examples:
        rows, balance = balance_tasks(examples, cfg.seed, by_answer=cfg.replay_balance == "task_answer",
                                      labelled=labelled)
    # Nothing to train (`max_steps: 0`, an export-only run): the target model is not needed at all.
    model, tokenizer = _load_target(prepared, cfg) if examples else (None, None)
    encoded, truncated = _encode_replay(rows, cfg, tokenizer) if rows else ([], 0)
    signals = None
    if encoded:  # the teachers' token-level signal and the anchor's own distribution (off by default)
        t_sig = time.perf_counter()
        encoded, signals = attach_signals(rows, encoded, cfg, tokenizer, model, source_names=source_names(cfg),
                                          pad_id=pad_token_id(tokenizer),
                                          teacher_rows=frozenset(i for i, r in enumerate(rows) if r.signal))
        if signals is not None:
            timings["signals_s"] = time.perf_counter() - t_sig
    set_seed(cfg.seed)  # the nets' initialisation; data order and RDM draws have their own seeded generators
    if cfg.trainer == "lora":
        trainable = AnchorLora(prepared.target, len(prepared.sources))
    else:
        trainable = FusionModel(prepared.target, prepared.groups, cfg, prepared.block_size, len(prepared.sources))
    timings["load_s"] = time.perf_counter() - t0 - timings.get("teacher_s", 0.0)
    result, selector = None, None
    if encoded and budget_rows:
        selector = BudgetSelector(budget_rows, model, tokenizer, lr_schedule_steps(len(encoded), cfg,
                                                                                   acc.num_processes)[1])
    if encoded:
        result = train(trainable, model, encoded, cfg, pad_id=pad_token_id(tokenizer), accelerator=acc,
                       work_dir=work_dir, show_progress=show_progress,
                       on_step=None if selector is None else lambda step: selector.at_step(
                           step, acc.unwrap_model(trainable)))
    budget = selector.restore(acc.unwrap_model(trainable)).to_json() if selector is not None else None
    timings["fit_s"] = result.seconds if result else 0.0
    t1 = time.perf_counter()
    tensors, stats = fused_tensors(acc.unwrap_model(trainable), prepared.target)
    timings["export_s"] = time.perf_counter() - t1
    report = build_report(prepared, stats, result, len(encoded), truncated, timings,
                          teacher=taught.report if taught else None, replay_balance=balance, signals=signals,
                          budget=budget)
    _warn_if_blew_up(report, cfg)
    if encoded and cfg.trainer == "transfer_nets":
        t2 = time.perf_counter()
        ablation = source_ablation(acc.unwrap_model(trainable), model, tokenizer, held_out or examples,
                                   pad_id=pad_token_id(tokenizer), max_length=cfg.max_length,
                                   held_out=held_out is not None)
        report = with_ablation(report, ablation, time.perf_counter() - t2)
    return FitResult(tensors, dict(prepared.target.config), report, taught)


def _warn_if_blew_up(report: FusionReport, cfg: FusionConfig) -> None:
    """Said on stderr as well as in the card: a diverged fit still writes an adapter, and it is worth little."""
    stretch = report.training.loss_stretch
    if not stretch or not stretch["blew_up"]:
        return
    fix = "lower `lr`" if cfg.max_grad_norm is not None else "set `max_grad_norm: 1.0` or lower `lr`"
    warnings.warn(f"the training loss ended at {stretch['last']:.3g} (mean of the last {stretch['steps']} steps), far "
                  f"above its lowest stretch ({stretch['lowest']:.3g}, steps {stretch['lowest_from']}-"
                  f"{stretch['lowest_to']}): the fit likely blew up; {fix} and run again", LossBlewUpWarning,
                  stacklevel=3)


def fuse(cfg: FusionConfig, out_dir: str | Path, *, overwrite: bool = False, config_yaml: str | None = None,
         show_progress: bool = True, accelerator=None, lock: str | Path | None = None,
         held_out: Sequence[ReplayExample] | None = None) -> FusionResult | None:
    """Run the whole fusion and write the PEFT adapter directory (plus report, loss plot, config copy, card).

    Returns `None` on non-main processes of a distributed run (only the main process writes).
    """
    out_dir = Path(out_dir)
    ensure_new_output(out_dir, overwrite)  # fail before hours of training, not after
    work_dir = out_dir.parent / f".{out_dir.name}.heterofusion-work"
    prepared = prepare(cfg, lock=lock)
    result = fit(cfg, work_dir=work_dir, show_progress=show_progress, accelerator=accelerator, prepared=prepared,
                 held_out=held_out)
    if accelerator is not None and not accelerator.is_main_process:
        return None
    report = replace(result.report, config_yaml=config_yaml, output_kind="adapter")
    with staged_output(out_dir, overwrite=overwrite) as stage:
        write_adapter(stage, prepared.target, result.tensors,
                      base=adapter_base_reference(cfg.target_model, prepared.target_revisions.get("model")))
        write_side_files(stage, OutputFiles(report, config_yaml or cfg.to_yaml(), teacher=result.teacher))
    shutil.rmtree(work_dir, ignore_errors=True)
    return FusionResult(out_dir, report)


def _load_target(prepared: PreparedFusion, cfg: FusionConfig):
    # `torch_dtype` is the frozen base only: PEFT keeps the LoRA factors float32, the patched factors are the nets'
    # float32 output and transformers' loss upcasts the logits.
    model = load_causal_lm(prepared.target_model_dir, prepared.target.path, dtype=cfg.torch_dtype,
                           trust_remote_code=cfg.trust_remote_code, what="target model")
    model.eval()  # no LoRA or attention dropout while training the nets
    for p in model.parameters():
        p.requires_grad_(False)
    return model, load_tokenizer(prepared.target_model_dir, what="target model")


def _encode_replay(examples, cfg: FusionConfig, tokenizer) -> tuple[list, int]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoded = encode_replay(examples, tokenizer, cfg.max_length)
    truncated = 0
    for w in caught:
        if "exceed max_length" in str(w.message):
            truncated = int(str(w.message).split()[0])
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return encoded, truncated


__all__ = ["FitResult", "FusionResult", "fit", "fuse"]
