# SPDX-License-Identifier: Apache-2.0
"""Stage 4b (beyond the paper, SPEC 2.10): source experts as teachers.

The faithful method only learns from labelled replay rows: its decoder starts at zero, so every predicted update is
built from replay-loss gradients, and a skill that the replay set does not label cannot reach the target. Here each
*teaching* source expert (its base model + its LoRA adapter, in its own tokenizer and prompt format) answers
prompts of its task, and its filtered answers join the replay set that trains the target (Trans-LoRA's recipe,
arXiv 2405.17258, across families). The data flow of this stage::

    plan_teaching(cfg, replay)     which sources teach, their prompts (given / tagged in the replay) and seeds
        -> per source: load teacher -> synthesize (optional) -> label (greedy, batched) -> filter -> free
    TeacherResult                  kept rows with provenance + per-source counts for the report and the card

Labelled rows are cached by content (teacher base and adapter bytes or pinned revisions, prompt, generation
settings) in `$HF_HETEROFUSION_CACHE/teacher`, batch by batch, so a rerun loads no teacher and a killed run resumes.
Under `accelerate launch` the batches are dealt to processes round-robin and gathered, so N processes give the
rows of one.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import FusionConfig
from .errors import AdapterFormatError, ConfigError, ReplayDataError
from .replay import Prompt, ReplayData, ReplayExample, read_prompts
from .teacher_filters import FILTERS, drop_reason


logger = logging.getLogger(__name__)

TEACHER_REPLAY_NAME = "teacher_replay.jsonl"
Origin = Literal["given", "replay", "synthesized"]
LOADS = {"count": 0}  # teachers loaded in this process: tests assert that a cached rerun loads none


def cache_root() -> Path:
    return Path(os.environ.get("HF_HETEROFUSION_CACHE") or Path.home() / ".cache" / "hf_heterofusion")


# ------------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class TeacherPrompt:
    prompt: Prompt
    origin: Origin
    where: str  # `file:line`, or `synthesized #i`


@dataclass(frozen=True)
class TeacherPlan:
    """One teaching source, decided before any model is loaded."""

    index: int
    name: str
    base: str  # as the user wrote it (path or Hub id)
    base_dir: Path
    base_revision: str | None
    adapter_dir: Path
    adapter_revision: str | None
    prompts: tuple[TeacherPrompt, ...]  # given + tagged in the replay, in file order
    seeds: tuple[Prompt, ...]  # few-shot material for `synthesize`
    synthesize: int
    prompt_format: str

    def describe(self) -> str:
        given = sum(p.origin == "given" for p in self.prompts)
        return (f"source {self.index} `{self.name}` teaches from {self.base}: {given} given prompts, "
                f"{len(self.prompts) - given} tagged in the replay, {self.synthesize} to synthesize "
                f"(from {len(self.seeds)} seeds)")


def source_names(cfg: FusionConfig) -> list[str]:
    """Each source's name for `"source"` tags: `name:`, else its adapter folder's (or repo's) last part."""
    return [s.name or s.adapter.rstrip("/").split("@")[0].rsplit("/", 1)[-1] for s in cfg.sources]


def plan_teaching(cfg: FusionConfig, replay: ReplayData | None, *, lock: str | Path | None = None,
                  adapter_dirs: Sequence[tuple[Path, str | None]] = ()) -> tuple[TeacherPlan, ...]:
    """Which sources teach and with what; every input problem is a one-line error here, before any compute."""
    names = source_names(cfg)
    tagged: dict[int, list[TeacherPrompt]] = {i: [] for i in range(len(cfg.sources))}
    seeds: dict[int, list[Prompt]] = {i: [] for i in range(len(cfg.sources))}
    for item in (replay.seeds if replay else ()):
        seeds[_source_index(item.source, names, item.where)].append(item.prompt)
    for item in (replay.tagged if replay else ()):
        tagged[_source_index(item.source, names, item.where)].append(TeacherPrompt(item.prompt, "replay", item.where))
    wants = [i for i, s in enumerate(cfg.sources) if s.prompts or s.synthesize or tagged[i]]
    if cfg.teacher == "none":
        if wants:
            s = cfg.sources[wants[0]]
            what = "`prompts`" if s.prompts else "`synthesize`" if s.synthesize else "replay rows tagged for it"
            raise ConfigError(f"source `{names[wants[0]]}` has {what} but `teacher` is `none`; set `teacher: sources` "
                              f"to let it label them (or remove them)")
        return ()
    if not wants:
        raise ConfigError("`teacher: sources` but no source has anything to label; give a source `prompts: FILE`, "
                          "`synthesize: N`, or tag replay rows with `\"source\": NAME` and no response")
    from .pipeline import resolve_input

    plans = []
    for i in wants:
        spec, name = cfg.sources[i], names[i]
        if not spec.base_model:
            raise ConfigError(f"source `{name}` teaches but has no base model; write it as `source_base+adapter` "
                              f"(mergekit YAML) or give it `base_model:` (its adapter alone cannot generate)")
        base_dir, base_rev = resolve_input(spec.base_model, what=f"base model of source `{name}`", lock=lock)
        adapter_dir, adapter_rev = adapter_dirs[i] if adapter_dirs else resolve_input(
            spec.adapter, what="source adapter", lock=lock)
        _check_base(name, base_dir, adapter_dir)
        given = [TeacherPrompt(p, "given", where) for p, where in read_prompts(spec.prompts)] if spec.prompts else []
        prompts = given + tagged[i]
        own_seeds = [p.prompt for p in given] + seeds[i]
        if spec.synthesize and not own_seeds:
            raise ConfigError(f"source `{name}` has `synthesize: {spec.synthesize}` but no seed prompts; give it "
                              f"`prompts: FILE` or tag a few replay rows with `\"source\": \"{name}\"`")
        plans.append(TeacherPlan(i, name, spec.base_model, Path(base_dir), base_rev, Path(adapter_dir), adapter_rev,
                                 tuple(prompts), tuple(own_seeds), spec.synthesize, spec.prompt_format))
    return tuple(plans)


def _source_index(ref: str | int, names: list[str], where: str) -> int:
    if isinstance(ref, int) and 0 <= ref < len(names):
        return ref
    if isinstance(ref, str) and ref in names:
        return names.index(ref)
    raise ReplayDataError(f"{where}: `source: {ref!r}` names no source; use a source index 0-{len(names) - 1} or "
                          f"one of: {', '.join(names)}")


def _check_base(name: str, base_dir: Path, adapter_dir: Path) -> None:
    """The teacher's adapter must fit its base (safetensors headers only, no weights read)."""
    from .constants import ADAPTER_WEIGHTS_NAME
    from .safetensors_header import checkpoint_shapes, file_shapes, lora_misfit

    if not (base_dir / "config.json").is_file():
        raise ConfigError(f"base model of source `{name}` ({base_dir}) has no config.json; pass a transformers "
                          f"model folder (or its Hub id, pulled with `hf-heterofusion pull`)")
    base, weights = checkpoint_shapes(base_dir), adapter_dir / ADAPTER_WEIGHTS_NAME
    if not base or not weights.is_file():
        return
    misfit = lora_misfit(file_shapes(weights), base)
    if misfit is not None:
        _, weight, update, want = misfit
        raise AdapterFormatError(f"source `{name}`: its adapter does not fit the base model {base_dir} "
                                 f"(`{weight}` is {want[0]}x{want[1]}, the adapter's update is "
                                 f"{update[0]}x{update[1]}); give the base the adapter was trained on")


# ------------------------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class TeacherRow:
    """One labelled row with its provenance (a line of `teacher_replay.jsonl`)."""

    source: str
    prompt: Prompt
    response: str
    origin: Origin
    logprob: float
    teacher: dict = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        shape = {"messages": [*self.prompt, {"role": "assistant", "content": self.response}]} \
            if isinstance(self.prompt, tuple) else {"prompt": self.prompt, "response": self.response}
        return {**shape, "source": self.source, "origin": self.origin, "logprob": round(self.logprob, 4),
                "teacher": self.teacher}

    def example(self) -> ReplayExample:
        return ReplayExample(self.prompt, self.response, task=self.source)


@dataclass(frozen=True)
class TeacherResult:
    rows: tuple[TeacherRow, ...]
    report: dict

    def examples(self) -> tuple[ReplayExample, ...]:
        return tuple(r.example() for r in self.rows)

    def write_jsonl(self, path: Path) -> None:
        text = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in self.rows)
        path.write_text(text, encoding="utf-8")


