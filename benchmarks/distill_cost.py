# SPDX-License-Identifier: Apache-2.0
"""What the teacher's token signal costs, measured side by side in one process on the real models:

    python -m benchmarks.distill_cost --teacher gemma3 --target smollm2 --prompts 32 --repeats 3

* labelling: greedy labels only (`greedy_batch`, `top_k=0`) vs the teacher's own pass (top-k log-probs captured
  from the same logits, plus the base's teacher-forced scoring of each answer with the adapter off);
* training: one forward+backward of the target on the same batch with the label's cross-entropy only
  (transformers' loss) vs the replay loss with a row signal (skill weights, exact KL at the aligned tokens, ULD
  elsewhere, from real teacher answers aligned to the target tokenizer).

Passes alternate and the fastest of `--repeats` is kept, so load on the machine hits both alike. Prints one JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from hf_heterofusion.data.encoding import collate, encode_example, encode_prompt_ids, pad_token_id
from hf_heterofusion.data.generation import greedy_batch, length_batches, score_answers
from hf_heterofusion.data.models import load_causal_lm, load_tokenizer
from hf_heterofusion.data.replay import ReplayExample
from hf_heterofusion.data.soft_targets import EXACT, ULD, PieceMap, align_signal, build_signal
from hf_heterofusion.examples.synthetic import TASK_NAMES, get_task, make_splits
from hf_heterofusion.method.loss import batch_loss

from .labelling import zero_adapter
from .models import ensure_model


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", choices=("smollm2", "gemma3"), default="gemma3")
    p.add_argument("--target", choices=("smollm2", "gemma3"), default="smollm2")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_dir, s_dir = ensure_model(args.teacher), ensure_model(args.target)
    per_task = -(-args.prompts // len(TASK_NAMES))
    rows = [r for name in TASK_NAMES for r in make_splits(get_task(name), 7, 0, 0, per_task)[2]][: args.prompts]
    out: dict = {"teacher": args.teacher, "target": args.target, "prompts": len(rows), "threads":
                 torch.get_num_threads(), "top_k": args.top_k}
    with tempfile.TemporaryDirectory() as tmp:
        teacher = load_causal_lm(t_dir, zero_adapter(t_dir, Path(tmp) / "adapter")).eval()
        t_tok = load_tokenizer(t_dir)
        ids = [encode_prompt_ids(r["prompt"], t_tok) for r in rows]
        batches = [[ids[i] for i in b] for b in length_batches(ids, args.batch_size)]

        def labels_only():
            return [g for b in batches for g in greedy_batch(teacher, t_tok, b, max_new_tokens=args.max_new_tokens)]

        def with_signal():
            gens = []
            for b in batches:
                got = greedy_batch(teacher, t_tok, b, max_new_tokens=args.max_new_tokens, top_k=args.top_k)
                with teacher.disable_adapter():
                    score_answers(teacher, t_tok, b, [g.token_ids for g in got])
                gens += got
            return gens

        def top_k_only():
            return [g for b in batches for g in greedy_batch(teacher, t_tok, b, max_new_tokens=args.max_new_tokens,
                                                             top_k=args.top_k)]

        labels_only()  # warm-up
        times = {"labels_only": [], "top_k": [], "with_signal": []}
        for _ in range(args.repeats):
            for name, fn in (("labels_only", labels_only), ("top_k", top_k_only), ("with_signal", with_signal)):
                times[name].append(_seconds(fn))
        gens = with_signal()
        out["labelling_s"] = {k: round(min(v), 3) for k, v in times.items()}
        out["labelling_top_k_cost"] = round(min(times["top_k"]) / min(times["labels_only"]), 3)
        out["labelling_signal_cost"] = round(min(times["with_signal"]) / min(times["labels_only"]), 3)
        signals = [build_signal(t_tok, g.token_ids, g.top_ids, g.top_logprobs, [0.5] * len(g.token_ids),
                                finished=g.finished) for g in gens]

    target = load_causal_lm(s_dir, None).train()
    s_tok = load_tokenizer(s_dir)
    pieces = PieceMap(s_tok)
    encoded, exact, uld, tokens = [], 0, 0, 0
    for r, g, sig in zip(rows, gens, signals):
        response = g.text.strip() or "x"
        input_ids, labels, _ = encode_example(ReplayExample(r["prompt"], response), s_tok, 256)
        start = next(j for j, lab in enumerate(labels) if lab != -100)
        row = align_signal(sig, response, s_tok, input_ids[start:], start, len(input_ids), kd_scale=1.0,
                           skill_weights=True, pieces=pieces)
        exact += sum(k == EXACT for k in row.kind)
        uld += sum(k == ULD for k in row.kind)
        tokens += len(input_ids) - start
        encoded.append((input_ids, labels, row))
    pad = pad_token_id(s_tok)
    plain = collate([e[:2] for e in encoded[: args.batch_size]], pad)
    signal = collate(encoded[: args.batch_size], pad)

    def step(batch):
        target.zero_grad(set_to_none=True)
        loss, _ = batch_loss(target, batch)
        loss.backward()

    step(plain)
    times = {"ce": [], "kd": []}
    for _ in range(args.repeats):
        times["ce"].append(_seconds(lambda: step(plain)))
        times["kd"].append(_seconds(lambda: step(signal)))
    out["step_s"] = {"ce": round(min(times["ce"]), 4), "ce_kd_skill": round(min(times["kd"]), 4)}
    out["kd_step_cost"] = round(min(times["kd"]) / min(times["ce"]), 3)
    out["alignment"] = {"answer_tokens": tokens, "exact_share": round(exact / max(tokens, 1), 3),
                        "uld_share": round(uld / max(tokens, 1), 3)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
