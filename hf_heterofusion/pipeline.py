# SPDX-License-Identifier: Apache-2.0
"""The data flow in one place: load -> align -> block -> transfer nets -> replay training -> export.

    prepare(cfg)  adapters -> AlignmentPlan -> ModuleGroups (tokens + spectra)      no model weights loaded
    fit(cfg)      + target model, replay set, FusionModel, train()                  -> FitResult (tensors, report)
    fuse(cfg, out_dir)  fit + write adapter, report, loss plot, config, card        -> FusionResult
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .adapters import LoraAdapter, load_adapter
from .align import AlignmentPlan, match_modules, plan_alignment
from .config import FusionConfig, hypernet_parameters, next_power_of_two
from .constants import CONFIG_COPY_NAME, LOSS_PLOT_NAME, REPORT_NAME
from .errors import AdapterFormatError, AdapterNotFoundError, ConfigError, IncompatibleAdaptersError
from .fusion import FusionModel, ModuleGroup, build_groups
from .rank import refactor_rank
from .replay import ReplayData, ReplayExample, read_replay
from .report import build_report, source_report
from .roles import SUPPORTED_TARGET_FAMILIES
from .safetensors_header import HeaderError, checkpoint_shapes, lora_misfit
from .teacher import TEACHER_REPLAY_NAME, TeacherPlan, TeacherResult, plan_teaching


@dataclass(frozen=True)
class PreparedFusion:
    """Everything decided before any model weights are loaded (also what the dry run prints)."""

    config: FusionConfig
    target_model_dir: Path
    target_model_config: dict
    target: LoraAdapter
    sources: tuple[LoraAdapter, ...]  # re-factored to the target rank
    source_reports: tuple[dict, ...]
    plan: AlignmentPlan
    groups: tuple[ModuleGroup, ...]
    block_size: int
    untouched: tuple[str, ...]  # target modules that receive nothing
    target_revisions: dict = field(default_factory=dict)  # pinned shas of Hub inputs
    replay: ReplayData | None = None  # read before any model: a malformed row fails at once
    teaching: tuple[TeacherPlan, ...] = ()  # sources that label prompts (`teacher: sources`)

    def hypernet_parameters(self) -> dict[str, int]:
        c = self.config
        return {g.role: hypernet_parameters(g.rank, self.block_size, c.embed_dim, c.max_position_embeddings,
                                            sources=len(self.sources), position_mode=c.position_mode)
                for g in self.groups}


@dataclass(frozen=True)
class FitResult:
    tensors: dict[str, torch.Tensor]
    adapter_config: dict
    report: dict
    teacher: TeacherResult | None = None  # the labelled rows, written as teacher_replay.jsonl


@dataclass(frozen=True)
class FusionResult:
    out_dir: Path
    report: dict = field(repr=False)


def resolve_input(ref: str, *, what: str, lock: str | Path | None = None) -> tuple[Path, str | None]:
    """A local directory for a path or a Hub reference, and the pinned commit sha for Hub references.

    Hub references (`org/name[@revision]`) are looked up in the lock file that `hf-heterofusion pull` wrote, so a
    fusion always reads exactly the bytes that were pulled.
    """
    path = Path(ref).expanduser()
    if path.exists():
        return path, None
    if lock is None or not Path(lock).is_file():
        raise AdapterNotFoundError(
            f"{what} `{ref}` does not exist locally; check the path, or run `hf-heterofusion pull` for Hub ids "
            f"(it writes heterofusion.lock.json next to the config)"
        )
    from .hub import Lock, parse_ref, resolve_with_lock

    pinned = Lock.load(lock)
    hub_ref = parse_ref(ref)
    local = resolve_with_lock(hub_ref, pinned)
    return local, pinned.entries[hub_ref.key].sha


def prepare(cfg: FusionConfig, *, lock: str | Path | None = None) -> PreparedFusion:
    """Stages 1-3: read and check the adapters, align topologies, build block tokens and spectra.

    `lock` is the `heterofusion.lock.json` of `hf-heterofusion pull`, needed when inputs are Hub references.
    """
    model_dir, model_sha = resolve_input(cfg.target_model, what="target model", lock=lock)
    model_config = _read_model_config(model_dir, cfg)
    target_dir, target_sha = resolve_input(cfg.target_adapter, what="target adapter", lock=lock)
    target = load_adapter(target_dir, allow_pickle=cfg.allow_pickle, base_config=model_config)
    _check_against_base(target, model_dir)
    if cfg.update_mode != "b_only" and any(m.rows is not None for m in target.modules):
        raise ConfigError(f"`update_mode: {cfg.update_mode}` cannot update the shared A of fused projections "
                          f"({model_config.get('model_type')} target); use `update_mode: b_only`")
    sources, reports, source_dirs = [], [], []
    for spec in cfg.sources:
        source_dir, source_sha = resolve_input(spec.adapter, what="source adapter", lock=lock)
        source_dirs.append((source_dir, source_sha))
        raw = load_adapter(source_dir, allow_pickle=cfg.allow_pickle)
        matched, energy = refactor_rank(raw, target.rank)
        sources.append(matched)
        reports.append(dict(source_report(spec, raw, energy), revision=source_sha))
    plan = plan_alignment(target, sources, cfg.layer_alignment, cfg.transfer_ratio)
    matched = match_modules(target, sources, plan)
    block_size = cfg.block_size if cfg.block_size != "auto" else _auto_block_size(target, sources, model_config)
    groups = build_groups(matched, block_size=block_size,
                          per_source_positions=cfg.position_mode == "per_source")
    aligned = {mm.target.module for g in groups for mm in g.matched}
    untouched = tuple(sorted({m.module for m in target.modules} - aligned))
    replay = read_replay(cfg.replay) if cfg.replay and cfg.max_steps != 0 else None
    teaching = plan_teaching(cfg, replay, lock=lock, adapter_dirs=source_dirs) if cfg.max_steps != 0 else ()
    return PreparedFusion(cfg, model_dir, model_config, target, tuple(sources), tuple(reports), plan, groups,
                          block_size, untouched, {"model": model_sha, "adapter": target_sha}, replay, teaching)


def fit(cfg: FusionConfig, *, work_dir: Path | None = None, accelerator=None, show_progress: bool = True,
        prepared: PreparedFusion | None = None, lock: str | Path | None = None,
        held_out: Sequence[ReplayExample] | None = None) -> FitResult:
    """Stages 1-5 and the export pass: train the transfer nets (or, `trainer: lora`, the anchor adapter) on the
    replay set plus the teachers' rows, and predict the fused adapter. `held_out` rows (never trained on), when
    given, are where the per-source ablation is measured; otherwise it uses training rows."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .export import fused_tensors
    from .train import train

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prepared = prepared or prepare(cfg, lock=lock)
    from .sizing import announce_hypernet_size

    announce_hypernet_size(prepared, show=show_progress)
    examples = prepared.replay.examples if prepared.replay else ()
    acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
    taught = None
    if prepared.teaching:  # before the target is loaded: one model in memory at a time
        from .teacher import run_teachers

        t_teach = time.perf_counter()
        taught = run_teachers(prepared.teaching, cfg, accelerator=acc, show_progress=show_progress)
        timings["teacher_s"] = time.perf_counter() - t_teach
        examples = tuple(examples) + taught.examples()
        if not examples:
            raise ConfigError("the teachers kept no answer and the replay set has no labelled row: nothing to train "
                              "on; see the teacher counts above (loosen `teacher_min_logprob`, raise "
                              "`teacher_max_new_tokens`) or add labelled replay rows")
    rows, balance = examples, None
    if cfg.replay_balance == "task" and examples:
        from .replay import balance_tasks

        rows, balance = balance_tasks(examples, cfg.seed)
    # Nothing to train (`max_steps: 0`, an export-only run): the target model is not needed at all.
    model, tokenizer = _load_target(prepared, cfg) if examples else (None, None)
    encoded, truncated = _encode_replay(rows, cfg, tokenizer) if rows else ([], 0)
    set_seed(cfg.seed)  # the nets' initialisation; data order and RDM draws have their own seeded generators
    if cfg.trainer == "lora":
        from .lora_trainer import AnchorLora

        fusion = AnchorLora(prepared.target, len(prepared.sources))
    else:
        fusion = FusionModel(prepared.target, prepared.groups, cfg, prepared.block_size, len(prepared.sources))
    timings["load_s"] = time.perf_counter() - t0 - timings.get("teacher_s", 0.0)
    from .encoding import pad_token_id

    if encoded:
        result = train(fusion, model, encoded, cfg, pad_id=pad_token_id(tokenizer), accelerator=acc,
                       work_dir=work_dir, show_progress=show_progress)
    else:
        result = None
    timings["fit_s"] = result.seconds if result else 0.0
    t1 = time.perf_counter()
    tensors, stats = fused_tensors(acc.unwrap_model(fusion), prepared.target)
    timings["export_s"] = time.perf_counter() - t1
    report = build_report(prepared, stats, result, len(encoded), truncated, timings)
    report["teacher"] = taught.report if taught else None
    report["training"]["replay_balance"] = balance
    if encoded and cfg.trainer == "transfer_nets":
        from .ablation import source_ablation

        t2 = time.perf_counter()
        ablation = source_ablation(acc.unwrap_model(fusion), model, tokenizer, held_out or examples,
                                   pad_id=pad_token_id(tokenizer), max_length=cfg.max_length,
                                   held_out=held_out is not None)
        report["ablation"] = ablation
        for source, effect in zip(report["sources"], ablation["sources"]):
            source["ablation"] = effect
        report["timings"]["ablation_s"] = round(time.perf_counter() - t2, 3)
    return FitResult(tensors, dict(prepared.target.config), report, taught)


