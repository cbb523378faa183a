# SPDX-License-Identifier: Apache-2.0
"""Two parts of the performance section that are not fit-vs-SFT timings:

* the frozen target in bf16 vs fp32: peak RSS of a short fit on a random-initialised ~1B Llama (a one-off memory
  measurement: 2 micro-steps, its speed means nothing), next to `outputs.memory.estimate_from_config`;
* the teacher stage's labelling throughput, batched vs one prompt at a time (`measure.labelling_throughput`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.method.transfer_net import hypernet_parameters
from hf_heterofusion.outputs.memory import LLAMA3_8B, estimate_from_config
from hf_heterofusion.pipeline import fit

from .measure import labelling_throughput, peak_rss_mb


logger = logging.getLogger(__name__)

# ~1.0B parameters: Llama layout, SmolLM2's tokenizer (vocab 49152) so the bench's replay rows encode as usual.
LLAMA_1B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
            "intermediate_size": 5632, "num_hidden_layers": 18, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 49152, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
            "bos_token_id": 1, "eos_token_id": 2}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def teacher_throughput(bench, sources: list[str]) -> dict[str, Any]:
    """Teacher rows/s, batched vs one prompt at a time, of the source base with its first expert on (at most) 32
    replay prompts; a failure is reported as a note, never raised, so the rest of the performance section stays."""
    try:
        rows = [json.loads(line) for line in Path(bench.replay_path).read_text(encoding="utf-8").splitlines()]
        prompts = [r["prompt"] for r in rows if "prompt" in r][:32]
        batch = FusionConfig.model_fields["teacher_batch_size"].default  # what a fit labels with by default
        return labelling_throughput(str(bench.source_dir), sources[0], prompts, batch_size=batch,
                                    max_new_tokens=bench.grid.max_new_tokens)
    except Exception as err:  # report, do not lose the rest of the run
        return {"note": f"teacher throughput: FAILED ({type(err).__name__}: {str(err).splitlines()[0][:120]})"}


def run_target_memory(bench, work: Path, run_job, base: dict) -> dict[str, Any]:
    """Peak RSS of a short fit on the ~1B target in float32 and in bfloat16, each in its own subprocess."""
    if base.get("in_process"):  # the quick grid (a smoke test): building a 1B model would dominate it
        return {"note": "skipped on the quick grid", "rows": []}
    folder = work / "llama-1b"
    rows = []
    try:
        model, anchor, source = _ensure_1b(folder, Path(base["target"]))
        for dtype in ("float32", "bfloat16"):
            r = run_job({**base, "kind": "target_memory", "target": str(model), "anchor": str(anchor),
                         "source": str(source), "torch_dtype": dtype, "in_process": False})
            est = estimate_from_config(LLAMA_1B, dtype, tokens=base["max_length"])
            rows.append({"dtype": dtype, **r, "estimate_mb": est.total / 2**20})
    except (RuntimeError, OSError) as err:
        return {"note": f"FAILED ({str(err).splitlines()[-1][:160]})", "rows": rows}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    nets = 7 * hypernet_parameters(8, 4096, 1024, 4096, sources=2)
    return {"note": "one-off memory measurement: random-initialised Llama, 2 micro-steps of batch 1, E=256; peak RSS "
                    "of the whole subprocess", "rows": rows, "bf16_to_fp32": ratio,
            "estimate_8b": {d: estimate_from_config(LLAMA3_8B, d, tokens=1024, hypernet_parameters=nets).line(
                f"Llama-3-8B target in {d}, paper nets (b=4096, E=1024, 7 roles), 1024 tokens")
                for d in ("float32", "bfloat16")}}


def _ensure_1b(folder: Path, tokenizer_from: Path) -> tuple[Path, Path, Path]:
    """Random ~1B model (saved in bf16 to halve the disk write) + two random rank-8 q/v adapters on it."""
    # Imported here: every perf job's interpreter imports this module, and peft (~2 s, ~150 MB at import) would
    # count in the peak RSS each job reports. Only the parent process builds the 1B model.
    from peft import LoraConfig, get_peft_model

    model_dir = folder / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(LLAMA_1B), encoding="utf-8")
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).is_file():
            shutil.copy2(tokenizer_from / name, model_dir / name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=torch.bfloat16)
    logger.info("random target: %.2fB parameters", sum(p.numel() for p in model.parameters()) / 1e9)
    model.save_pretrained(model_dir)
    adapters = []
    for seed in (0, 1):
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                      lora_dropout=0.0, task_type="CAUSAL_LM"))
        gen = torch.Generator().manual_seed(seed)
        for name, p in sorted(peft_model.named_parameters()):
            if "lora_B" in name:
                with torch.no_grad():
                    p.copy_(0.02 * torch.randn(p.shape, generator=gen))
        out = folder / f"adapter{seed}"
        peft_model.save_pretrained(out)
        adapters.append(out)
        model = peft_model.unload()
    return model_dir, adapters[0], adapters[1]


def job_target_memory(job: dict) -> dict:
    cfg = FusionConfig(target_model=job["target"], target_adapter=job["anchor"], sources=[job["source"]],
                       replay=job["replay"], block_size="auto", embed_dim=256, num_projections=256,
                       gradient_accumulation_steps=2, max_steps=1, epochs=1, max_length=job["max_length"],
                       checkpoint_every=0, torch_dtype=job["torch_dtype"])
    result = fit(cfg, show_progress=False)
    return {"peak_rss_mb": peak_rss_mb(), "fit_seconds": result.report.timings["fit_s"]}
