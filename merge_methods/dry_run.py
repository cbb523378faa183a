# SPDX-License-Identifier: Apache-2.0
"""What `hf-heterofusion check` (= `merge --dry-run`) prints: the fusion as planned, before any weights load.

It reads only configs, adapters and safetensors headers (`prepare.prepare`), so a config that cannot run fails
here in seconds with the same one-line error the real run would give after loading the target model.
The memory and time figures are rough estimates from parameter counts and labelled as such.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.constants import MERGED_SUBDIR, ROLES
from hf_heterofusion.data.safetensors_header import checkpoint_header
from hf_heterofusion.inputs import resolve_input
from hf_heterofusion.outputs.memory import check_fits
from hf_heterofusion.outputs.report import source_reports
from hf_heterofusion.outputs.sizing import suggestion, target_parameters
from hf_heterofusion.prepare import PreparedFusion, prepare

from .yaml_config import MergeYaml
from .yaml_trained import TrainedJob


# Sustained training throughput assumed by the time estimate (fp32 CPU with a few cores; one modern GPU).
CPU_FLOPS = 5e10
GPU_FLOPS = 1e14
_LAYER_RE = re.compile(r"\.(layers|h|blocks|layer)\.(\d+)\.")


def describe_trained(job: TrainedJob, *, out_dir: str | None = None) -> str:
    """The dry-run report of a trained-mode config; raises the run's `HeteroFusionError` when it cannot run."""
    return describe_fusion(job.config, lock=job.lock, out_dir=out_dir, dtype=job.dtype, out_dtype=job.out_dtype)


def describe_fusion(cfg: FusionConfig, *, lock: Path | None, out_dir: str | None = None, dtype: str | None = None,
                    out_dtype: str | None = None) -> str:
    """The dry-run report of a fusion, from either config format (`check`, `merge --dry-run`, `fuse --dry-run`)."""
    prepared = prepare(cfg, lock=lock)
    replay_count = _replay_examples(cfg.replay, lock) if cfg.replay else 0
    if cfg.output in ("merged", "both"):
        from .planner import lora_folds

        lora_folds(cfg, set(checkpoint_stats(prepared.target_model_dir)[2]), lock=lock)
    lines = ["HeteroFusion dry run (configs and adapter headers only: no model weights loaded, nothing written)", ""]
    lines += _inputs(prepared)
    lines += ["", str(prepared.plan), ""]
    lines += _modules(prepared)
    lines += [""] + _hypernet(prepared)
    lines += [""] + _estimates(prepared, replay_count)
    if prepared.teaching:
        lines += [""] + _teachers(prepared)
    lines += [""] + _outputs(cfg.output, out_dir, dtype, out_dtype)
    return "\n".join(lines)


def _teachers(prepared: PreparedFusion) -> list[str]:
    """Which sources teach, with how many prompts, and a rough labelling time (2 FLOPs per parameter and token)."""
    cfg = prepared.config
    lines = [f"teacher stage (`teacher: sources`{', placebo: adapters with B = 0' if cfg.teacher_placebo else ''}; "
             f"greedy, batches of {cfg.teacher_batch_size}, at most {cfg.teacher_max_new_tokens} new tokens)"]
    total_cpu = total_gpu = 0.0
    for plan in prepared.teaching:
        params = checkpoint_stats(plan.base_dir)[0]
        chars = [len(p.prompt if isinstance(p.prompt, str) else " ".join(m["content"] for m in p.prompt))
                 for p in plan.prompts] or [200]
        prompt_tokens = sum(chars) / len(chars) / 4  # ~4 characters per token
        rows = len(plan.prompts) + plan.synthesize
        # labelling: prompt + answer per row; synthesis: about two few-shot queries of ~5 prompts per kept prompt
        flops = 2 * params * (rows * (prompt_tokens + cfg.teacher_max_new_tokens)
                              + 2 * plan.synthesize * 6 * prompt_tokens)
        total_cpu, total_gpu = total_cpu + flops / CPU_FLOPS, total_gpu + flops / GPU_FLOPS
        lines.append(f"  {plan.describe()}")
        lines.append(f"      teacher {params:,} parameters; {rows} rows to label: {_seconds(flops / CPU_FLOPS)} CPU / "
                     f"{_seconds(flops / GPU_FLOPS)} GPU (cached rows cost nothing)")
    trained = "the anchor adapter (`trainer: lora`)" if cfg.trainer == "lora" else "the transfer nets"
    lines.append(f"  labelling in all {_seconds(total_cpu)} CPU / {_seconds(total_gpu)} GPU; the kept rows join the "
                 f"replay set that trains {trained}")
    return lines