def run_teachers(plans: Sequence[TeacherPlan], cfg: FusionConfig, *, accelerator=None,
                 show_progress: bool = True) -> TeacherResult:
    """Every teaching source in turn: one teacher in memory at a time, freed before the next."""
    from .teacher_labels import Labeller

    rows, per_source = [], []
    for plan in plans:
        started = time.perf_counter()
        labeller = Labeller(plan, cfg, accelerator=accelerator, show_progress=show_progress)
        synthesized = labeller.synthesize() if plan.synthesize else ([], {})
        prompts = list(plan.prompts) + synthesized[0]
        generations = labeller.label([p.prompt for p in prompts])
        labeller.close()
        provenance = {"base": plan.base, "base_revision": plan.base_revision or labeller.base_digest,
                      "adapter": cfg.sources[plan.index].adapter,
                      "adapter_revision": plan.adapter_revision or labeller.adapter_digest,
                      "placebo": cfg.teacher_placebo}
        dropped = {name: 0 for name in FILTERS}
        kept = []
        for p, g in zip(prompts, generations):
            reason = drop_reason(g, cfg)
            if reason:
                dropped[reason] += 1
                continue
            kept.append(TeacherRow(plan.name, p.prompt, g.text.strip(), p.origin, g.mean_logprob, provenance))
        rows += kept
        seconds = time.perf_counter() - started
        per_source.append({
            "source": plan.name, "index": plan.index, "base": plan.base, "prompt_format": plan.prompt_format,
            "given": sum(p.origin == "given" for p in plan.prompts),
            "replay_tagged": sum(p.origin == "replay" for p in plan.prompts),
            "synthesized": len(synthesized[0]), "synthesis": synthesized[1],
            "labelled": len(generations), "kept": len(kept), "dropped": dropped,
            "cached": labeller.cached, "teacher_loaded": labeller.loaded, "seconds": round(seconds, 2),
            "samples": [r.to_json() for r in kept[:3]],
        })
        logger.info("teacher %s: %d prompts, kept %d (%s); %s", plan.name, len(generations), len(kept),
                    ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "none dropped",
                    "all cached, teacher not loaded" if not labeller.loaded else f"{labeller.cached} cached")
    report = {"mode": "placebo" if cfg.teacher_placebo else "sources", "rows": len(rows), "sources": per_source,
              "settings": generation_settings(cfg)}
    return TeacherResult(tuple(rows), report)


