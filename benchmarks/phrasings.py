# SPDX-License-Identifier: Apache-2.0
"""Which phrasings of a relation a teacher's rows show and a fused adapter gets right.

`python -m benchmarks.phrasings --task relation_works_for --rows teacher_replay.jsonl... --adapters DIR...`

A relation task's test prompts use a few phrasings (`X works for Y.`, `Y hired X.`, ...; `synthetic.PHRASINGS`).
A handful of seeds shows only some of them, so the question behind a short transfer score is whether the target
misses the phrasings its rows never show, or the skill as a whole. Per phrasing this prints how many of each rows
file's prompts use it (the seeds and the written prompts) and how many test prompts each adapter answers exactly.
A written prompt that matches no phrasing counts as `other` (most of them: the writer uses its own words).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import torch

from hf_heterofusion.examples.synthetic import PHRASINGS


def patterns(task: str) -> list[tuple[str, re.Pattern[str]]]:
    """(phrasing, regex of a sentence in it) for each phrasing of `task`, positives first."""
    out = []
    for group in PHRASINGS[task]:
        for template in group:
            body = re.sub(r"\\\{(\w+)\\\}", r"[\\w' -]+?", re.escape(template))
            out.append((template, re.compile(rf"(?:^|: ){body}\s*$")))
    return out


def phrasing_of(prompt: str, table: list[tuple[str, re.Pattern[str]]]) -> str:
    text = prompt.strip()
    matches = [name for name, rx in table if rx.search(text)]
    # `{person} lives in {loc}.` also matches `... lives in Paris with Bob.` (a name may hold spaces): the phrasing
    # with the most fixed words is the one the sentence was written in
    return max(matches, key=lambda name: len(re.sub(r"\{\w+\}", "", name)), default="other")


def main(argv: list[str] | None = None) -> int:
    # the run machinery only here: `regimes` imports the matcher above, and `run` imports `regimes`
    from .grid import GRIDS, with_steps
    from .run import add_setup_args, setup

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, choices=sorted(PHRASINGS))
    p.add_argument("--rows", nargs="*", default=[], help="teacher_replay.jsonl files")
    p.add_argument("--adapters", nargs="*", default=[], help="fused adapter folders (on the benchmark's target)")
    add_setup_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = patterns(args.task)
    names = [name for name, _ in table] + ["other"]
    for path in args.rows:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
        counts = Counter(phrasing_of(r["prompt"], table) for r in rows if r.get("source") == args.task)
        print(f"rows {path}: " + ", ".join(f"{n!r} {counts[n]}" for n in names if counts[n]))
    if args.adapters:
        from hf_heterofusion.examples import experts

        grid = with_steps(GRIDS["reduced"], 216)
        bench = setup(grid.with_(regimes=(*grid.regimes, "seeds_card")), args.out, args.cache)
        test = bench.splits[args.task].test
        for adapter in args.adapters:
            model, tok = experts.load_model(bench.target_dir, adapter)
            right, seen = Counter(), Counter()
            for row in test:
                ids = tok(row["prompt"], return_tensors="pt")
                out = model.generate(**ids, max_new_tokens=bench.grid.max_new_tokens, do_sample=False)
                answer = tok.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True).strip()
                name = phrasing_of(row["prompt"], table)
                seen[name] += 1
                right[name] += answer.split("\n")[0].strip() == row["response"].strip()
            print(f"adapter {adapter}: " + ", ".join(f"{n!r} {right[n]}/{seen[n]}" for n in names if seen[n]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
