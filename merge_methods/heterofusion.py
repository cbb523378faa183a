# SPDX-License-Identifier: Apache-2.0
"""The `heterofusion` merge method for mergekit 0.1.5: its spec, its parameters and its data-free kernel.

Two modes share the name `merge_method: heterofusion`:

* **Trained mode** (the paper's method). `base_model: target+anchor_adapter`, sources are LoRA adapters of any
  family, and `parameters:` holds the `FusionConfig` keys (replay set, block size, nets, training). mergekit's
  planner cannot express it (different architectures, depths and widths), so `hf-heterofusion merge` plans it on
  mergekit's graph engine itself (`planner.py`). The kernel below is not used.
* **Data-free mode** (this kernel). What mergekit's own planner runs when every input already has the target's
  architecture, e.g. `models: [target+lora_a, target+lora_b]` over `base_model: target`, or any mergekit config
  run through plain `mergekit-yaml`. Per tensor it is *SVD-gated denoising of aligned deltas*: each non-base
  input's delta to the base is reduced to its top singular directions that hold `density` of its spectral
  energy (the low-energy tail, where independent fine-tunes mostly disagree, is gated out), and the gated deltas
  are averaged with `weight` (summed when `normalize: false`) and added to the base. 0-/1-D tensors and
  vocabulary-indexed tensors (embeddings, LM head) are not gated: a per-token spectrum is not noise, and their SVD
  would be the most expensive of the model. Without a base there is no delta, and the kernel takes the weighted
  average of the inputs.

Every parameter has a default, so mergekit's registry-wide conformance test (a random 6x4 group named `w`, with
or without a base, strided inputs) passes with the method registered. The spec also declares every `FusionConfig`
parameter (with its constraints and description), so mergekit validates them and its card lists them; the
kernel ignores them. mergekit silently drops unknown keys, which is why `hf-heterofusion merge` checks the YAML's
`parameters:` itself before mergekit sees it (`yaml_config.py`).

This module imports mergekit only inside `build_method()`: the start-up hook may run `register_all()` while
mergekit's registry is being imported, and a module-level `import mergekit...` here would re-enter that import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pydantic import Field

from hf_heterofusion.config import PARAMETER_KEYS, FusionConfig
from hf_heterofusion.constants import PAPER_URL


if TYPE_CHECKING:
    from mergekit.merge_methods.base import MergeMethod, ParameterSpec, TensorGroup


METHOD_NAME = "heterofusion"
PRETTY_NAME = "HeteroFusion"
DEFAULT_DENSITY = 0.9

# The data-free kernel's own parameters; `weight` is also the trained mode's per-source weight.
KERNEL_PARAMETERS: dict[str, tuple[Any, Any, str]] = {
    "weight": (Annotated[float, Field(ge=0.0)], 1.0,
               "Per model: scale of this input's contribution (trained mode: the source's `SourceSpec.weight`)."),
    "density": (Annotated[float, Field(gt=0.0, le=1.0)], DEFAULT_DENSITY,
                "Data-free mode: fraction of each delta's spectral energy kept (top singular directions)."),
    "normalize": (bool, True, "Data-free mode: divide the weighted sum of deltas by the sum of the weights."),
}


@torch.no_grad()
def heterofusion_kernel(group: TensorGroup, /, *, weight: Mapping[Any, float], density: float = DEFAULT_DENSITY,
                        normalize: bool = True, **_fusion_parameters: Any) -> torch.Tensor:
    """Data-free HeteroFusion of one tensor group (see the module docstring); inputs are never modified.

    Args:
        group (`TensorGroup`): the inputs of one output tensor, all of one shape; at most one is the base.
        weight (`Mapping`): per non-base input id, its weight (mergekit binds a scalar to every input).
        density (`float`, *optional*, defaults to 0.9): spectral energy kept per delta, in (0, 1].
        normalize (`bool`, *optional*, defaults to `True`): weighted mean instead of weighted sum.
        **_fusion_parameters: the trained mode's `FusionConfig` parameters; unused here.

    Returns:
        `torch.Tensor` of the group's shape and input dtype.
    """
    entries = group.non_base
    base = group.base
    in_dtype = group.entries[0].tensor.dtype
    # CPU half-precision matmuls and SVDs are slow or missing; fp64 inputs keep their precision.
    work = torch.float64 if in_dtype == torch.float64 else torch.float32
    if not entries:
        return base.tensor.clone()
    weights = [float(weight[e.id]) for e in entries]
    total = sum(weights)
    gate = base is not None and group.metadata.vocabulary_axis is None
    reference = base.tensor.to(work) if base is not None else None
    acc = None
    for entry, w in zip(entries, weights):
        x = entry.tensor.to(work)
        term = x - reference if reference is not None else x
        if gate:
            term = svd_gate(term, density)
        acc = term * w if acc is None else acc.add_(term, alpha=w)
    if normalize and total > 0:
        acc = acc / total
    out = acc if reference is None else reference + acc
    return out.to(in_dtype)


def svd_gate(delta: torch.Tensor, density: float) -> torch.Tensor:
    """`delta` reduced to its fewest top singular directions holding `density` of its energy (sum of S^2).

    Tensors with fewer than two dimensions, or a single row or column, have no spectrum to gate and are returned
    as they are; higher-dimensional tensors are gated as `(shape[0], -1)` matrices.
    """
    if delta.dim() < 2 or min(delta.shape[0], delta[0].numel()) < 2 or density >= 1.0:
        return delta
    # Contiguous first: the SVD of a strided view can take another LAPACK path and differ in the last bits, and
    # the result must not depend on how the caller laid out its tensors.
    matrix = delta.reshape(delta.shape[0], -1).contiguous()
    U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
    energy = S.square()
    total = energy.sum()
    if total <= 0:
        return torch.zeros_like(delta)
    kept = int((energy.cumsum(0) / total < density).sum().item()) + 1
    kept = min(kept, S.numel())
    return ((U[:, :kept] * S[:kept]) @ Vh[:kept]).reshape(delta.shape)


def parameter_specs() -> tuple[ParameterSpec, ...]:
    """The spec's parameters: the kernel's three, then every `FusionConfig` parameter with its constraints."""
    from mergekit.merge_methods.base import ParameterScope, ParameterSpec

    specs = [
        ParameterSpec(name, value_type, ParameterScope.NON_BASE if name == "weight" else ParameterScope.SHARED,
                      default=default, description=description)
        for name, (value_type, default, description) in KERNEL_PARAMETERS.items()
    ]
    for key in PARAMETER_KEYS:
        field = FusionConfig.model_fields[key]
        # Field constraints (ge, le, ...) live in `metadata`; re-attaching them lets mergekit's TypeAdapter apply
        # them too. Model-level checks (embed_dim % num_heads, ...) stay with FusionConfig.
        value_type = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        specs.append(ParameterSpec(key, value_type, ParameterScope.SHARED,
                                   default=field.get_default(call_default_factory=True),
                                   description=f"Trained mode: {field.description}"))
    return tuple(specs)


def build_method() -> MergeMethod:
    """A new, unregistered `heterofusion` method object (register it with `register_all()`)."""
    from mergekit.merge_methods.base import (
        BasePolicy,
        FunctionalGroupMergeMethod,
        InputContract,
        MergeMethodSpec,
        OptionalTensorPolicy,
    )

    spec = MergeMethodSpec(
        name=METHOD_NAME,
        parameters=parameter_specs(),
        # A base is optional so that baseless groups (conformance test, `models:` without `base_model`) work.
        contract=InputContract(base=BasePolicy.OPTIONAL, min_inputs=1),
        pretty_name=PRETTY_NAME,
        reference_url=PAPER_URL,
        # An optional weight only the base has (e.g. a bias) is copied from the base.
        optional_tensor_policy=OptionalTensorPolicy.PASSTHROUGH_BASE_SINGLETON,
        uses_accelerator=True,
    )
    return FunctionalGroupMergeMethod(spec, heterofusion_kernel)


__all__ = ["METHOD_NAME", "build_method", "heterofusion_kernel", "parameter_specs", "svd_gate"]
