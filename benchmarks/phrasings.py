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
            # a slot is a name: capitalised words (every lexicon name is), so free text such as `He hired a
            # lawyer at Initech.` is not read as `{org} hired {person}.`
            body = re.sub(r"\\\{(\w+)\\\}", r"[A-Z][\\w'-]*(?: [A-Z][\\w'-]*)*", re.escape(template))
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
    from .grid import GRIDS
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
        from hf_heterofusion.data.generation import generate_answers
        from hf_heterofusion.data.replay import examples_from_rows
        from hf_heterofusion.examples import experts
        from hf_heterofusion.examples.synthetic import score

        bench = setup(GRIDS["reduced"], args.out, args.cache)  # only its splits and target: the run's own test rows
        test = examples_from_rows(bench.splits[args.task].test)
        named = [phrasing_of(example.prompt, table) for example in test]
        seen = Counter(named)
        for adapter in args.adapters:
            model, tok = experts.load_model(bench.target_dir, adapter)
            # the answers the benchmark's score reads (same prompt encoding and decoding), judged one by one
            answers = generate_answers(model, tok, test, max_new_tokens=bench.grid.max_new_tokens,
                                       batch_size=bench.grid.eval_batch)
            right = Counter(name for name, answer, example in zip(named, answers, test)
                            if score(args.task, [answer], [example.response]) == 100.0)
            print(f"adapter {adapter}: " + ", ".join(f"{n!r} {right[n]}/{seen[n]}" for n in names if seen[n]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
