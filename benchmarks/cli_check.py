# SPDX-License-Identifier: Apache-2.0
"""An independent check of the teacher path from seeds, through the product's CLI with its defaults.

`python -m benchmarks.cli_check --seeds 0 1 2 --out DIR [--card]`

A skill only the expert has: the benchmark's `topic` task with its labels renamed to words no model knows (`food`
-> `glorp`, `sport` -> `blick`, `weather` -> `zorp`), learnt by a LoRA expert on the Gemma-3-270M base. The target
is SmolLM2-135M-Instruct with the benchmark's `ner_person` adapter as its anchor. Neither the task nor the expert is
in the benchmark's source pool. Per seed K, the replay set is 16 labelled anchor-task rows plus 4 labelled rows of
the new task, and three runs of `hf-heterofusion fuse`. The 4 rows are a random draw by K, or with `--card` one row
of each label and one more (as a model card shows examples; a random draw of 4 can show one label only, the case the
product warns about). The runs:

* `defaults`: `teacher: sources`, the expert's source with `synthesize: 48` (`--synthesize`; everything else the
  product's default);
* `placebo`: the same with `teacher_placebo: true` (the expert's B set to zero: its base, without the skill);
* `seeds_alone`: `teacher: none`, `trainer: lora` on the same replay rows (no teacher).

The placebo and the seeds alone run exactly the defaults' number of optimiser steps (read from its report) at the
product's lr, so every run has the same budget; the placebo keeps the product's filters, which drop most of a
skill-less teacher's answers. Each run is scored by `--eval-file` on 60 held-out rows per task
(exact match of the first line); the expert is scored on the same new-task rows. Outputs land under `--out`, and a
finished run is not run again. `--synthesize N` has the writer write N prompts (3 epochs over more rows is more
steps), and `--budget-from DIR` runs every arm, the defaults too, at the steps of DIR's defaults run on the same
draw: together they tell the rows' effect from the steps' (benchmark v15). `--steps N` runs every arm at N steps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from hf_heterofusion.examples import synthetic
from hf_heterofusion.examples.experts import train_lora_expert

from .models import ensure_model


NEW_LABELS = {"food": "glorp", "sport": "blick", "weather": "zorp"}
TASK, ANCHOR = "glorp_topic", "ner_person"
RUNS = ("defaults", "placebo", "seeds_alone")


def _rows() -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """(new-task train, new-task test, anchor replay, anchor test) rows, drawn once (fixed seeds)."""
    topic = synthetic.get_task("topic")
    train, _, test = synthetic.make_splits(topic, 101, 240, 0, 60)
    relabel = [[{"prompt": r["prompt"], "response": NEW_LABELS[r["response"]], "source": TASK} for r in rows]
               for rows in (train, test)]
    _, replay, anchor_test = synthetic.make_splits(synthetic.get_task(ANCHOR), 103, 0, 16, 60)
    # no `source`: the anchor's own rows (`task` only names them in the scores)
    anchor = [[{"prompt": r["prompt"], "response": r["response"], "task": ANCHOR} for r in rows]
              for rows in (replay, anchor_test)]
    return relabel[0], relabel[1], anchor[0], anchor[1]


def draw_seeds(train: list[dict], seed: int, *, card: bool) -> list[dict]:
    """The 4 labelled rows of the new task that run seed `seed` gets: a random draw, or (`card`) one random row of
    each label plus one more, in random order."""
    if not card:
        return random.Random(f"seeds/{seed}").sample(train, 4)
    rng = random.Random(f"card/{seed}")
    picked = [rng.choice([r for r in train if r["response"] == label]) for label in sorted(NEW_LABELS.values())]
    picked.append(rng.choice([r for r in train if r not in picked]))
    rng.shuffle(picked)
    return picked


def _anchor_adapter() -> Path:
    """The benchmark's `ner_person` adapter on SmolLM2 (trained by `python -m benchmarks` before this runs)."""
    experts = ensure_model("smollm2").parent.parent / "experts"
    for record in sorted(experts.glob("*/bench_expert.json")):
        if json.loads(record.read_text())["label"] == f"smollm2:{ANCHOR}":
            return record.parent
    raise SystemExit(f"no smollm2:{ANCHOR} adapter under {experts}: run the benchmark once (python -m benchmarks)")


def _fuse(config: dict, out: Path, eval_file: Path) -> dict:
    """One `hf-heterofusion fuse` run (1 torch thread), read back from its report; skipped when finished."""
    report = out / "fusion_report.json"
    if not report.is_file():
        cfg = out.with_suffix(".yml")
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(json.dumps(config, indent=1))  # JSON is YAML
        exe = Path(sys.executable).with_name("hf-heterofusion")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run([str(exe), "fuse", str(cfg), str(out), "--overwrite", "--eval-file", str(eval_file)],
                       check=True, env=env)
    return json.loads(report.read_text())