def fuse(cfg: FusionConfig, out_dir: str | Path, *, overwrite: bool = False, config_yaml: str | None = None,
         show_progress: bool = True, accelerator=None, lock: str | Path | None = None,
         held_out: Sequence[ReplayExample] | None = None) -> FusionResult | None:
    """Run the whole fusion and write the PEFT adapter directory (plus report, loss plot, config copy, card).

    Returns `None` on non-main processes of a distributed run (only the main process writes).
    """
    from .export import adapter_base_reference, check_output_dir, staged_output, write_adapter, write_loss_plot

    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)  # fail before hours of training, not after
    work_dir = out_dir.parent / f".{out_dir.name}.heterofusion-work"
    prepared = prepare(cfg, lock=lock)
    result = fit(cfg, work_dir=work_dir, show_progress=show_progress, accelerator=accelerator, prepared=prepared,
                 held_out=held_out)
    if accelerator is not None and not accelerator.is_main_process:
        return None
    report = dict(result.report, config_yaml=config_yaml, output_kind="adapter")
    with staged_output(out_dir, overwrite=overwrite) as stage:
        write_adapter(stage, prepared.target, result.tensors,
                      base=adapter_base_reference(cfg.target_model, prepared.target_revisions.get("model")))
        (stage / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (stage / CONFIG_COPY_NAME).write_text(config_yaml or cfg.to_yaml(), encoding="utf-8")
        write_loss_plot(report["training"]["losses"], stage / LOSS_PLOT_NAME)
        if result.teacher is not None:
            result.teacher.write_jsonl(stage / TEACHER_REPLAY_NAME)
        _write_card(stage)
    import shutil

    shutil.rmtree(work_dir, ignore_errors=True)
    return FusionResult(out_dir, report)


def _write_card(out_dir: Path) -> None:
    from .card import write_card

    write_card(out_dir)


# ------------------------------------------------------------------------------------------------ helpers


def _read_model_config(model_dir: Path, cfg: FusionConfig) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise AdapterNotFoundError(f"target model {model_dir} has no config.json; pass a transformers model directory")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterFormatError(f"cannot read {path} ({getattr(err, 'strerror', None) or err}); the target model "
                                 f"folder must hold a transformers config.json") from None
    if not isinstance(config, dict):
        raise AdapterFormatError(f"{path} must hold a JSON object; the target model folder is not a transformers "
                                 f"model")
    _check_model_weights(model_dir, cfg)
    if config.get("auto_map") and not cfg.trust_remote_code:
        raise ConfigError(f"target model {model_dir} ships custom code (auto_map), which runs when loaded; "
                          f"set `trust_remote_code: true` only if you trust its author")
    family = config.get("model_type")
    if family not in SUPPORTED_TARGET_FAMILIES:
        raise IncompatibleAdaptersError(f"target architecture `{family}` is not supported; supported: "
                                        f"{', '.join(SUPPORTED_TARGET_FAMILIES)}")
    return config


def _check_model_weights(model_dir: Path, cfg: FusionConfig) -> None:
    """Weights must be safetensors unless `allow_pickle` (transformers would unpickle `pytorch_model.bin`)."""
    if (model_dir / "model.safetensors").is_file() or (model_dir / "model.safetensors.index.json").is_file():
        return
    if not any(model_dir.glob("pytorch_model*.bin")):
        raise AdapterNotFoundError(f"target model {model_dir} has no weights (model.safetensors); pass a complete "
                                   f"transformers model directory")
    if not cfg.allow_pickle:
        raise AdapterFormatError(f"target model {model_dir} has only pickle weights (pytorch_model.bin), and loading "
                                 f"pickles can run arbitrary code; convert them to safetensors, or set "
                                 f"`allow_pickle: true` if you trust their author")


def _check_against_base(target: LoraAdapter, model_dir: Path) -> None:
    """Each LoRA module's (d_out, d_in) must equal its base weight's shape (cheap: safetensors headers only)."""
    try:
        shapes = checkpoint_shapes(model_dir)
    except HeaderError as err:
        raise AdapterFormatError(f"target model weights {err.path} are corrupt or truncated ({err.reason}); "
                                 f"re-download or re-save the model") from None
    if not shapes:
        return
    misfit = lora_misfit({k: tuple(v.shape) for k, v in target.tensors.items()}, shapes)
    if misfit is not None:
        module, weight, update, want = misfit
        raise AdapterFormatError(
            f"target adapter module `{module}` is {update[0]}x{update[1]} but the base weight `{weight}` is "
            f"{want[0]}x{want[1]}; the adapter was trained on a different base model"
        )


def _auto_block_size(target: LoraAdapter, sources, model_config: dict) -> int:
    hidden = [model_config.get("hidden_size") or 0] + [s.hidden_size or 0 for s in sources]
    return next_power_of_two(max(hidden))


def _load_target(prepared: PreparedFusion, cfg: FusionConfig):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # `torch_dtype` is the frozen base only: PEFT keeps the LoRA factors float32 (autocast_adapter_dtype), the
        # patched factors are the nets' float32 output and transformers' loss upcasts the logits.
        dtype = getattr(torch, cfg.torch_dtype or "float32")
        base = AutoModelForCausalLM.from_pretrained(prepared.target_model_dir, dtype=dtype,
                                                    trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:  # transformers' "cannot load" errors; the message says what is missing
        raise AdapterFormatError(f"transformers cannot load the target model {prepared.target_model_dir} "
                                 f"({str(err).strip().splitlines()[0]})") from err
    model = PeftModel.from_pretrained(base, prepared.target.path, is_trainable=False)
    model.eval()  # no LoRA or attention dropout while training the nets
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(prepared.target_model_dir)
    except (OSError, ValueError) as err:
        raise AdapterFormatError(f"target model {prepared.target_model_dir} has no usable tokenizer "
                                 f"({type(err).__name__}); save it into that folder with "
                                 f"`tokenizer.save_pretrained`") from err
    return model, tokenizer


def _encode_replay(examples, cfg: FusionConfig, tokenizer) -> tuple[list, int]:
    from .encoding import encode_replay

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoded = encode_replay(examples, tokenizer, cfg.max_length)
    truncated = 0
    for w in caught:
        if "exceed max_length" in str(w.message):
            truncated = int(str(w.message).split()[0])
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return encoded, truncated