def measure_throughput(*args, **kwargs) -> dict[str, float]:
    """Teacher rows/s batched vs unbatched (see `teacher_labels.measure_throughput`); used by the perf bench."""
    from .teacher_labels import measure_throughput as measure

    return measure(*args, **kwargs)


def generation_settings(cfg: FusionConfig) -> dict[str, Any]:
    """What the cached generations depend on (filters are applied after the cache, so they are not here)."""
    return {"max_new_tokens": cfg.teacher_max_new_tokens, "batch_size": cfg.teacher_batch_size,
            "placebo": cfg.teacher_placebo, "decoding": "greedy", "seed": cfg.seed}


def digest_dir(folder: Path, names: Sequence[str] | None = None) -> str:
    """sha256 over the files of a model/adapter folder (name + bytes), memoised by size and mtime."""
    memo_path = cache_root() / "teacher" / "digests.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and (names is None or p.name in names)
                   and not p.name.startswith(".") and p.suffix in (".json", ".safetensors", ".model", ".txt", ".bin"))
    changed = False
    for path in files:
        st = path.stat()
        key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in memo:
            memo[key], changed = _file_digest(path), True
        h.update(path.name.encode() + b"\0" + memo[key].encode())
    if changed:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo), encoding="utf-8")
        os.replace(tmp, memo_path)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    fh = hashlib.sha256()
    if path.suffix == ".json":
        # JSON by meaning: PEFT writes `target_modules` from a set, so its order changes from process to process.
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("target_modules"), list):
                data["target_modules"] = sorted(map(str, data["target_modules"]))
            fh.update(json.dumps(data, sort_keys=True).encode())
            return fh.hexdigest()
        except (ValueError, UnicodeDecodeError):
            pass
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            fh.update(chunk)
    return fh.hexdigest()


def free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


__all__ = ["TEACHER_REPLAY_NAME", "TeacherPlan", "TeacherPrompt", "TeacherResult", "TeacherRow", "cache_root",
           "measure_throughput", "plan_teaching", "run_teachers", "source_names"]