def _exactly(steps: int) -> dict:
    """Config keys for a run of exactly `steps` optimiser steps: `max_steps` only caps `epochs` passes, and fewer
    rows (the placebo's are mostly filtered away) would end sooner."""
    return {"max_steps": steps, "epochs": 1000}


def _steps(run: Path) -> int:
    """The optimiser steps a finished `fuse` run took (its report)."""
    report = run / "fusion_report.json"
    if not report.is_file():
        raise SystemExit(f"--budget-from: no finished run at {run}")
    return json.loads(report.read_text())["training"]["optimizer_steps"]


def _expert_score(gemma: Path, expert: Path, test: list[dict]) -> float:
    import torch

    from hf_heterofusion.data.generation import generate_answers
    from hf_heterofusion.data.models import load_causal_lm, load_tokenizer
    from hf_heterofusion.data.replay import examples_from_rows

    torch.set_num_threads(1)
    model = load_causal_lm(gemma, expert)
    answers = generate_answers(model, load_tokenizer(gemma), examples_from_rows(test), max_new_tokens=8)
    return synthetic.score(synthetic.get_task("topic"), answers, [r["response"] for r in test])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    p.add_argument("--card", action="store_true", help="seeds that show every label (one each, plus one)")
    p.add_argument("--synthesize", type=int, default=48, help="prompts the writer writes (use another --out)")
    p.add_argument("--steps", type=int, default=None, help="every run (the defaults too) at this many steps")
    p.add_argument("--budget-from", type=Path, default=None,
                   help="another check's folder: every run (the defaults too) takes the steps of its defaults run "
                        "on the same draw (rows and steps told apart)")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    gemma, smollm = ensure_model("gemma3"), ensure_model("smollm2")
    train, test, anchor_rows, anchor_test = _rows()
    expert = out / "expert"
    if not (expert / "adapter_model.safetensors").is_file():
        train_lora_expert(gemma, train, expert, seed=0)
    scores_file = out / "expert_score.json"
    if not scores_file.is_file():
        scores_file.write_text(json.dumps({"expert": _expert_score(gemma, expert, test)}))
    eval_file = out / "eval.jsonl"
    synthetic.write_jsonl([*test, *anchor_test], eval_file)
    earlier = out / "results.json"  # runs of other seeds or draws into the same folder stay in it
    results = {"expert": json.loads(scores_file.read_text())["expert"],
               "runs": json.loads(earlier.read_text())["runs"] if earlier.is_file() else {}}
    anchor_adapter = _anchor_adapter()
    for seed in args.seeds:
        seeds = draw_seeds(train, seed, card=args.card)
        kind = "card" if args.card else "seed"
        draw = f"{kind}{seed}"
        replay = synthetic.write_jsonl([*anchor_rows, *seeds], out / draw / "replay.jsonl")
        base = {"target_model": str(smollm), "target_adapter": str(anchor_adapter), "replay": str(replay),
                "seed": seed}
        source = {"adapter": str(expert), "name": TASK}
        teacher = {**base, "teacher": "sources",
                   "sources": [{**source, "base_model": str(gemma), "synthesize": args.synthesize}]}
        fixed = args.steps if args.budget_from is None else _steps(args.budget_from / draw / "defaults")
        done = {"defaults": _fuse({**teacher, **(_exactly(fixed) if fixed else {})}, out / draw / "defaults",
                                  eval_file)}
        budget = _exactly(done["defaults"]["training"]["optimizer_steps"])
        if "placebo" in args.runs:
            done["placebo"] = _fuse({**teacher, "teacher_placebo": True, **budget},
                                    out / draw / "placebo", eval_file)
        if "seeds_alone" in args.runs:
            done["seeds_alone"] = _fuse({**base, "sources": [source], "trainer": "lora", "replay_balance": "task",
                                         "max_grad_norm": 1.0, **budget},
                                        out / draw / "seeds_alone", eval_file)
        for name, report in done.items():
            scored = report["evaluation"]["results"]
            results["runs"][f"{kind} {seed} / {name}"] = {
                "steps": report["training"]["optimizer_steps"], "seeds": [r["response"] for r in seeds],
                **{task: {"fused": scored["fused"][task]["exact_match"],
                          "anchor_alone": scored["anchor"][task]["exact_match"]} for task in (TASK, ANCHOR)}}
        (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
