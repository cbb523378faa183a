# SPDX-License-Identifier: Apache-2.0
"""What a fusion did, as one typed, frozen value: `FusionReport`.

It is built once, by `build_report` at the end of `pipeline.fit`; the later steps add what they know with
`dataclasses.replace` (the output writer its kind and config text, `--eval` its scores), never by mutation.
`fusion_report.json` is its serialisation (`to_json`), and `FusionReport.from_json` is the one parser of that file:
the card, `--eval`, `push` and `hf-heterofusion card` all read a report through it.

The open-ended sections (alignment plan, per-role statistics, teacher counts, ablation, evaluation, the config
itself) stay JSON mappings: their keys are produced by one stage each and read by the card's template.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hf_heterofusion import __version__
from hf_heterofusion.constants import REPORT_NAME
from hf_heterofusion.errors import AdapterFormatError, AdapterNotFoundError


if TYPE_CHECKING:
    from hf_heterofusion.method.adapters import LoraAdapter
    from hf_heterofusion.prepare import PreparedFusion

# Sections written only when they hold something (older reports and non-mergekit runs have no such key).
_OPTIONAL_KEYS = ("ablation", "mergekit")


@dataclass(frozen=True)
class TargetReport:
    model: str | None
    adapter: str | None
    model_revision: str | None = None
    adapter_revision: str | None = None
    family: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    rank: int | None = None
    lora_alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    license: str | None = None


@dataclass(frozen=True)
class SourceReport:
    """One source adapter: as read (`original_rank`), as fused (`rank`, after SVD re-factoring) and its effect."""

    adapter: str | None
    revision: str | None = None
    base_model: str | None = None
    family: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    rank: int | None = None
    original_rank: int | None = None
    energy_kept: float | None = None
    lora_alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    weight: float = 1.0
    license: str | None = None
    contribution: float | None = None  # attention share of its tokens
    ablation: Mapping[str, Any] | None = None  # loss change when it is masked out


@dataclass(frozen=True)
class TrainingReport:
    replay_examples: int = 0
    truncated: int = 0
    optimizer_steps: int = 0
    micro_steps: int = 0
    resumed_from_step: int | None = None
    losses: tuple[Mapping[str, float], ...] = ()
    final_loss: float | None = None
    replay_balance: Mapping[str, Any] | None = None
    # Rows with a teacher's token signal or the anchor's distribution, and how the teachers' tokens aligned.
    signals: Mapping[str, Any] | None = None
    # `max_steps: auto`: the held-out curve and the step whose adapter was kept.
    budget: Mapping[str, Any] | None = None
    # The loss over the last tenth of the steps against its lowest stretch of that length (`loss_stretches`).
    loss_stretch: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class FusionReport:
    hf_heterofusion_version: str
    created: str
    seed: int | None
    config: Mapping[str, Any]
    target: TargetReport
    sources: tuple[SourceReport, ...]
    alignment: Mapping[str, Any] = field(default_factory=dict)
    block_size: int | None = None
    modules: Mapping[str, Any] = field(default_factory=dict)
    roles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    hypernet_parameters_total: int | None = None
    training: TrainingReport = field(default_factory=TrainingReport)
    timings: Mapping[str, float] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    evaluation: Mapping[str, Any] | None = None
    teacher: Mapping[str, Any] | None = None
    ablation: Mapping[str, Any] | None = None
    config_yaml: str | None = None
    output_kind: str = "adapter"
    mergekit: Mapping[str, Any] | None = None

    # ------------------------------------------------------------------------------------------ serialisation

    def to_json(self) -> dict[str, Any]:
        """The `fusion_report.json` mapping (tuples as lists; empty optional sections left out)."""
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        for key in _OPTIONAL_KEYS:
            if data[key] is None:
                del data[key]
        for source in data["sources"]:
            if source["ablation"] is None:
                del source["ablation"]
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FusionReport:
        """Parse a report mapping; unknown keys are ignored, missing ones take their defaults."""
        if not isinstance(data, Mapping):
            raise AdapterFormatError(f"a fusion report must be a JSON object, not {type(data).__name__}")
        target = _build(TargetReport, data.get("target") or {})
        sources = tuple(_build(SourceReport, s) for s in data.get("sources") or () if isinstance(s, Mapping))
        training = _build(TrainingReport, data.get("training") or {})
        return _build(cls, {**data, "target": target, "sources": sources, "training": training})

    @classmethod
    def load(cls, out_dir: Path | str) -> FusionReport:
        path = Path(out_dir) / REPORT_NAME
        if not path.is_file():
            raise AdapterNotFoundError(f"{Path(out_dir)} has no {REPORT_NAME}; pass a finished fusion output folder")
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AdapterFormatError(f"{path} is not valid JSON ({err}); re-run the fusion to write it again") from None


def _build(cls, data: Mapping[str, Any]):
    names = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in names:
            continue
        if isinstance(value, list):  # JSON arrays become tuples: the value stays immutable at the top level
            value = tuple(value)
        values[key] = value
    missing = [n for n, f in names.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    for name in missing:  # a sparse or older report: required fields read as unknown
        values[name] = None
    return cls(**values)


# ------------------------------------------------------------------------------------------------ building


def adapter_license(adapter_dir: Path) -> str | None:
    """The `license:` of an adapter's model card front matter, if it has one."""
    readme = adapter_dir / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return None
    return meta.get("license") if isinstance(meta, dict) else None


