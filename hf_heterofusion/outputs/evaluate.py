# SPDX-License-Identifier: Apache-2.0
"""`--eval`: score a finished fusion on held-out replay rows, so the card can state measured numbers.

    split_replay(replay, fraction, seed)   -> training rows (a new JSONL the fusion trains on) + held-out rows
    evaluate_output(out_dir, ...)          -> greedy answers of the fused adapter and of the anchor adapter alone
                                              (`generation.generate_answers`), exact match and token F1 against the
                                              held-out responses, written to the report's `evaluation` and the card

Held-out rows never reach training: the split happens before the fusion and the fusion reads only the training
part. Rows may carry a `"source"` (or `"task"`) field; scores are then also given per value, which is how the
card shows whether the anchor's task was kept and the sources' tasks were gained.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.constants import ADAPTER_CONFIG_NAME, MERGED_SUBDIR
from hf_heterofusion.data.generation import generate_answers
from hf_heterofusion.data.models import load_causal_lm, load_tokenizer
from hf_heterofusion.data.replay import examples_from_rows, parse_row
from hf_heterofusion.data.scoring import token_f1
from hf_heterofusion.errors import ConfigError, ReplayDataError
from hf_heterofusion.inputs import resolve_input
from hf_heterofusion.outputs.report import FusionReport
from hf_heterofusion.outputs.writer import rewrite_report


ALL = "all"


@dataclass(frozen=True)
class HeldOut:
    """Rows kept out of training, and where they came from (shown on the card)."""

    rows: tuple[dict, ...]
    description: str


def read_rows(path: str | Path) -> list[dict]:
    """The JSON rows of a replay-style JSONL file (each checked by `replay.parse_row`)."""

    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ReplayDataError(f"cannot read {path} ({err.strerror or type(err).__name__})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ReplayDataError(f"{path}:{number} is not valid JSON ({err.msg})") from None
        parse_row(row, where=str(path), line=number)
        rows.append(row)
    return rows


def split_replay(replay: str | Path, fraction: float, seed: int, out_path: Path) -> HeldOut:
    """Write the training part of `replay` to `out_path` and return the held-out part (seeded, reproducible)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--eval-fraction must be between 0 and 1 (exclusive), got {fraction}")
    rows = read_rows(replay)
    if len(rows) < 2:
        raise ConfigError(f"--eval needs at least 2 replay rows to hold some out; {replay} has {len(rows)} (pass "
                          f"--eval-file with separate test rows)")
    order = list(range(len(rows)))
    random.Random(f"heldout/{seed}").shuffle(order)
    n_held = min(max(1, round(fraction * len(rows))), len(rows) - 1)
    held = set(order[:n_held])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("".join(json.dumps(r) + "\n" for i, r in enumerate(rows) if i not in held), encoding="utf-8")
    return HeldOut(tuple(rows[i] for i in sorted(held)),
                   f"{n_held} of {len(rows)} replay rows held out of training ({fraction:.0%}, seed {seed})")


def held_out_file(path: str | Path) -> HeldOut:
    rows = read_rows(path)
    if not rows:
        raise ConfigError(f"--eval-file {path} has no rows")
    return HeldOut(tuple(rows), f"{len(rows)} rows of {Path(path).name} (not used in training)")


