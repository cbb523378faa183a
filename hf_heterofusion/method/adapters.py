# SPDX-License-Identifier: Apache-2.0
"""Read PEFT LoRA adapters into role-level modules (paper §2.2).

`load_adapter` reads `adapter_config.json` and `adapter_model.safetensors` (tolerantly, like PEFT: unknown config
keys are ignored) and returns a frozen `LoraAdapter` whose modules are *role units*: one per (layer, role).
Fused projections are split on read (B rows cut per role, A shared); `FusionModel._assemble` re-assembles the
fused B' (differentiably, during training) and `lora_key` finds the PEFT key of a module's factor on write.
Only safetensors are read by default: a pickle `.bin` adapter runs code when loaded, so it needs `allow_pickle`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from hf_heterofusion.constants import ADAPTER_CONFIG_NAME, ADAPTER_PICKLE_NAME, ADAPTER_WEIGHTS_NAME
from hf_heterofusion.data.safetensors_header import LORA_KEY_RE, PEFT_PREFIX
from hf_heterofusion.errors import AdapterFormatError, AdapterNotFoundError
from hf_heterofusion.method.roles import FUSED_ROLES, roles_of, split_rows


_LAYER_RE = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


@dataclass(frozen=True)
class LoraModule:
    """One role unit of an adapter: `dW = scale * B @ A` restricted to one role of one layer.

    `module` is the PEFT module path (e.g. `base_model.model.model.layers.3.self_attn.qkv_proj`); for a fused
    module, `rows` is the slice of its B that this role owns. Tensors are fp32 and must not be mutated.
    """

    module: str
    layer: int
    role: str
    A: torch.Tensor  # (r, d_in)
    B: torch.Tensor  # (d_out_role, r)
    scale: float
    rows: tuple[int, int] | None = None

    @property
    def rank(self) -> int:
        return self.A.shape[0]


@dataclass(frozen=True)
class LoraAdapter:
    """A loaded PEFT LoRA adapter. `tensors` holds every stored tensor by its PEFT key, for verbatim copies."""

    path: Path
    config: dict
    tensors: dict[str, torch.Tensor]
    modules: tuple[LoraModule, ...]
    num_layers: int
    base_config: dict | None = None
    other_keys: tuple[str, ...] = field(default=())

    @property
    def rank(self) -> int:
        return int(self.config.get("r", self.modules[0].rank if self.modules else 0))

    @property
    def lora_alpha(self) -> float:
        return float(self.config.get("lora_alpha", self.rank))

    @property
    def target_modules(self) -> tuple[str, ...]:
        tm = self.config.get("target_modules") or ()
        return tuple(sorted(tm)) if isinstance(tm, (list, tuple, set)) else (str(tm),)

    @property
    def family(self) -> str | None:
        return (self.base_config or {}).get("model_type")

    @property
    def hidden_size(self) -> int | None:
        cfg = self.base_config or {}
        return cfg.get("hidden_size") or next((m.A.shape[1] for m in self.modules if m.role == "q"), None)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(sorted({m.role for m in self.modules}))


def load_adapter(path: str | Path, *, allow_pickle: bool = False, base_config: dict | None = None) -> LoraAdapter:
    """Load a PEFT LoRA adapter directory.

    Args:
        path (`str` or `Path`): the adapter directory (`adapter_config.json` + weights).
        allow_pickle (`bool`, *optional*, defaults to `False`): also accept `adapter_model.bin`.
        base_config (`dict`, *optional*): the base model's `config.json`; read from the adapter's
            `base_model_name_or_path` when that is a local directory. Only used for family, depth and fused splits.

    Raises:
        `AdapterNotFoundError`: the path does not exist.
        `AdapterFormatError`: not a LoRA adapter, corrupt or truncated weights, NaN/Inf values, or pickle refused.
    """
    path = Path(path)
    if not path.exists():
        raise AdapterNotFoundError(f"adapter path {path} does not exist; check the path or Hub id")
    if not path.is_dir():
        raise AdapterFormatError(f"{path} is a file; pass the adapter directory that holds {ADAPTER_CONFIG_NAME}")
    config = _read_config(path)
    if base_config is None:
        base_config = _local_base_config(path, config)
    tensors = _read_tensors(path, allow_pickle)
    modules, other = _role_modules(path, config, tensors, base_config)
    _check_base_config(path, modules, base_config)
    layers = [m.layer for m in modules]
    num_layers = int((base_config or {}).get("num_hidden_layers") or (max(layers) + 1 if layers else 0))
    return LoraAdapter(path, config, tensors, tuple(modules), num_layers, base_config, tuple(other))


def _read_config(path: Path) -> dict:
    cfg_path = path / ADAPTER_CONFIG_NAME
    if not cfg_path.is_file():
        raise AdapterFormatError(f"{path} is not a PEFT adapter: {ADAPTER_CONFIG_NAME} is missing")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterFormatError(f"{cfg_path} is not valid JSON ({err}); re-save the adapter with PEFT") from None
    except OSError as err:
        raise AdapterNotFoundError(f"cannot read {cfg_path} ({err.strerror}); check its permissions") from None
    if not isinstance(config, dict):
        raise AdapterFormatError(f"{cfg_path} must hold a JSON object")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterFormatError(f"{path} has `peft_type: {peft_type}`; HeteroFusion fuses LoRA adapters only")
    if config.get("use_dora"):
        raise AdapterFormatError(f"{path} is a DoRA adapter; only plain LoRA is supported (retrain without use_dora)")
    return config


def _local_base_config(path: Path, config: dict) -> dict | None:
    base = config.get("base_model_name_or_path")
    candidates = [Path(base)] if base else []
    if base and not Path(base).is_absolute():
        candidates.append(path / base)
    for cand in candidates:
        try:
            if (cand / "config.json").is_file():
                return json.loads((cand / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
    return None


def _read_tensors(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    st_path, bin_path = path / ADAPTER_WEIGHTS_NAME, path / ADAPTER_PICKLE_NAME
    if st_path.is_file():
        try:
            tensors = load_file(st_path)
        except (SafetensorError, OSError, ValueError) as err:
            raise AdapterFormatError(
                f"{st_path} is corrupt or truncated ({str(err).splitlines()[0]}); re-download or re-save it"
            ) from None
    elif bin_path.is_file():
        if not allow_pickle:
            raise AdapterFormatError(
                f"{bin_path} is a pickle file, and loading pickles can run arbitrary code; convert it to "
                f"safetensors, or set `allow_pickle: true` if you trust its author"
            )
        try:
            tensors = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a bad pickle
            raise AdapterFormatError(f"{bin_path} could not be read ({type(err).__name__}); re-save it") from None
    else:
        raise AdapterFormatError(f"{path} has no {ADAPTER_WEIGHTS_NAME}; it is not a complete PEFT adapter")
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            nan, inf = int(value.isnan().sum()), int(value.isinf().sum())
            raise AdapterFormatError(f"{path}: tensor `{key}` contains {nan} NaN and {inf} Inf values; the adapter "
                                     f"is unusable (its training diverged?), retrain or re-export it")
    return tensors


def _check_base_config(path: Path, modules: list[LoraModule], base_config: dict | None) -> None:
    """The tensors must fit the base config they are read with: layer indices below its depth, inputs of the
    q/k/v/gate/up projections equal to its hidden size (o and down inputs vary by family, so they are not checked)."""
    depth, hidden = (base_config or {}).get("num_hidden_layers"), (base_config or {}).get("hidden_size")
    fix = "use the adapter trained on that base, or fix `base_model_name_or_path` in adapter_config.json"
    for m in modules:
        if isinstance(depth, int) and m.layer >= depth:
            raise AdapterFormatError(f"{path}: module `{m.module}` is in layer {m.layer} but the base model's "
                                     f"config.json has `num_hidden_layers: {depth}`; {fix}")
        if isinstance(hidden, int) and m.role in ("q", "k", "v", "gate", "up") and m.A.shape[1] != hidden:
            raise AdapterFormatError(f"{path}: module `{m.module}` takes {m.A.shape[1]} inputs but the base model's "
                                     f"config.json has `hidden_size: {hidden}`; {fix}")


def _role_modules(
    path: Path, config: dict, tensors: dict[str, torch.Tensor], base_config: dict | None
) -> tuple[list[LoraModule], list[str]]:
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    other: list[str] = []
    for key, value in tensors.items():
        match = LORA_KEY_RE.match(key)
        if match is None or "lora_embedding" in key:
            other.append(key)
            continue
        pairs.setdefault(match["module"], {})[match["factor"]] = value
    modules: list[LoraModule] = []
    for module, factors in sorted(pairs.items()):
        if set(factors) != {"A", "B"}:
            missing = "lora_B" if "A" in factors else "lora_A"
            raise AdapterFormatError(f"{path}: module `{module}` has no {missing} tensor; the adapter file is "
                                     f"incomplete, re-save it with PEFT")
        A, B = factors["A"].float(), factors["B"].float()
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
            raise AdapterFormatError(
                f"{path}: module `{module}` has incompatible shapes A{tuple(A.shape)} B{tuple(B.shape)}"
            )
        layer_match = _LAYER_RE.search(module + ".")
        roles = roles_of(module)
        if layer_match is None or not roles:
            other.extend(k for k in tensors if k.startswith(module + ".lora_"))
            continue
        layer, scale = int(layer_match.group(1)), peft_scaling(config, module, A.shape[0])
        name = module.rsplit(".", 1)[-1]
        if name in FUSED_ROLES and len(FUSED_ROLES[name]) > 1:
            split = split_rows(name, B.shape[0], A.shape[1], base_config)
            for role, start, stop in split.slices:
                modules.append(LoraModule(module, layer, role, A, B[start:stop], scale, (start, stop)))
        else:
            modules.append(LoraModule(module, layer, roles[0], A, B, scale))
    return modules, other


def peft_scaling(config: dict, module: str, rank: int) -> float:
    r"""PEFT's `scaling` of one module: `lora_alpha / r` (rsLoRA: `/ sqrt(r)`), honouring `alpha_pattern`.

    PEFT (`peft.utils.other.get_pattern_key`) takes the FIRST pattern, in the order of adapter_config.json
    (which PEFT writes with sorted keys), that matches a whole dotted tail of the module's name in the base model
    (`(.*\.)?(pattern)$`): `q_proj` matches `model.layers.0.self_attn.q_proj` but not `...xq_proj`, and a later
    pattern never overrides an earlier one. `module` may carry PEFT's `base_model.model.` prefix. `rank` is the module's real rank (its
    A's rows), which already reflects any `rank_pattern` (matched by the same rule when the adapter was built).
    """
    name = module.removeprefix(PEFT_PREFIX)
    alpha = float(config.get("lora_alpha", rank))
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", name):
            alpha = float(value)
            break
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def lora_key(tensors: dict[str, torch.Tensor], module: str, factor: str) -> str:
    """The stored key of `module`'s `lora_A` or `lora_B` (`factor` "A"/"B"), with or without the adapter name."""
    for key in (f"{module}.lora_{factor}.weight", f"{module}.lora_{factor}.default.weight"):
        if key in tensors:
            return key
    raise KeyError(f"{module}.lora_{factor}")
