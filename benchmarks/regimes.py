# SPDX-License-Identifier: Apache-2.0
"""The data of each benchmark regime: which rows are labelled, which prompts a teacher gets, which source pool.

A regime is written once per run into `<out>/work/regimes/<name>/` (a labelled replay JSONL and one prompts JSONL
per source task) and identified by a fingerprint of its content, which goes into every run's cache key.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hf_heterofusion.examples import synthetic

from .grid import Grid
from .phrasings import patterns, phrasing_of
from .zoo import TaskSplits


REGIME_TITLES = {
    "paper": "paper: labelled replay rows for every task",
    "few_labels": "few labels: anchor task labelled, a few labelled rows + unlabeled prompts per source task",
    "seeds_only": "seeds only: a few labelled rows per source task; a teacher synthesizes its own prompts",
    "seeds_card": "seeds as a model card shows them: the few labelled rows of each source task show each of its "
                  "answer kinds (a relation found and `none`; each label) as far as they go; a teacher synthesizes",
    "seeds_phrasings": "seeds_card, except that a relation task's seeds show each of its phrasings once (7 seeds: "
                       "4 that state the relation, 3 that do not)",
    "noisy": "noisy pool: few labels plus task-irrelevant source experts",
}
SEED_REGIMES = ("seeds_only", "seeds_card", "seeds_phrasings")  # the labelled seeds are a teacher's only prompts
# `seeds_only@K` (K >= 1): seeds_only with another random draw of the seeds, from the expert's own rows (where a
# card's author takes examples from), one per K; `seeds_only@0` is seeds_only's own. seeds_only's one draw shows no
# lives-in relation at all (four `none` seeds): it shows how the product fails on such seeds, not what a handful of
# seeds usually gives; one draw per run seed measures that.
DRAW_MARK = "@"
TEACHER_REGIMES = ("few_labels", *SEED_REGIMES, "noisy")  # where a teacher has something to label


@dataclass(frozen=True)
class RegimeData:
    name: str
    pool: str  # "single" (one expert per source task) or "noisy" (plus the task-irrelevant experts)
    replay: Path  # the labelled rows every trained method sees
    n_labelled: int
    prompts: dict[str, Path]  # source task -> prompts JSONL a teacher labels (empty in `paper`)
    synthesize: int  # prompts each teaching source also synthesizes
    fingerprint: str  # everything above
    rows_fingerprint: str  # the labelled rows and the pool only: all a run without a teacher reads

    @property
    def teaches(self) -> bool:
        return base_name(self.name) in TEACHER_REGIMES


def base_name(name: str) -> str:
    """The regime a drawn variant (`seeds_only@2`) belongs to; any other name is its own."""
    return name.split(DRAW_MARK, 1)[0]


def _draw_of(name: str) -> int:
    """K of `seeds_only@K` (0: the regime's own draw)."""
    base, _, draw = name.partition(DRAW_MARK)
    if not draw:
        return 0
    if base != "seeds_only" or not draw.isdigit():
        raise ValueError(f"unknown regime `{name}`; only `seeds_only@K` (K = 0, 1, 2, ...) draws its seeds again")
    return int(draw)


def labelled_rows(grid: Grid, splits: Mapping[str, TaskSplits], name: str) -> list[dict]:
    """The labelled rows of regime `name` (the anchor's task keeps its full replay share outside `paper`)."""
    anchor, sources = grid.tasks[0], grid.tasks[1:]
    if name == "paper":
        return [row for t in grid.tasks for row in splits[t].replay]
    return list(splits[anchor].replay) + [row for t in sources
                                          for row in seed_rows(splits[t].replay, t, name, grid, splits[t].train)]


def seed_rows(replay: list[dict], task: str, regime: str, grid: Grid, more: Sequence[dict] = ()) -> list[dict]:
    """A source task's labelled rows: its first `n_labels` replay rows (a random draw), or in `seeds_card` the
    first rows of each answer kind in turn, as the examples of a model card show the cases a skill has; in
    `seeds_phrasings` a relation task's first row of each phrasing, from `replay` and then `more` (the expert's own
    training rows, where a card's author takes examples from; the replay rows lack some phrasings).

    The benchmark's one draw shows no lives-in relation (four `none` seeds; 10 of the 16 replay rows are `none`, so
    such a draw has probability C(10,4)/C(16,4) = 11.5 %): a writer then never sees the positive case.
    `seeds_only@K` draws `n_labels` rows of `replay` + `more` again (the task's generator says `none` to 40 % of
    relation rows: four `none` seeds in 2.6 % of draws), seeded by the task and K.
    """
    if draw := _draw_of(regime):
        return random.Random(f"{task}:{draw}").sample([*replay, *more], grid.n_labels)
    if regime == "seeds_phrasings" and task in synthetic.PHRASINGS:
        return _one_per_phrasing([*replay, *more], task)
    if regime not in ("seeds_card", "seeds_phrasings"):
        return replay[:grid.n_labels]
    kinds: dict[str, list[dict]] = {}
    for row in replay:
        kinds.setdefault(_answer_kind(task, row["response"]), []).append(row)
    picked = []
    for i in range(grid.n_labels):  # round robin over the kinds in order of first appearance
        for rows in kinds.values():
            if i < len(rows) and len(picked) < grid.n_labels:
                picked.append(rows[i])
    order = {id(row): i for i, row in enumerate(replay)}
    return sorted(picked, key=lambda row: order[id(row)])


def _one_per_phrasing(rows: list[dict], task: str) -> list[dict]:
    """The first of `rows` in each of the task's phrasings (a card that shows every way the skill is worded)."""
    table = patterns(task)
    first: dict[str, dict] = {}
    for row in rows:
        first.setdefault(phrasing_of(row["prompt"], table), row)
    missing = [name for name, _ in table if name not in first]
    if missing:
        raise ValueError(f"{task}: no row is phrased {missing}")
    return [first[name] for name, _ in table]


def _answer_kind(task: str, answer: str) -> str:
    """`none`, a classification label, or `found` (an extraction answer with something in it)."""
    if synthetic.get_task(task).kind == "classification" or answer.strip() == synthetic.NONE_ANSWER:
        return answer.strip()
    return "found"


def build_regime(grid: Grid, splits: Mapping[str, TaskSplits], name: str, work: Path) -> RegimeData:
    _draw_of(name)  # a malformed draw (`seeds_card@1`, `seeds_only@x`) is an error before anything is written
    if base_name(name) not in REGIME_TITLES:
        raise ValueError(f"unknown regime `{name}`; choose from {', '.join(REGIME_TITLES)} (or `seeds_only@K`)")
    rows = labelled_rows(grid, splits, name)
    prompt_rows: dict[str, list[dict]] = {}
    synthesize = 0
    if name in ("few_labels", "noisy"):
        prompt_rows = {t: [{"prompt": r["prompt"], "task": t} for r in splits[t].pool] for t in grid.tasks[1:]}
    elif base_name(name) in SEED_REGIMES:
        # The labelled seed rows are the only prompts: the teacher relabels them and synthesizes `n_synth` more.
        synthesize = grid.n_synth
        prompt_rows = {t: [{"prompt": r["prompt"], "task": t}
                           for r in seed_rows(splits[t].replay, t, name, grid, splits[t].train)]
                       for t in grid.tasks[1:]}
    prompt_texts = {t: _jsonl(r) for t, r in prompt_rows.items()}
    content = {"rows": rows, "prompts": prompt_texts,
               "synthesize": synthesize, "pool": "noisy" if name == "noisy" else "single"}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    # One folder per content: benchmark processes with other grids (say `--prompts 12`) sharing an --out folder
    # never rewrite the files a running fit reads (a run cached under one regime's key with another's prompts).
    folder = work / "regimes" / f"{name}-{digest}"
    replay = synthetic.write_jsonl(rows, folder / "replay.jsonl")
    prompts = {t: folder / f"prompts_{t}.jsonl" for t in prompt_texts}
    for t, text in prompt_texts.items():  # the very text the fingerprint was taken over
        prompts[t].write_text(text, encoding="utf-8")
    rows_only = {"rows": rows, "pool": content["pool"]}
    rows_digest = hashlib.sha256(json.dumps(rows_only, sort_keys=True).encode()).hexdigest()[:16]
    return RegimeData(name, content["pool"], replay, len(rows), prompts, synthesize, digest, rows_digest)


def _jsonl(rows: list[dict]) -> str:
    """JSONL text of `rows`, as `synthetic.write_jsonl` writes it (fingerprints of earlier runs were taken over
    such files, so run keys stay the same)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
