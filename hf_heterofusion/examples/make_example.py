# SPDX-License-Identifier: Apache-2.0
"""`hf-heterofusion make-example DIR`: the inputs the shipped example configs name, built locally in seconds.

The example YAMLs (`merge_methods/heterofusion_*.yml`) point at `./models/...`, `./adapters/...` and
`./replay.jsonl`. This writes tiny models of four families (the test factories' Llama, Qwen2, Phi-3 and Mistral),
seeded LoRA adapters on them and a small synthetic replay set into DIR, then copies the example YAMLs (and a
`fuse`-format twin of the adapter example) beside them, so every example runs as shipped:

    hf-heterofusion make-example ex
    hf-heterofusion merge ex/heterofusion_adapter.yml out/fused

The adapters are random (seeded), not trained: the examples show the plumbing, not a result.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from hf_heterofusion import merge_methods
from hf_heterofusion.errors import OutputExistsError
from hf_heterofusion.examples import synthetic
from hf_heterofusion.testing.factories import make_lora_adapter, make_tiny_model


EXAMPLES = ("heterofusion_adapter.yml", "heterofusion_merged.yml", "heterofusion_data_free.yml")
FUSE_EXAMPLE = "fuse_adapter.yml"
# Where each example writes in the README's walk-through (the command prints the same lines).
OUTPUTS = {"heterofusion_adapter.yml": "out/fused", "heterofusion_merged.yml": "out/merged",
           "heterofusion_data_free.yml": "out/data-free", "fuse_adapter.yml": "out/fuse-adapter"}
# folder name -> (family, model seed); adapter folder -> (base folder, adapter seed)
MODELS = {"llama": ("llama", 0), "qwen2": ("qwen2", 1), "phi3": ("phi3", 2), "mistral": ("mistral", 3)}
ADAPTERS = {"llama-task-a": ("llama", 10), "llama-task-b": ("llama", 11), "qwen2-task-b": ("qwen2", 12),
            "phi3-task-c": ("phi3", 13), "mistral-task-d": ("mistral", 14)}
TASKS = ("ner_person", "topic", "sentiment")


def example_dir() -> Path:
    """Where the example YAMLs are installed (the `hf_heterofusion.merge_methods` package folder)."""
    return Path(merge_methods.__file__).parent


def fuse_example() -> dict:
    """The adapter example in the `fuse` format (the keys of `FusionConfig`), sized like the YAML examples."""
    data = yaml.safe_load((example_dir() / EXAMPLES[0]).read_text(encoding="utf-8"))
    params = dict(data["parameters"])
    params.pop("output", None)
    return {"target_model": "./models/llama", "target_adapter": "./adapters/llama-task-a",
            "sources": [{"adapter": "./adapters/qwen2-task-b", "base_model": "./models/qwen2"},
                        {"adapter": "./adapters/phi3-task-c"}], **params}


def make_example_inputs(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write tiny models, adapters, a replay set and the example configs into `out_dir`; returns it.

    Raises:
        [`OutputExistsError`]: `out_dir` exists and is not empty (without `overwrite`).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; choose a new folder or pass --overwrite")
    models = {name: make_tiny_model(family, out / "models" / name, seed=seed)
              for name, (family, seed) in MODELS.items()}
    for name, (base, seed) in ADAPTERS.items():
        make_lora_adapter(models[base], out / "adapters" / name, r=4, lora_alpha=8, seed=seed)
    rows = []
    for i, task_name in enumerate(TASKS):
        task = synthetic.get_task(task_name, vocab="tiny")
        rows += synthetic.make_splits(task, i, 0, 8, 0)[1]
    synthetic.write_jsonl(rows, out / "replay.jsonl")
    for name in EXAMPLES:
        shutil.copyfile(example_dir() / name, out / name)
    (out / FUSE_EXAMPLE).write_text(
        "# The adapter example in the `fuse` format: hf-heterofusion fuse fuse_adapter.yml OUT_DIR\n"
        + yaml.safe_dump(fuse_example(), sort_keys=False), encoding="utf-8")
    return out


__all__ = ["EXAMPLES", "FUSE_EXAMPLE", "example_dir", "fuse_example", "make_example_inputs"]