def versions() -> dict[str, str]:
    out = {"hf_heterofusion": __version__}
    for pkg in ("torch", "transformers", "peft", "mergekit", "huggingface_hub", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def source_reports(prepared: PreparedFusion, contribution: Sequence[float] | None = None) -> tuple[SourceReport, ...]:
    """Each source as read and as fused: `original_rank` is the adapter's own, `rank` the one it was fused at."""
    out = []
    for i, (spec, raw, matched) in enumerate(zip(prepared.config.sources, prepared.raw_sources, prepared.sources)):
        out.append(SourceReport(
            adapter=spec.adapter, revision=prepared.source_revisions[i],
            base_model=spec.base_model or raw.config.get("base_model_name_or_path"), family=raw.family,
            num_layers=raw.num_layers, hidden_size=raw.hidden_size, rank=_module_rank(matched), original_rank=raw.rank,
            energy_kept=round(prepared.energy_kept[i], 6), lora_alpha=raw.lora_alpha,
            target_modules=tuple(raw.target_modules), roles=tuple(raw.roles), weight=spec.weight,
            license=adapter_license(raw.path),
            contribution=round(contribution[i], 6) if contribution is not None else None,
        ))
    return tuple(out)


def _module_rank(adapter: LoraAdapter) -> int:
    """The rank the modules really have (re-factoring changes the factors, not the adapter's config)."""
    return adapter.modules[0].rank if adapter.modules else adapter.rank


BLOW_UP_RATIO, BLOW_UP_MARGIN = 3.0, 0.1  # `loss_stretches`: last stretch > ratio x lowest + margin


def loss_stretches(losses: Sequence[Mapping[str, float]]) -> dict[str, Any] | None:
    """Mean loss of the last tenth of the steps and of the lowest stretch of as many consecutive steps.

    One step's loss is one batch's and jumps between batches; a stretch's mean does not. A fit that blew up (benchmark
    v10: 0.2 for a stretch, then 9 and never back) ends far above its lowest stretch; a healthy one ends near it.
    None under 10 steps.
    """
    if len(losses) < 10:
        return None
    width = len(losses) // 10
    values = [float(r["loss"]) for r in losses]
    means = [sum(values[i:i + width]) / width for i in range(len(values) - width + 1)]
    # a NaN or inf stretch is never the lowest, and a fit that ends in one blew up whatever came before
    low = min(range(len(means)), key=lambda i: means[i] if math.isfinite(means[i]) else math.inf)
    return {"steps": width, "last": means[-1], "lowest": means[low],
            "lowest_from": int(losses[low]["step"]), "lowest_to": int(losses[low + width - 1]["step"]),
            # set by hand; of benchmark v10's 22 fits only the blown-up one crossed it (3.31 against 0.18), the
            # other 21 ended at 1.0-1.6x their lowest stretch
            "blew_up": not math.isfinite(means[-1]) or means[-1] > BLOW_UP_RATIO * means[low] + BLOW_UP_MARGIN}


def build_report(prepared: PreparedFusion, stats: dict, result, n_examples: int, truncated: int, timings: dict, *,
                 teacher: Mapping[str, Any] | None = None,
                 replay_balance: Mapping[str, Any] | None = None,
                 signals: Mapping[str, Any] | None = None,
                 budget: Mapping[str, Any] | None = None) -> FusionReport:
    """The report of a finished fit (before its output is written): `stats` from the export pass, `result` the
    `TrainResult` (None when nothing was trained)."""
    cfg, target = prepared.config, prepared.target
    params = prepared.hypernet_parameters()
    nets = cfg.trainer != "lora"  # `trainer: lora` builds no nets: no per-role sizes, scales or attention to report
    roles = {}
    for g in prepared.groups if nets else ():
        roles[g.role] = {
            "rank": g.rank, "layers": len(g.matched),
            "target_tokens": sum(b.target_tokens.shape[0] * b.target_tokens.shape[1] for b in g.buckets),
            "source_tokens": sum(b.source_tokens.shape[0] * b.source_tokens.shape[1] for b in g.buckets),
            "parameters": params[g.role], **stats["roles"].get(g.role, {}),
        }
    losses = tuple(result.losses) if result else ()
    return FusionReport(
        hf_heterofusion_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        seed=cfg.seed,
        config=cfg.model_dump(mode="json"),
        target=TargetReport(
            model=cfg.target_model, adapter=cfg.target_adapter,
            model_revision=prepared.target_revisions.get("model"),
            adapter_revision=prepared.target_revisions.get("adapter"),
            family=prepared.target_model_config.get("model_type"), num_layers=target.num_layers,
            hidden_size=prepared.target_model_config.get("hidden_size"), rank=target.rank,
            lora_alpha=target.lora_alpha, target_modules=tuple(target.target_modules),
            license=adapter_license(target.path),
        ),
        sources=source_reports(prepared, stats["contribution"] if nets else None),
        alignment=prepared.plan.to_dict(),
        block_size=prepared.block_size,
        modules={"aligned": sum(len(g.matched) for g in prepared.groups), "untouched": list(prepared.untouched)},
        roles=roles,
        hypernet_parameters_total=sum(params.values()) if nets else None,
        training=TrainingReport(
            replay_examples=n_examples, truncated=truncated,
            optimizer_steps=result.optimizer_steps if result else 0,
            micro_steps=result.micro_steps if result else 0,
            resumed_from_step=result.resumed_from if result else None,
            losses=losses, final_loss=losses[-1]["loss"] if losses else None, replay_balance=replay_balance,
            signals=signals, budget=budget, loss_stretch=loss_stretches(losses),
        ),
        timings={k: round(v, 3) for k, v in timings.items()},
        versions=versions(),
        teacher=teacher,
    )


def with_ablation(report: FusionReport, ablation: Mapping[str, Any], seconds: float) -> FusionReport:
    """The report with the per-source ablation: the section, each source's effect and its time."""
    sources = tuple(dataclasses.replace(s, ablation=effect) for s, effect in zip(report.sources, ablation["sources"]))
    return dataclasses.replace(report, ablation=ablation, sources=sources,
                               timings={**report.timings, "ablation_s": round(seconds, 3)})


__all__ = [
    "FusionReport",
    "SourceReport",
    "TargetReport",
    "TrainingReport",
    "adapter_license",
    "build_report",
    "source_reports",
    "versions",
    "with_ablation",
]
