# SPDX-License-Identifier: Apache-2.0
"""The trained `heterofusion` mode as a mergekit task graph.

mergekit's `MergePlanner` cannot plan this method: it uses one architecture for every input, needs equal depths
and rejects unequal shapes, and in 0.1.5 a merge method is a pure per-tensor kernel. Its graph engine is generic,
though, so the trained mode builds its own graph from mergekit's parts:

    FitHeteroFusion                              ONE task: pipeline.fit (align, block, train the nets, export pass)
      |-> WriteFusedAdapter                      PEFT adapter dir (export.write_adapter), if output adapter/both
      |-> FoldLoraIntoWeight(LoadTensor(w))      w + scale * B' @ A for every LoRA module of the target
            |-> SaveTensor -> FinalizeModel      through mergekit's TensorWriter (shards, safetensors, dtype)
    LoadTensor(w) -> SaveTensor                  every other tensor of the target checkpoint, copied

Only the target base is read through mergekit's loader (`LoadTensor`, lazily, one tensor at a time, with
`dtype:` applied at load); the source bases are never loaded and the adapters are read by `pipeline.fit`.
`--out-shard-size`, `--safe-serialization`, `--async-write`, `--write-threads`, `--clone-tensors`, `--device`,
`--cuda`, `--read-to-gpu` and `--low-cpu-memory` act as in `mergekit-yaml`; `out_dtype:` casts every written
tensor. The whole output (adapter, merged model, report, configs, card) is written into a staging folder that
replaces `OUT_DIR` only when complete (`files.staged_output`), side files through `outputs.writer`.

Layouts (`parameters: {output: ...}`):

* `adapter`: OUT_DIR is the PEFT adapter (+ fusion_report.json, loss_curve.png, configs, README.md);
* `merged`: OUT_DIR is a full checkpoint (config, tokenizer, sharded safetensors) + the same side files;
* `both`: the adapter at OUT_DIR and the merged checkpoint at OUT_DIR/merged.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mergekit.common import ModelPath, ModelReference, dtype_from_name
from mergekit.graph import Executor, Task
from mergekit.io.tasks import FinalizeModel, LoaderCache, LoadTensor, SaveTensor, TensorWriterTask

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.constants import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, MERGED_SUBDIR, TOKENIZER_FILES
from hf_heterofusion.data.safetensors_header import LORA_KEY_RE, PEFT_PREFIX, checkpoint_files, file_shapes
from hf_heterofusion.errors import ConfigError
from hf_heterofusion.files import ensure_new_output, staged_output
from hf_heterofusion.method.adapters import peft_scaling
from hf_heterofusion.outputs.report import FusionReport
from hf_heterofusion.outputs.writer import OutputFiles, write_side_files
from hf_heterofusion.pipeline import FitResult

from .tasks import FitHeteroFusion, FoldLoraIntoWeight, WriteFusedAdapter, local_input


if TYPE_CHECKING:
    from mergekit.options import MergeOptions


LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class OutputLayout:
    adapter_dir: Path | None
    merged_dir: Path | None


def output_layout(kind: str, root: Path) -> OutputLayout:
    """Where each part goes: see the module docstring."""
    if kind == "adapter":
        return OutputLayout(root, None)
    if kind == "merged":
        return OutputLayout(None, root)
    return OutputLayout(root, root / MERGED_SUBDIR)


@dataclass(frozen=True)
class LoraFold:
    """One target LoRA module, as the merged export folds it: its factor keys and PEFT's scaling."""

    module: str
    weight_name: str
    a_key: str
    b_key: str
    scale: float


