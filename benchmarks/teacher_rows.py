# SPDX-License-Identifier: Apache-2.0
"""How close a teacher's rows are to its task: `python -m benchmarks.teacher_rows teacher_replay.jsonl...`.

Per source task of the rows (the `source` field the teacher stage writes), three shares:

* `lexicon`: prompts that name a person, place or organisation of the task's own lexicon. Every prompt of the
  benchmark's tasks does (sentiment prompts: most), so a low share says the prompts came from elsewhere, e.g. a
  small base writing them for `synthesize`;
* `none`: answers that are `none`;
* `grounded` (extraction tasks): answers other than `none` whose every argument occurs in the prompt. An
  extraction answer that names something absent from its prompt is made up, whatever the gold label would be;
* `phrasings` (relation tasks): rows per wording of the task's test sentences (`synthetic.PHRASINGS`; `other`:
  none of them). A wording no row shows is one the target is never taught (benchmark v7-v10: works-for's `Y hired
  X.` and `X joined Y in Z.`).

It reads nothing but the rows, so it judges a teacher's output on prompts that have no gold answer.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from hf_heterofusion.examples.synthetic import NONE_ANSWER, PHRASINGS, get_task, parse_answer

from .phrasings import patterns, phrasing_of


def row_stats(rows: Iterable[Mapping[str, str]], vocab: str = "full") -> dict[str, dict[str, float | int]]:
    """Per source task: `rows`, and `lexicon` / `none` / `grounded` as percentages (`grounded`: extraction only);
    for a relation task also `phrasings`, rows per wording."""
    by_task: dict[str, list[Mapping[str, str]]] = defaultdict(list)
    for row in rows:
        by_task[row["source"]].append(row)
    out: dict[str, dict[str, float | int]] = {}
    for name, group in by_task.items():
        task = get_task(name, vocab=vocab)  # type: ignore[arg-type]
        lex = task.lexicon
        names = (*lex.persons, *lex.locations, *lex.orgs)
        answered = [r for r in group if r["response"].strip().lower() != NONE_ANSWER]
        stats: dict[str, float | int] = {
            "rows": len(group),
            "lexicon": 100.0 * sum(any(n in r["prompt"] for n in names) for r in group) / len(group),
            "none": 100.0 * (len(group) - len(answered)) / len(group),
        }
        if task.kind == "extraction" and answered:
            stats["grounded"] = 100.0 * sum(_grounded(r) for r in answered) / len(answered)
        if name in PHRASINGS:
            table = patterns(name)
            counts = dict.fromkeys([*(wording for wording, _ in table), "other"], 0)
            for r in group:  # the sentence after the task's cue (`Works-for relations in: `)
                counts[phrasing_of(r["prompt"].split(": ", 1)[-1], table)] += 1
            stats["phrasings"] = counts  # type: ignore[assignment]
        out[name] = stats
    return out


def _grounded(row: Mapping[str, str]) -> bool:
    prompt = row["prompt"].lower()
    tuples = parse_answer(row["response"])
    return bool(tuples) and all(arg in prompt for t in tuples for arg in t[1:])


def main(argv: Sequence[str] | None = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m benchmarks.teacher_rows teacher_replay.jsonl...", file=sys.stderr)
        return 2
    for path in paths:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        print(path)
        for task, s in row_stats(json.loads(line) for line in lines if line.strip()).items():
            grounded = f"  grounded {s['grounded']:5.1f} %" if "grounded" in s else ""
            print(f"  {task:20s} {s['rows']:4d} rows  lexicon {s['lexicon']:5.1f} %  none {s['none']:5.1f} %{grounded}")
            if "phrasings" in s:
                print("    " + ", ".join(f"`{wording}` {n}" for wording, n in s["phrasings"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
