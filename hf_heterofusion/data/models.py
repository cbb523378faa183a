# SPDX-License-Identifier: Apache-2.0
"""The one loader of a causal LM (optionally with a PEFT LoRA adapter) and its tokenizer.

The target during training, a teacher while it labels, an output while it is evaluated and an expert while it is
trained all load through here, so a missing folder, a model transformers cannot read, custom code and a missing
tokenizer give the same one-line errors everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hf_heterofusion.errors import AdapterFormatError, AdapterNotFoundError


def existing_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise AdapterNotFoundError(f"{what} folder {path} does not exist")
    return path


def load_tokenizer(model_dir: str | Path, *, what: str = "model") -> Any:
    from transformers import AutoTokenizer

    model_dir = existing_dir(model_dir, what)
    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        raise AdapterFormatError(f"{what} {model_dir} has no usable tokenizer ({type(err).__name__}); save it into "
                                 f"that folder with `tokenizer.save_pretrained`") from err


def load_causal_lm(model_dir: str | Path, adapter_dir: str | Path | None = None, *, dtype: str | None = None,
                   trust_remote_code: bool = False, trainable: bool = False, what: str = "model") -> torch.nn.Module:
    """`AutoModelForCausalLM` from `model_dir` (float32 unless `dtype`), with the PEFT adapter of `adapter_dir`.

    float32 by default: on CPU bf16 matmuls are slow and tiny models train unstably in half precision. With an
    adapter, PEFT keeps the LoRA factors float32 whatever the base's dtype (`autocast_adapter_dtype`).
    """
    from transformers import AutoModelForCausalLM

    model_dir = existing_dir(model_dir, what)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype or "float32"),
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:  # transformers' "cannot load" errors; the message says what is missing
        raise AdapterFormatError(f"transformers cannot load the {what} {model_dir} "
                                 f"({str(err).strip().splitlines()[0]})") from err
    return model if adapter_dir is None else attach_adapter(model, adapter_dir, trainable=trainable)


def attach_adapter(model: torch.nn.Module, adapter_dir: str | Path, *, trainable: bool = False) -> torch.nn.Module:
    """The PEFT adapter of `adapter_dir` on `model` (`unload()` gives the untouched base back)."""
    from peft import PeftModel

    adapter_dir = existing_dir(adapter_dir, "adapter")
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