def lora_folds(cfg: FusionConfig, weight_names: set[str] | None = None, *,
               lock: str | Path | None = None) -> tuple[LoraFold, ...]:
    """The LoRA modules of the anchor adapter (the fused adapter has the same keys), checked for folding.

    Reads only `adapter_config.json` and the safetensors header. Raises `ConfigError` for anything a merged
    checkpoint cannot hold (embedding LoRA, `modules_to_save`, a module with no base weight).
    """
    adapter_dir = local_input(cfg.target_adapter, "target adapter", lock)
    config = json.loads((adapter_dir / ADAPTER_CONFIG_NAME).read_text(encoding="utf-8"))
    weights = adapter_dir / ADAPTER_WEIGHTS_NAME
    if not weights.is_file():
        raise ConfigError(f"`output: {cfg.output}` needs a safetensors anchor adapter; {adapter_dir} has no "
                          f"{ADAPTER_WEIGHTS_NAME}")
    shapes = file_shapes(weights)
    folds = []
    for key in sorted(shapes):
        match = LORA_KEY_RE.match(key)
        if match is None:
            raise ConfigError(f"`output: {cfg.output}` cannot fold the anchor's tensor `{key}` into the target "
                              f"(only LoRA A/B factors of linear layers); use `output: adapter`")
        if match["factor"] == "B":
            continue
        module, suffix = match["module"], match["adapter"] or ""
        b_key = f"{module}.lora_B{suffix}.weight"
        if b_key not in shapes:
            raise ConfigError(f"anchor adapter {adapter_dir}: `{key}` has no matching `{b_key}`")
        name = module.removeprefix(PEFT_PREFIX) + ".weight"
        if weight_names is not None and name not in weight_names:
            raise ConfigError(f"`output: {cfg.output}` cannot fold `{module}`: the target checkpoint has no `{name}`; "
                              f"use `output: adapter`")
        rank = shapes[key][0]
        folds.append(LoraFold(module, name, key, b_key, peft_scaling(config, module, rank)))
    return tuple(folds)


@dataclass(frozen=True)
class FusionGraph:
    fit: FitHeteroFusion
    targets: tuple[Task, ...]
    tensor_count: int


def plan_fusion(cfg: FusionConfig, layout: OutputLayout, options: MergeOptions, *, dtype: str | None,
                out_dtype: str | None, work_dir: Path | None, lock: str | Path | None = None) -> FusionGraph:
    """Build the task graph of the module docstring for one output layout."""
    if dtype and cfg.torch_dtype is None:  # YAML `dtype:` also sets the frozen target's dtype during the fit
        name = str(dtype_from_name(dtype)).removeprefix("torch.")
        if name in ("float32", "bfloat16", "float16"):
            cfg = cfg.model_copy(update={"torch_dtype": name})
    fit_task = FitHeteroFusion(config_json=cfg.model_dump_json(), lock=str(lock) if lock else None,
                               work_dir=str(work_dir) if work_dir else None, device=options.device,
                               show_progress=not options.quiet)
    targets: list[Task] = [fit_task]
    count = 0
    if layout.adapter_dir is not None:
        targets.append(WriteFusedAdapter(fit=fit_task, out_path=str(layout.adapter_dir), out_dtype=out_dtype))
    if layout.merged_dir is not None:
        target = ModelReference(model=ModelPath(path=str(local_input(cfg.target_model, "target model", lock))))
        names = set(LoaderCache().get(target).index.tensor_paths)
        folds = {f.weight_name: f for f in lora_folds(cfg, names, lock=lock)}
        anchor_dir = local_input(cfg.target_adapter, "target adapter", lock)
        anchor_config = json.loads((anchor_dir / ADAPTER_CONFIG_NAME).read_text(encoding="utf-8"))
        fan_in_fan_out = bool(anchor_config.get("fan_in_fan_out"))
        writer = TensorWriterTask(out_path=str(layout.merged_dir), max_shard_size=options.out_shard_size,
                                  safe_serialization=options.safe_serialization, use_async=options.async_write,
                                  write_threads=options.write_threads)
        saves = []
        for name in sorted(names):
            load = LoadTensor(model=target, tensor=name, dtype=dtype,
                              device=options.device if options.read_to_gpu else None)
            fold = folds.get(name)
            tensor_task: Task = load if fold is None else FoldLoraIntoWeight(
                base=load, fit=fit_task, a_key=fold.a_key, b_key=fold.b_key, scale=fold.scale,
                fan_in_fan_out=fan_in_fan_out)
            saves.append(SaveTensor(tensor_name=name, tensor_task=tensor_task, writer_task=writer,
                                    clone=options.clone_tensors, dtype=out_dtype))
        targets.append(FinalizeModel(tensor_save_tasks=tuple(saves), writer_task=writer))
        count = len(saves)
    return FusionGraph(fit_task, tuple(targets), count)


# ------------------------------------------------------------------------------------------------ running


