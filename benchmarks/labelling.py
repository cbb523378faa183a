# SPDX-License-Identifier: Apache-2.0
"""Teacher labelling throughput on a real model: `python -m benchmarks.labelling --model smollm2 --prompts 48`.

The teacher is the real base (SmolLM2-135M-Instruct or Gemma-3-270M, converted by `benchmarks.models`) with a LoRA
adapter (`--adapter`, or a fresh one with B = 0: the base's own answers, which is what labelling costs). Prompts are
the benchmark's synthetic information-extraction prompts, as chat turns for an instruct model. Prints one JSON
object (`measure.labelling_throughput`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from hf_heterofusion.examples.synthetic import TASK_NAMES, get_task, make_splits

from .measure import labelling_throughput
from .models import ensure_model


def zero_adapter(base_dir: Path, out: Path) -> Path:
    """A rank-8 LoRA on every attention and MLP projection with B = 0 (PEFT's initialisation): a no-op adapter."""
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                            "up_proj", "down_proj"])
    get_peft_model(model, config).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("smollm2", "gemma3"), default="smollm2")
    p.add_argument("--adapter", help="the expert's adapter folder (default: a fresh no-op adapter)")
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--task", choices=TASK_NAMES, help="only this task's prompts (the expert's own; default: all tasks)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--chat", action="store_true", help="send the prompts as one-turn chats (instruct models)")
    p.add_argument("--continuous", action="store_true", help="also time transformers' continuous batching")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = ensure_model(args.model)
    tasks = (args.task,) if args.task else TASK_NAMES
    per_task = -(-args.prompts // len(tasks))
    rows = [r for name in tasks for r in make_splits(get_task(name), 7, 0, 0, per_task)[2]][: args.prompts]
    prompts = [({"role": "user", "content": r["prompt"]},) if args.chat else r["prompt"] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(args.adapter) if args.adapter else zero_adapter(base, Path(tmp) / "adapter")
        result = labelling_throughput(base, adapter, prompts, batch_size=args.batch_size,
                                      max_new_tokens=args.max_new_tokens, repeats=args.repeats,
                                      continuous=args.continuous)
    print(json.dumps({"model": args.model, "adapter": args.adapter or "no-op (B = 0)", "task": args.task or "all",
                      "threads": torch.get_num_threads(), "chat": args.chat, **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