def describe_data_free(doc: MergeYaml, config) -> str:
    """The dry-run report of a data-free config (mergekit plans it; the kernel runs per tensor)."""
    from .heterofusion import DEFAULT_DENSITY

    params = config.parameters or {}
    lines = [
        "heterofusion, data-free mode: `base_model` has no anchor adapter, so mergekit's planner runs the kernel on "
        "every tensor (SVD-gated denoising of each input's delta to the base, then a weighted average)",
        f"base model: {config.base_model or '(none: weighted average of the inputs)'}",
        "inputs:",
    ]
    for entry in config.models or []:
        weight = (entry.parameters or {}).get("weight", params.get("weight", 1.0))
        lines.append(f"  {entry.model}  (weight {weight})")
    lines.append(f"density {params.get('density', DEFAULT_DENSITY)}, normalize {params.get('normalize', True)}")
    lines.append("output: a merged checkpoint written by mergekit (LoRA inputs are merged into a cache first)")
    return "\n".join(lines)


def describe_other(doc: MergeYaml, config) -> str:
    models = len(config.referenced_models())
    return (f"merge_method `{config.merge_method}`: a plain mergekit config ({models} referenced models); "
            f"`hf-heterofusion merge` runs it unchanged with mergekit's planner. The YAML is valid.")


# ------------------------------------------------------------------------------------------------ sections


def _inputs(prepared: PreparedFusion) -> list[str]:
    cfg, target, mc = prepared.config, prepared.target, prepared.target_model_config
    lines = [
        f"target   {mc.get('model_type')}: {target.num_layers} layers, hidden {mc.get('hidden_size')}, "
        f"rank {target.rank}, lora_alpha {target.lora_alpha:g}, {len({m.module for m in target.modules})} LoRA modules",
        f"         model {cfg.target_model}",
        f"         anchor adapter {cfg.target_adapter}",
        "sources",
    ]
    for k, rep in enumerate(source_reports(prepared)):
        rank = f"rank {rep.original_rank}"
        if rep.original_rank != rep.rank:
            rank += f" -> {rep.rank} (re-factored by SVD, {rep.energy_kept:.1%} of the energy kept)"
        roles = " ".join(r for r in ROLES if r in rep.roles) or "none"
        lines.append(f"  [{k}] {rep.family or 'unknown family'}: {rep.num_layers} layers, "
                     f"hidden {rep.hidden_size}, {rank}, weight {rep.weight:g}, roles {roles}")
        lines.append(f"      {rep.adapter}")
    return lines


def _modules(prepared: PreparedFusion) -> list[str]:
    """Per target layer: which source layer feeds it, and with which roles; then the untouched modules."""
    feeds: dict[int, dict[int, tuple[int, set[str]]]] = defaultdict(dict)
    reached: set[int] = set()
    for group in prepared.groups:
        for mm in group.matched:
            for k, unit in mm.sources:
                layer, roles = feeds[mm.target.layer].get(k, (unit.layer, set()))
                roles.add(mm.target.role)
                feeds[mm.target.layer][k] = (layer, roles)
                reached.add(k)
    aligned = sum(len(g.matched) for g in prepared.groups)
    lines = [f"target modules receiving sources ({aligned} role units; target layer <- [source] layer: roles)"]
    for layer in sorted(feeds):
        parts = []
        for k in sorted(feeds[layer]):
            s_layer, roles = feeds[layer][k]
            parts.append(f"[{k}] L{s_layer}: {' '.join(r for r in ROLES if r in roles)}")
        lines.append(f"  layer {layer} <- " + " | ".join(parts))
    untouched = prepared.untouched
    lines.append(f"untouched target modules ({len(untouched)}, copied unchanged)" + (":" if untouched else ": none"))
    lines += [f"  {line}" for line in _compress_modules(untouched)]
    for k in range(len(prepared.sources)):
        if k not in reached:
            lines.append(f"warning: source [{k}] reaches no target module (no shared role in an aligned layer); "
                         f"it does not contribute")
    return lines


def _hypernet(prepared: PreparedFusion) -> list[str]:
    params = prepared.hypernet_parameters()
    total = sum(params.values())
    lines = [f"hypernet parameters (one transfer net per role; block size {prepared.block_size}, "
             f"embed_dim {prepared.config.embed_dim})"]
    lines += [f"  {role:<5} {count:>15,}" for role, count in params.items()]
    lines.append(f"  {'total':<5} {total:>15,}")
    target = target_parameters(prepared)
    if target:
        lines.append(f"  target model {target:,} parameters: the hypernets are {total / target:.2g}x its size")
        if total > target:
            lines.append(f"warning: the transfer nets are larger than the target model; {suggestion(prepared, target)}")
    return lines


