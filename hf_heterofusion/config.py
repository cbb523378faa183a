# SPDX-License-Identifier: Apache-2.0
"""The one validated fusion config.

`FusionConfig` holds everything a user types: the inputs (target base, anchor adapter, sources, replay file)
and the method's parameters, with the paper's key names and defaults (paper §2.6). It is a frozen pydantic
model with `extra="forbid"`, so a typo such as `mu_gat:` fails, naming the key and the closest valid one.

Example (the `parameters:` block of a mergekit YAML uses the same keys, minus the inputs)::

    target_model: ./llama-base
    target_adapter: ./llama-task-a
    sources: [./qwen-task-b, {adapter: ./mistral-task-c, weight: 0.5}]
    replay: replay.jsonl
    seed: 0
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from hf_heterofusion.defaults import TEACHER_DEFAULTS, default_lr, dependent_default
from hf_heterofusion.errors import ConfigError


def _ratio_from_fraction(value: Any) -> Any:
    """The reference's configs write ratios as strings, `"1"` or `"3/4"`; anything else is left to the float check.

    It is part of the field's type (not a model validator) so mergekit's parameter check, which re-uses the
    field's type and constraints, accepts the same spellings.
    """
    if not isinstance(value, str) or "/" not in value:
        return value
    num, _, den = value.partition("/")
    try:
        ratio = float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        ratio = math.nan
    if not math.isfinite(ratio):
        raise ValueError("must be a number or a fraction `a/b` of two numbers, such as `3/4`")
    return ratio


def _kinds_from_text(value: Any) -> Any:
    """`none, works_for` -> (`none`, `works_for`): a mergekit YAML takes single values only (a list is a gradient)."""
    return tuple(k.strip() for k in value.split(",") if k.strip()) if isinstance(value, str) else value


class SourceSpec(BaseModel):
    """One source expert: a LoRA adapter trained on another base (whose weights are never loaded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    adapter: str = Field(description="Path or Hub id (`repo@revision`) of the source LoRA adapter.")
    base_model: str | None = Field(
        default=None, description="Path or Hub id of the source's base model: loaded only when this source teaches "
        "(`teacher: sources`); otherwise shown on the card.")
    weight: float = Field(default=1.0, ge=0.0, description="Scales this source's influence: "
                          "`log(weight)` is added to the attention logits of its tokens (0 masks it, 1 = unweighted).")
    name: str | None = Field(default=None, description="Name replay rows use in `\"source\"` (default: the "
                             "adapter folder's name).")
    # --- teacher stage (beyond the paper; used only with `teacher: sources`) ----------------------------------
    prompts: str | None = Field(default=None, description="JSONL of unlabeled prompts of this source's task "
                                "(`prompt` or `messages`; a `response` present is ignored); the source labels them.")
    synthesize: int = Field(default=0, ge=0, le=100_000, description="Also make this many new prompts by few-shot "
                            "prompting the source expert with its seed prompts.")
    synthesizer: str = Field(
        default="source", description="Who writes the `synthesize` prompts: `source` (default: this source's base, "
        "adapter off, continuing a list of the seeds), `target` (the target base model; asked in a chat turn when "
        "it has a chat template), or a model path or Hub id (the same).")
    prompt_format: Literal["auto", "plain", "chat"] = Field(
        default="auto", description="How the teacher sees a prompt: plain text, its chat template, or `auto` "
        "(chat when the rows are `messages` and the source tokenizer has a chat template).")


class FusionConfig(BaseModel):
    """Inputs and parameters of one HeteroFusion run (paper defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- inputs -----------------------------------------------------------------------------------------------
    target_model: str = Field(description="Path or Hub id of the frozen target base model.")
    target_adapter: str = Field(description="Path or Hub id of the anchor LoRA adapter on the target.")
    sources: tuple[SourceSpec, ...] = Field(min_length=1, description="Source LoRA adapters (other families).")
    replay: str | None = Field(default=None, description="JSONL replay set; required unless `max_steps: 0`.")

    # --- topology alignment (paper §2.1) -----------------------------------------------------------------------------
    layer_alignment: Literal["tail", "head", "uniform", "naive"] = Field(
        default="tail", description="How target layers are paired with source layers; `tail` is the paper's."
    )
    transfer_ratio: Annotated[float, BeforeValidator(_ratio_from_fraction)] = Field(
        default=1.0, gt=0.0, le=1.0, description="Fraction of aligned layer pairs kept (a number or `a/b`, e.g. `3/4`)."
    )

    # --- blocking (paper §2.2) ------------------------------------------------------------------------------------
    block_size: int | Literal["auto"] = Field(
        default="auto", description="Rows per block token; `auto` (default) = next power of two >= the widest hidden "
        "size of target and sources, which is the paper's 4096 on 4096-wide models."
    )

    # --- transfer nets (paper §2.3-2.5) ---------------------------------------------------------------------------
    embed_dim: int | Literal["auto"] = Field(
        default="auto", description="Embedding width E of the encoder and attention. `auto` (default) scales with the "
        "target: the largest `num_heads` x 2^k that is <= its hidden size / 4 and <= the paper's 1024 (so 1024 on "
        "4096-wide 7-8B targets, 128 on SmolLM2's 576), at least 4 x `num_heads`, then halved while the transfer nets "
        "would have more parameters than the target model itself. The resolved value is in the report.")
    num_heads: int = Field(default=8, ge=1, description="Cross-attention heads.")
    max_position_embeddings: int = Field(default=4096, ge=1, description="Size of the learned position table.")
    position_mode: Literal["concat", "per_source"] = Field(
        default="concat",
        description="`concat` indexes positions over the concatenated sources (reference quirk); "
        "`per_source` restarts positions for each source and adds a learned source embedding.",
    )
    mu_gate: float = Field(default=0.1, ge=-1.0, le=1.0, description="Fixed shift of the SVD-guided gate logits.")
    alpha_init: float = Field(default=0.3, gt=0.0, le=10.0, description="Initial per-role update scale alpha_m.")
    update_mode: Literal["b_only", "a_only", "ab_joint"] = Field(
        default="b_only", description="Which LoRA factor receives the predicted update (paper: `b_only`)."
    )

    # --- conflict-aware regulariser (paper §2.3) ------------------------------------------------------------------
    lambda_reg: float = Field(default=0.005, ge=0.0, description="Weight of the RDM regulariser.")
    mu_target: float = Field(default=0.0, description="Mean of the rectified Gaussian RDM target.")
    sigma_target: float = Field(default=1.0, gt=0.0, description="Std of the rectified Gaussian RDM target.")
    num_projections: int = Field(default=2048, ge=1, description="Random directions K of the sliced Wasserstein.")

    # --- training (paper §2.6) ------------------------------------------------------------------------------------
    lr: float = Field(default=5e-5, gt=0.0, le=1.0, description="AdamW learning rate. Unset: the paper's 5e-5 for "
                      "its transfer nets; 2.5e-4 for the nets with `teacher: sources` and 1e-3 for `trainer: lora` (the "
                      "benchmark's dev-split choices: `default_lr`).")
    weight_decay: float = Field(default=0.01, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(
        default=None, gt=0.0, description="Clip the gradient's total norm to this before each optimiser step "
        "(transformers' Trainer uses 1.0); unset: no clipping, as the paper trains (a fit at the edge of its lr can "
        "blow up: benchmark v10). With `teacher: sources` the default is 1.0 (benchmark v11); `null` turns it off.")
    warmup_ratio: float = Field(default=0.05, ge=0.0, lt=1.0, description="Linear warmup share of optimiser steps.")
    warmup_start: Literal["zero", "first_step"] = Field(
        default="zero", description="`zero`: the first warmup step runs at lr 0 (transformers' schedule, the "
        "reference's); `first_step`: warmup step k of W runs at lr*(k+1)/(W+1), never 0.")
    epochs: int = Field(default=3, ge=1, description="Passes over the replay set.")
    min_steps: int = Field(
        default=0, ge=0, description="Train at least this many optimiser steps: more passes than `epochs` over a "
        "replay set too small to fill them (the last pass may stop part-way; `max_steps` still caps); 0: `epochs` "
        "passes only (the paper's).")
    batch_size: int = Field(default=1, ge=1, description="Sequences per micro-batch.")
    gradient_accumulation_steps: int = Field(default=8, ge=1, description="Micro-batches per optimiser step.")
    max_length: int = Field(default=1024, ge=8, description="Maximum tokens per replay example.")
    max_steps: int | Literal["auto"] | None = Field(
        default=None, description="Stop after this many optimiser steps (`null`: `epochs` passes). `auto`: train "
        "`epochs` passes on all but a held-out slice of each task's rows (1/8, at most 8 per task), score the "
        "adapter on that slice 8 times along the way (greedy answers, token F1, averaged over tasks) and keep the "
        "best step's adapter; the curve and the chosen step are in the report.")
    step_selection: Literal["none", "held_out"] = Field(
        default="none", description="`held_out`: the selection `max_steps: auto` does (a held-out slice per task, "
        "8 scored points, the best step's adapter kept) within a fixed `max_steps` budget; `none`: the last step.")
    amortize_nets: bool = Field(
        default=True,
        description="Run the transfer nets once per accumulation window (same CE gradient, one RDM draw per "
        "window, fast kernels); `false` is the reference: nets and a fresh RDM draw per micro-batch.",
    )
    torch_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        default=None, description="dtype of the frozen target model during the fit (`null`: float32; mergekit's "
        "`dtype:` sets it); the transfer nets, the patched factors and the loss stay float32.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(default="no", description="accelerate mixed precision.")
    seed: int = Field(default=0, ge=0, description="Seeds net init, data order and RDM sampling.")
    checkpoint_every: int = Field(default=50, ge=0, description="Checkpoint every N optimiser steps (0 = never).")
    memory_check: bool = Field(default=True, description="Before a fit (and in `check`), compare the estimated peak "
                               "memory with what the machine (or GPU) has available and stop with exit 2 when it "
                               "does not fit; `false` (CLI: `--force`) runs anyway.")

    # --- teacher stage (beyond the paper; off by default) -------------------------------------------
    teacher: Literal["none", "sources"] = Field(
        default="none", description="`sources`: each source expert (its base + adapter) labels prompts of its task, "
        "and the labelled rows join the replay set; `none` is the faithful method.")
    teacher_max_new_tokens: int = Field(default=64, ge=1, le=4096, description="Longest teacher answer (tokens).")
    teacher_batch_size: int = Field(
        default=16, ge=1, description="Prompts per batched teacher generation (16: >= 4x one prompt at a time with a "
        "real Gemma-3 expert on CPU, where 8 gave 3.1x; lower it if a large teacher runs out of memory).")
    teacher_min_logprob: float | None = Field(
        default=None, le=0.0, description="Keep only answers whose mean token log-probability under the teacher is "
        "at least this (e.g. -1.0); `null` keeps all.")
    teacher_drop_truncated: bool = Field(
        default=True, description="Drop answers that hit `teacher_max_new_tokens` without an end-of-sequence token.")
    teacher_repeat_ngram: int = Field(
        default=4, ge=0, description="Drop answers in which some n-gram of this many tokens occurs 3 or more times "
        "(degenerate loops); 0 turns the filter off.")
    teacher_placebo: bool = Field(
        default=False, description="Control: teach with each source base whose adapter has its B set to zero "
        "(same base, no skill), to measure what the adapters themselves add.")
    synthesis_temperature: float = Field(
        default=1.0, gt=0.0, le=2.0, description="Sampling temperature of the prompt writer (`synthesize`).")
    synthesis_top_p: float = Field(
        default=0.95, gt=0.0, le=1.0, description="Nucleus (top-p) mass of the prompt writer (`synthesize`).")
    synthesis_steer: Literal["none", "answer"] = Field(
        default="none", description="`answer`: write each answer kind of the seeds in turn (`none`, a relation "
        "found, each label): a query shows the writer only seeds of one kind (kinds from the seed rows' own "
        "answers, else from the expert's answers on them) and each kind fills an equal share of `synthesize`, so a "
        "writer that drifts to the commonest case (a sentence stating no relation) writes the rarer ones as often; "
        "`none`: every query shows any seeds (on the benchmark's 4 card seeds steering was no better: README v6).")
    synthesis_style: Literal["list", "paraphrase", "mixed"] = Field(
        default="list", description="How the writer makes a prompt: `list` (continue a list of the seeds' varying "
        "parts: new texts in the writer's own words, which drift off the task), `paraphrase` (reword one seed's "
        "part, the seeds in turn: a base writer continues pairs of a text and its rewording, a chat writer is asked "
        "to rewrite it), or `mixed` (the two in alternate queries).")
    synthesis_rounds: int = Field(
        default=1, ge=1, le=8, description="Write `synthesize` in this many rounds (self-instruct): from the second "
        "round on, each query shows the writer 2 seeds and 2 prompts it wrote before that the expert labelled and "
        "every filter kept, drawn alike from each answer kind the expert gave, so a wording or a relation it found "
        "once is shown again; 1 (default) shows the seeds only (3 rounds were lower on the benchmark: the writer drifts "
        "further off the task, README v14). Works with `synthesis_style: list` and no steering.")
    teacher_on_task_filter: bool = Field(
        default=True, description="Drop synthesized prompts whose answers do not look like the expert's answers on "
        "its seeds (punctuation, length) or on which its adapter barely engages (TiTok's gain over its base).")
    teacher_discriminator: bool = Field(
        default=False, description="Also drop synthesized prompts that a classifier tells apart from the seeds "
        "(Trans-LoRA's real-vs-synthetic filter: a logistic regression on the expert base's view of each prompt, "
        "cross-fitted); needs 16 seeds or more per synthesizing source.")
    teacher_min_token_prob: float | None = Field(
        default=None, gt=0.0, lt=1.0, description="`unsure`: drop a synthesized row when some token of the "
        "expert's greedy answer had probability below this (e.g. 0.9): on a written prompt off its task the expert "
        "hesitates, and its hesitant answers are mostly wrong (`Beth and Charlie are married.` -> `works_for: Beth, "
        "Charlie`); `null` keeps them. Prompts you give are never judged by it.")
    # A tuple (mergekit hashes its method's parameters), written back as one string (its YAML takes no lists).
    teacher_unsure_spares: Annotated[tuple[str, ...], BeforeValidator(_kinds_from_text),
                                     PlainSerializer(", ".join, return_type=str)] = Field(
        default=(), description="Answer kinds (the answer's words that its prompt lacks: `none`, "
        "`works_for`) that `teacher_min_token_prob` never drops: a hesitant `none` on a written prompt is mostly "
        "right where a hesitant relation is mostly wrong. A list, or one comma-separated string (`none`; the form "
        "a mergekit YAML takes).")
    teacher_min_excess_ratio: float = Field(
        default=0.5, ge=0.0, le=10.0, description="`off_skill`: keep a synthesized row when its answer's mean "
        "log-prob gain over the expert's base is at least this x the median gain of the seed answers of its kind "
        "(all seeds' median for a kind no seed shows; not judged when every seed got the same answer).")
    teacher_topk: int = Field(
        default=8, ge=1, le=64, description="Log-probs kept per generated teacher token (its k most likely tokens, "
        "captured in the labelling pass and cached): what `teacher_kd_weight` distils.")
    teacher_kd_weight: float = Field(
        default=0.0, ge=0.0, le=100.0, description="Token-level distillation from the teachers across tokenizers: "
        "the loss adds this x a KL to the teacher's top-k distribution where a target token spans exactly one "
        "teacher token (ULD's sorted-probability distance where the two split the text differently); 0 = greedy "
        "labels only.")
    teacher_token_weighting: Literal["none", "skill"] = Field(
        default="none", description="`skill` (TiTok): on teacher rows, weight each answer token's cross-entropy by "
        "how much the expert's adapter raised it over the expert's own base (half of the weight stays uniform); "
        "`none`: every token counts the same.")
    anchor_kd_weight: float = Field(
        default=0.0, ge=0.0, le=100.0, description="Self-distillation that protects the anchor's own task: on "
        "labelled rows of no source's task, add this x a KL to the target-with-anchor's own top-`teacher_topk` "
        "distribution (same tokenizer: exact); 0 = off.")
    replay_balance: Literal["none", "task", "task_answer"] = Field(
        default="none", description="`task`: every task (a row's `task`/`source` tag; a teacher's rows count as "
        "its source's task) is an equal share of each epoch, smaller ones repeated, so many teacher rows do not "
        "drown a few labelled ones; `task_answer`: the same, and within each task every answer kind (`none`, "
        "`works_for`, a label) drawn alike; `none`: every row once per epoch (the reference). With `teacher: "
        "sources` the default is `task`.")
    trainer: Literal["transfer_nets", "lora"] = Field(
        default="transfer_nets", description="What learns from the (replay + teacher) rows: the paper's transfer "
        "nets, or `lora`: the anchor adapter itself, trained directly (data-only SFT). With `teacher: sources` the "
        "default is `lora` (it trained better on the teachers' rows in the benchmark).")

    # --- output ------------------------------------------------------------------------------------------------
    output: Literal["adapter", "merged", "both"] = Field(default="adapter", description="What to write.")

    # --- safety ------------------------------------------------------------------------------------------------
    allow_pickle: bool = Field(default=False, description="Allow `.bin` pickle adapters (unpickling runs code).")
    trust_remote_code: bool = Field(default=False, description="Allow target models with custom code.")

    @model_validator(mode="before")
    @classmethod
    def _teacher_defaults(cls, data: Any) -> Any:
        """`teacher: sources` changes some defaults (`TEACHER_DEFAULTS`), and an unset `lr` follows what trains
        (`default_lr`); keys the user sets always win."""
        if not isinstance(data, dict):
            return data
        if data.get("teacher") == "sources":
            data = {**TEACHER_DEFAULTS, **data}
        if "lr" not in data:
            fields = cls.model_fields
            lr = default_lr(data.get("trainer", fields["trainer"].default),
                            data.get("teacher", fields["teacher"].default))
            if lr is not None:
                data = {**data, "lr": lr}
        return data

    @field_validator("sources", mode="before")
    @classmethod
    def _sources_from_strings(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple({"adapter": v} if isinstance(v, str) else v for v in value)
        return value

    @field_validator("embed_dim", mode="before")
    @classmethod
    def _check_embed_dim(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 8:
            raise ValueError("must be an integer >= 8 (paper: 1024) or `auto`")
        return value

    @field_validator("max_steps", mode="before")
    @classmethod
    def _check_max_steps(cls, value: Any) -> Any:
        if value is None or value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("must be an integer >= 0, `auto` or null")
        return value

    @field_validator("block_size", mode="before")
    @classmethod
    def _check_block_size(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65536:
            raise ValueError("must be an integer from 1 to 65536 (paper: 4096) or `auto`")
        return value

    @property
    def selects_step(self) -> bool:
        """Whether training keeps the best held-out step (`max_steps: auto` or `step_selection: held_out`)."""
        return self.max_steps == "auto" or self.step_selection == "held_out"

    @model_validator(mode="after")
    def _check_heads(self) -> FusionConfig:
        if self.embed_dim != "auto" and self.embed_dim % self.num_heads:
            raise ValueError(f"`embed_dim` ({self.embed_dim}) must be a multiple of `num_heads` ({self.num_heads}); "
                             f"change one of them")
        if self.teacher == "none" and (self.teacher_kd_weight or self.teacher_token_weighting != "none"):
            raise ValueError("`teacher_kd_weight` and `teacher_token_weighting` distil the source teachers' answers: "
                             "set `teacher: sources` (with each source's `base_model`) or turn them off")
        if self.teacher_unsure_spares and self.teacher_min_token_prob is None:
            raise ValueError("`teacher_unsure_spares` exempts answer kinds from `teacher_min_token_prob`, which is "
                             "unset: set it (e.g. 0.9) or remove `teacher_unsure_spares`")
        if self.synthesis_rounds > 1 and (self.synthesis_style != "list" or self.synthesis_steer != "none"):
            raise ValueError("`synthesis_rounds` above 1 shows the writer its own kept prompts in a list: set "
                             "`synthesis_style: list` and `synthesis_steer: none`, or `synthesis_rounds: 1`")
        if self.replay is None and self.max_steps != 0 and self.teacher == "none":
            raise ValueError("`replay` is required (a JSONL file); set `max_steps: 0` to export without training")
        return self

    # --- loading -----------------------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, where: str = "config") -> FusionConfig:
        """Validate a plain mapping, turning pydantic's report into one actionable `ConfigError` line."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(_explain(err, where)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> FusionConfig:
        """Load a config from a YAML file (relative input paths are resolved against the file's folder)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or type(err).__name__
            raise ConfigError(f"cannot read config file {path} ({reason}); pass a readable YAML file") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if data is None:
            raise ConfigError(f"config file {path} is empty; it needs `target_model`, `target_adapter` and `sources`")
        if isinstance(data, dict):
            data = resolve_relative(data, path.parent)
        return cls.from_mapping(data, where=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


PARAMETER_KEYS = tuple(k for k in FusionConfig.model_fields if k not in ("target_model", "target_adapter", "sources"))


def resolve_relative(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Input paths relative to the config file's folder become absolute when they exist there (Hub ids stay)."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and not Path(value).is_absolute() and (folder / value).exists():
            return str((folder / value).resolve())
        return value

    out = dict(data)
    for key in ("target_model", "target_adapter", "replay"):
        if key in out:
            out[key] = fix(out[key])
    if isinstance(out.get("sources"), list):
        out["sources"] = [
            fix(s) if isinstance(s, str) else ({**s, **{k: fix(s[k]) for k in ("adapter", "base_model", "prompts")
                                                    if k in s}} if isinstance(s, dict) else s)
            for s in out["sources"]
        ]
    return out


def _explain(err: ValidationError, where: str) -> str:
    """First validation problem as one line: location, what is wrong, and the closest valid key for typos."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        key = str(first["loc"][-1])
        fields = SourceSpec.model_fields if len(first["loc"]) > 1 else FusionConfig.model_fields
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f"; did you mean `{close[0]}`?" if close else f"; valid keys: {', '.join(fields)}"
        return f"{where}: unknown key `{loc}`{hint}"
    if first["type"] == "missing":
        return f"{where}: required key `{loc}` is missing"
    msg = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if not first["loc"]:  # a check across keys: its message names them
        return f"{where}: {msg}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    field = FusionConfig.model_fields.get(str(first["loc"][0])) if len(first["loc"]) == 1 else None
    default = field.default if field is not None and isinstance(field.default, (int, float, str)) else None
    hint = f"; the default is {default!r}" if default is not None and not isinstance(default, bool) else ""
    depends = dependent_default(str(first["loc"][0]), default) if field is not None else None
    if depends:
        hint = f"; the default is {depends}"
    return f"{where}: `{loc}` {msg}{shown}{hint}"