def run_trained_merge(cfg: FusionConfig, out_dir: str | Path, *, options: MergeOptions, config_source: str,
                      dtype: str | None = None, out_dtype: str | None = None, overwrite: bool = False,
                      lock: str | Path | None = None) -> FusionReport:
    """Fit and export one trained-mode `heterofusion` config; returns the fusion report.

    Args:
        cfg (`FusionConfig`): the fusion (from `yaml_config.trained_job`).
        out_dir (`str` or `Path`): the output folder; see the module docstring for the layouts.
        options (`MergeOptions`): mergekit's options (shards, device, dtype handling, card, tokenizer).
        config_source (`str`): the YAML text, copied as `mergekit_config.yml` and shown in the card.
        dtype (`str`, *optional*): YAML `dtype:`, the target's weights are cast to it at load (merged export).
        out_dtype (`str`, *optional*): YAML `out_dtype:`, every written tensor is cast to it.
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty `out_dir`.
        lock (`str` or `Path`, *optional*): the `heterofusion.lock.json` of `hf-heterofusion pull` (Hub inputs).

    Raises:
        `OutputExistsError`: `out_dir` is not empty and `overwrite` is off (checked before training).
        `ConfigError`: the merged export cannot fold the anchor (checked before training).
    """
    out_dir = Path(out_dir)
    ensure_new_output(out_dir, overwrite)  # fail before the training, not after
    if options.multi_gpu:
        LOG.warning("--multi-gpu: the fit is one task every export task depends on, so the graph runs on one "
                    "device (training itself can use several GPUs through `accelerate launch`)")
    LoaderCache().setup(options=options)
    work_dir = out_dir.parent / f".{out_dir.name}.heterofusion-work"  # outside the stage: resumable checkpoints
    with staged_output(out_dir, overwrite=overwrite, needs_bytes=_output_bytes(cfg, lock)) as stage:
        layout = output_layout(cfg.output, stage)
        graph = plan_fusion(cfg, layout, options, dtype=dtype, out_dtype=out_dtype, work_dir=work_dir, lock=lock)
        executor = Executor(list(graph.targets), math_device=options.device or "cpu",
                            storage_device=(options.device or "cpu") if options.low_cpu_memory else "cpu")
        result: FitResult | None = None
        # The fit is one task that runs for minutes among ~100 instant ones: mergekit's per-task bar would show an
        # ETA extrapolated from task counts. Training has its own per-step bar (train.py), so this one stays off.
        for task, value in executor.run(quiet=True, desc="HeteroFusion"):
            if isinstance(task, FitHeteroFusion):
                result = value
        if result is None:  # pragma: no cover - the fit task is always a target
            raise RuntimeError("the fit task produced no result")
        report = replace(result.report, config_yaml=config_source,
                         mergekit={"dtype": dtype, "out_dtype": out_dtype, "layout": cfg.output,
                                   "options": options.model_dump(mode="json")})
        if layout.merged_dir is not None:
            _write_merged_files(local_input(cfg.target_model, "target model", lock), layout.merged_dir, options,
                                dtype=dtype, out_dtype=out_dtype)
        for folder, kind in ((layout.adapter_dir, "adapter"), (layout.merged_dir, "merged")):
            if folder is not None:
                write_side_files(folder, OutputFiles(replace(report, output_kind=kind), cfg.to_yaml(),
                                                     mergekit_yaml=config_source, teacher=result.teacher,
                                                     card=options.write_model_card))
    shutil.rmtree(work_dir, ignore_errors=True)
    return report


def _output_bytes(cfg: FusionConfig, lock: str | Path | None) -> int:
    """About what the output needs on disk: the adapter (as big as the anchor's) and/or the target checkpoint."""
    files = []
    if cfg.output in ("adapter", "both"):
        files.append(local_input(cfg.target_adapter, "target adapter", lock) / ADAPTER_WEIGHTS_NAME)
    if cfg.output in ("merged", "both"):
        files.extend(checkpoint_files(local_input(cfg.target_model, "target model", lock)))
    return sum(f.stat().st_size for f in files if f.is_file())


def _write_merged_files(source: Path, folder: Path, options: MergeOptions, *, dtype: str | None,
                        out_dtype: str | None) -> None:
    """config.json (dtype updated), generation config and, with `--copy-tokenizer`, the target's tokenizer."""
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    chosen = out_dtype or dtype
    if chosen:
        name = str(dtype_from_name(chosen)).removeprefix("torch.")
        config["dtype"] = name
        if "torch_dtype" in config:
            config["torch_dtype"] = name
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    files = ("generation_config.json", *(TOKENIZER_FILES if options.copy_tokenizer else ()))
    for name in files:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)


__all__ = [
    "FitHeteroFusion",
    "FoldLoraIntoWeight",
    "FusionGraph",
    "LoraFold",
    "OutputLayout",
    "WriteFusedAdapter",
    "lora_folds",
    "output_layout",
    "peft_scaling",
    "plan_fusion",
    "run_trained_merge",
]