def _estimates(prepared: PreparedFusion, replay_count: int) -> list[str]:
    from hf_heterofusion.method.train import lr_schedule_steps

    cfg = prepared.config
    n_params, n_bytes, _ = checkpoint_stats(prepared.target_model_dir)
    hyper = sum(prepared.hypernet_parameters().values())
    tokens = cfg.batch_size * cfg.max_length
    memory = check_fits(prepared, "cuda" if _cuda() else "cpu")  # exit 2 in `check` when it cannot fit
    _, steps = lr_schedule_steps(replay_count, cfg, 1) if replay_count else (0, 0)
    # Per optimiser step: frozen target forward + backward to the patched B' (~4 FLOPs per parameter and token),
    # plus the nets' forward + backward (~6 FLOPs per net parameter and block token) once per micro-batch.
    net_tokens = {g.role: sum(b.target_tokens.shape[0] * (b.target_tokens.shape[1] + b.source_tokens.shape[1])
                              for b in g.buckets) for g in prepared.groups}
    per_role = prepared.hypernet_parameters()
    net_flops = sum(6 * per_role[r] * net_tokens[r] for r in net_tokens)
    passes = 1 if cfg.amortize_nets else cfg.gradient_accumulation_steps
    step_flops = cfg.gradient_accumulation_steps * 4 * n_params * tokens + passes * net_flops
    lines = [
        "estimates (rough, from parameter counts; not measured)",
        f"  memory: hypernets {hyper:,} params; target {n_params:,} params ({_bytes(n_bytes)} on disk, "
        f"{cfg.torch_dtype or 'float32'} for training); batch {cfg.batch_size} x {cfg.max_length} tokens",
        f"  {memory.line('fit')}",
    ]
    if replay_count:
        lines.append(f"  steps: {replay_count} replay examples, {cfg.epochs} epoch(s), accumulation "
                     f"{cfg.gradient_accumulation_steps} -> {steps} optimiser steps"
                     + (f" (capped by max_steps {cfg.max_steps})" if isinstance(cfg.max_steps, int) else
                        " (max_steps auto: the best of 8 scored points)" if cfg.max_steps == "auto" else ""))
    else:
        lines.append("  steps: 0 (no replay set: the export equals the anchor adapter)")
    per_step_cpu, per_step_gpu = step_flops / CPU_FLOPS, step_flops / GPU_FLOPS
    lines.append(f"  time per optimiser step: {_seconds(per_step_cpu)} on CPU ({CPU_FLOPS:.0e} FLOP/s), "
                 f"{_seconds(per_step_gpu)} on one GPU ({GPU_FLOPS:.0e} FLOP/s), at most {tokens} tokens per "
                 f"micro-batch; whole fit {_seconds(per_step_cpu * steps)} CPU / {_seconds(per_step_gpu * steps)} GPU")
    return lines


def _outputs(kind: str, out_dir: str | None, dtype: str | None, out_dtype: str | None) -> list[str]:
    root = out_dir or "OUT_DIR"
    dtypes = f" (dtype {dtype or 'as stored'}, out_dtype {out_dtype or 'as computed'})"
    adapter = f"  {root}: PEFT adapter (adapter_config.json, adapter_model.safetensors) + report, plots, configs, card"
    merged_at = f"{root}/{MERGED_SUBDIR}" if kind == "both" else root
    merged = (f"  {merged_at}: merged checkpoint (config, tokenizer, sharded safetensors via mergekit's writer)"
              f"{dtypes} + report, configs, card")
    body = {"adapter": [adapter], "merged": [merged], "both": [adapter, merged]}[kind]
    return [f"output `{kind}`"] + body


# ------------------------------------------------------------------------------------------------ helpers


def checkpoint_stats(model_dir: Path) -> tuple[int, int, list[str]]:
    """(parameters, bytes, tensor names) of a safetensors checkpoint, from its headers alone."""
    header = checkpoint_header(model_dir)
    return sum(t.numel for t in header.values()), sum(t.nbytes for t in header.values()), list(header)


def _replay_examples(replay: str, lock: Path | None) -> int:
    path, _ = resolve_input(replay, what="replay file", lock=lock)
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _compress_modules(modules: tuple[str, ...]) -> list[str]:
    """`model.layers.*.mlp.down_proj: layers 0-2, 5` instead of one line per module."""
    by_pattern: dict[str, list[int]] = defaultdict(list)
    for module in modules:
        name = module.removeprefix("base_model.model.")
        match = _LAYER_RE.search(name)
        if match is None:
            by_pattern[name] = []
            continue
        pattern = name[: match.start()] + f".{match.group(1)}.*." + name[match.end():]
        by_pattern[pattern].append(int(match.group(2)))
    out = []
    for pattern, layers in sorted(by_pattern.items()):
        out.append(f"{pattern}: layers {_ranges(layers)}" if layers else pattern)
    return out


def _ranges(values: list[int]) -> str:
    values = sorted(set(values))
    runs: list[str] = []
    start = prev = values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(runs)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _seconds(s: float) -> str:
    if s < 0.001:
        return "<1 ms"
    if s < 1:
        return f"~{s * 1000:.0f} ms"
    if s < 120:
        return f"~{s:.0f} s"
    if s < 7200:
        return f"~{s / 60:.0f} min"
    return f"~{s / 3600:.1f} h"


__all__ = ["checkpoint_stats", "describe_data_free", "describe_fusion", "describe_other", "describe_trained"]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