def score_answers(predictions: Sequence[str], rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Exact match and F1 (0..100) overall and per `source`/`task` value of the rows."""

    groups: dict[str, list[tuple[str, str]]] = {ALL: []}
    for prediction, row in zip(predictions, rows):
        reference = parse_row(row).response.strip()
        pair = (prediction.strip(), reference.split("\n", 1)[0].strip())
        groups[ALL].append(pair)
        label = row.get("source") or row.get("task")
        if isinstance(label, str):
            groups.setdefault(label, []).append(pair)
    return {
        name: {"exact_match": round(100 * sum(p == r for p, r in pairs) / len(pairs), 2),
               "f1": round(100 * sum(token_f1(p, r) for p, r in pairs) / len(pairs), 2), "rows": len(pairs)}
        for name, pairs in groups.items()
    }


def _answers(base_dir: Path, adapter_dir: Path | None, rows: Sequence[dict], max_new_tokens: int) -> list[str]:
    model, tokenizer = load_causal_lm(base_dir, adapter_dir), load_tokenizer(base_dir)
    return generate_answers(model, tokenizer, examples_from_rows(rows), max_new_tokens=max_new_tokens)


def evaluate_output(out_dir: str | Path, held_out: HeldOut, *, lock: str | Path | None = None,
                    max_new_tokens: int = 64, original_replay: str | None = None) -> dict[str, Any]:
    """Score a fusion output and its anchor on held-out rows; store it in the report and re-render the card.

    Args:
        out_dir (`Path`): a finished output (`fusion_report.json` plus the adapter or `merged/`).
        held_out ([`HeldOut`]): the rows to score (their `response` is the reference).
        lock (`Path`, *optional*): the pull lock, for Hub references of the target and anchor.
        max_new_tokens (`int`, *optional*, defaults to 64): generation budget per answer (greedy).
        original_replay (`str`, *optional*): the replay file the user named, recorded in the report instead of
            the training part that `held_out_for` wrote (which is deleted afterwards).

    Returns:
        `dict`: the `evaluation` entry of the report.
    """
    out = Path(out_dir)
    report = FusionReport.load(out)
    cfg = report.config
    base_dir, _ = resolve_input(cfg["target_model"], what="target model", lock=lock)
    anchor_dir, _ = resolve_input(cfg["target_adapter"], what="target adapter", lock=lock)
    rows = held_out.rows
    if (out / ADAPTER_CONFIG_NAME).is_file():
        fused = _answers(base_dir, out, rows, max_new_tokens)
    else:  # a merged model: the anchor is folded in, load it as a plain model
        merged = out / MERGED_SUBDIR if (out / MERGED_SUBDIR).is_dir() else out
        fused = _answers(merged, None, rows, max_new_tokens)
    anchor = _answers(base_dir, anchor_dir, rows, max_new_tokens)
    evaluation = {
        "method": "greedy generation, exact match and token F1 (0-100) against the reference responses",
        "data": held_out.description,
        "rows": len(rows),
        "results": {"fused": score_answers(fused, rows), "anchor": score_answers(anchor, rows)},
    }
    config = dict(cfg, replay=original_replay) if original_replay is not None else cfg
    rewrite_report(out, dataclasses.replace(report, evaluation=evaluation, config=config))
    return evaluation


def held_out_share(enabled: bool, fraction: float | None) -> float | None:
    """The held-out share asked for on the command line: `--eval` alone means 10 %, none means no evaluation."""
    if fraction is not None:
        return fraction
    return 0.1 if enabled else None


def summary_line(evaluation: dict[str, Any]) -> str:
    """One line for the terminal: fused vs anchor, overall."""
    fused, anchor = evaluation["results"]["fused"][ALL], evaluation["results"]["anchor"][ALL]
    return (f"evaluation on {evaluation['rows']} held-out rows: fused F1 {fused['f1']:.1f} (exact match "
            f"{fused['exact_match']:.1f}), anchor adapter alone F1 {anchor['f1']:.1f} (exact match "
            f"{anchor['exact_match']:.1f})")


__all__ = ["HeldOut", "evaluate_output", "held_out_file", "held_out_for", "score_answers", "split_replay", "summary_line"]


def held_out_for(cfg, *, fraction: float | None, eval_file: str | Path | None, work_dir: Path,
                 lock: str | Path | None = None):
    """The config to train with and the rows to evaluate on (`None` when no evaluation was asked for).

    With `eval_file` the rows come from that file and training uses the whole replay set; otherwise `fraction` of
    the replay rows is held out and the returned config trains on the rest (a JSONL written into `work_dir`).
    """
    if eval_file is not None:
        return cfg, held_out_file(eval_file)
    if fraction is None:
        return cfg, None
    if not cfg.replay:
        raise ConfigError("--eval holds out replay rows, but the config has no `replay`; pass --eval-file")
    replay_path, _ = resolve_input(cfg.replay, what="replay file", lock=lock)
    held = split_replay(replay_path, fraction, cfg.seed, work_dir / "replay-train.jsonl")
    return FusionConfig.from_mapping({**cfg.model_dump(), "replay": str(work_dir / "replay-train.jsonl")},
                                     where="--eval"), held
