# SPDX-License-Identifier: Apache-2.0
"""Which source experts teach, and with what: decided before any model is loaded (beyond the paper).

The faithful method only learns from labelled replay rows: its decoder starts at zero, so every predicted update is
built from replay-loss gradients, and a skill that the replay set does not label cannot reach the target. Here each
*teaching* source expert (its base model + its LoRA adapter, in its own tokenizer and prompt format) answers
prompts of its task, and its filtered answers join the replay set that trains the target (Trans-LoRA's recipe,
arXiv 2405.17258, across families). The stage, module by module::

    plan.plan_teaching(cfg, replay)   which sources teach, their prompts (given / tagged in the replay) and seeds
    labeller.Labeller                 one teacher: load lazily, synthesize (optional), label (greedy, batched)
    filters                           which answers are kept
    run.run_teachers                  every teacher in turn -> TeacherResult (rows with provenance + counts)

Labelled rows are cached by content (`cache.py`), batch by batch, so a rerun loads no teacher and a killed run
resumes. Under `accelerate launch` the batches are dealt to processes round-robin and gathered, so N processes give
the rows of one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.constants import ADAPTER_WEIGHTS_NAME
from hf_heterofusion.data.replay import Prompt, ReplayData, read_prompts
from hf_heterofusion.data.safetensors_header import checkpoint_shapes, file_shapes, lora_misfit
from hf_heterofusion.errors import AdapterFormatError, ConfigError, ReplayDataError
from hf_heterofusion.hub.refs import split_revision
from hf_heterofusion.inputs import resolve_input
from hf_heterofusion.teacher.discriminator import MIN_SEEDS


logger = logging.getLogger(__name__)

Origin = Literal["given", "replay", "synthesized"]


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
    writer: str = "source"  # who writes the synthesized prompts: `source`, `target` or the model reference given
    writer_dir: Path | None = None  # None: the source base itself (its adapter off)
    writer_revision: str | None = None
    seed_answers: tuple[str | None, ...] = ()  # per seed: its row's answer, None where it came unlabelled

    def describe(self) -> str:
        given = sum(p.origin == "given" for p in self.prompts)
        return (f"source {self.index} `{self.name}` teaches from {self.base}: {given} given prompts, "
                f"{len(self.prompts) - given} tagged in the replay, {self.synthesize} to synthesize "
                f"(from {len(self.seeds)} seeds)")


def source_names(cfg: FusionConfig) -> list[str]:
    """Each source's name for `"source"` tags: `name:`, else its adapter folder's (or repo's) last part."""
    return [s.name or split_revision(s.adapter.rstrip("/"))[0].rsplit("/", 1)[-1] for s in cfg.sources]


def plan_teaching(cfg: FusionConfig, replay: ReplayData | None, *, lock: str | Path | None = None,
                  adapter_dirs: Sequence[tuple[Path, str | None]] = ()) -> tuple[TeacherPlan, ...]:
    """Which sources teach and with what; every input problem is a one-line error here, before any compute."""
    names = source_names(cfg)
    tagged: dict[int, list[TeacherPrompt]] = {i: [] for i in range(len(cfg.sources))}
    seeds: dict[int, list[tuple[Prompt, str | None]]] = {i: [] for i in range(len(cfg.sources))}
    for item in (replay.seeds if replay else ()):
        seeds[_source_index(item.source, names, item.where)].append((item.prompt, item.answer))
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
        own_seeds = [(p.prompt, None) for p in given] + seeds[i]
        if spec.synthesize and not own_seeds:
            raise ConfigError(f"source `{name}` has `synthesize: {spec.synthesize}` but no seed prompts; give it "
                              f"`prompts: FILE` or tag a few replay rows with `\"source\": \"{name}\"`")
        if spec.synthesize and cfg.teacher_discriminator and len(own_seeds) < MIN_SEEDS:
            raise ConfigError(f"source `{name}` has {len(own_seeds)} seed prompts but `teacher_discriminator` needs "
                              f"{MIN_SEEDS} or more (a classifier of fewer real prompts is noise); give more seeds "
                              f"or set `teacher_discriminator: false`")
        writer, writer_dir, writer_rev = _writer(cfg, spec.synthesizer, name, lock) if spec.synthesize \
            else ("source", None, None)
        plans.append(TeacherPlan(i, name, spec.base_model, Path(base_dir), base_rev, Path(adapter_dir), adapter_rev,
                                 tuple(prompts), tuple(p for p, _ in own_seeds), spec.synthesize,
                                 spec.prompt_format, writer, writer_dir, writer_rev,
                                 tuple(a for _, a in own_seeds)))
    return tuple(plans)


def _writer(cfg: FusionConfig, choice: str, name: str, lock) -> tuple[str, Path | None, str | None]:
    """(who, folder, pinned revision) of a source's prompt writer; a missing one is a one-line error now."""
    if choice == "source":
        return "source", None, None
    if choice == "target":
        folder, revision = resolve_input(cfg.target_model, what="target model", lock=lock)
        return "target", Path(folder), revision
    folder, revision = resolve_input(choice, what=f"synthesizer of source `{name}`", lock=lock)
    if not (Path(folder) / "config.json").is_file():
        raise ConfigError(f"synthesizer of source `{name}` ({folder}) has no config.json; give a transformers "
                          f"causal LM folder or Hub id, or `synthesizer: target` / `source`")
    return choice, Path(folder), revision


def _source_index(ref: str | int, names: list[str], where: str) -> int:
    if isinstance(ref, int) and 0 <= ref < len(names):
        return ref
    if isinstance(ref, str) and ref in names:
        return names.index(ref)
    raise ReplayDataError(f"{where}: `source: {ref!r}` names no source; use a source index 0-{len(names) - 1} or "
                          f"one of: {', '.join(names)}")


def _check_base(name: str, base_dir: Path, adapter_dir: Path) -> None:
    """The teacher's adapter must fit its base (safetensors headers only, no weights read)."""
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


__all__ = ["Origin", "TeacherPlan", "TeacherPrompt", "plan_teaching", "source_names"]
