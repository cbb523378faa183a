# SPDX-License-Identifier: Apache-2.0
"""After training: what each source causally contributes, measured by removing it (no retraining).

Attention mass says where the cross-attention looks, not what it changes: the first version's report gave
relevant and irrelevant sources the same 19-21 %. Here the trained nets run once with every source and once with
each source `k` masked out of their input (`FusionModel.masked_sources({k})`: weight 0, exactly no influence),
and the replay loss per task is compared: `delta_loss[k][task] = loss(without k) - loss(all)`. A source the
fusion relies on for a task makes that task's loss rise when it is removed. The anchor alone (no fused update)
is the reference row. Rows are the held-out ones when given (`--eval`, the benchmark's dev split), else up to
`MAX_ROWS` training rows per task (then marked in-sample).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Sequence

import torch

from hf_heterofusion.data.encoding import collate, encode_example
from hf_heterofusion.data.replay import IGNORE_INDEX, ReplayExample
from hf_heterofusion.method.patching import patch_lora_weights


MAX_ROWS = 32  # per task: a handful of forward passes per source, whatever the replay size
BATCH = 8


@torch.no_grad()
def source_ablation(fusion, model, tokenizer, examples: Sequence[ReplayExample], *, pad_id: int, max_length: int,
                    held_out: bool) -> dict:
    """Per-task loss with all sources, with each source masked, and with the anchor alone."""
    by_task: dict[str, list] = defaultdict(list)
    for ex in examples:
        rows = by_task[ex.task or "all"]
        if len(rows) < MAX_ROWS:
            ids, labels, _ = encode_example(ex, tokenizer, max_length)
            rows.append((ids, labels))
    device = next(model.parameters()).device

    def losses(patches) -> dict[str, float]:
        out = {}
        for task, rows in sorted(by_task.items()):
            total = count = 0.0
            for s in range(0, len(rows), BATCH):
                batch = {k: v.to(device) for k, v in collate(rows[s:s + BATCH], pad_id).items()}
                with patch_lora_weights(model, *patches) if patches else contextlib.nullcontext():
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                labels = batch["labels"][:, 1:]
                ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(),
                                                       ignore_index=IGNORE_INDEX, reduction="sum")
                total, count = total + float(ce), count + int((labels != IGNORE_INDEX).sum())
            out[task] = round(total / max(count, 1), 5)
        return out

    def fused():
        o = fusion(generator=None)
        return o.b_patches, o.a_patches

    fusion.eval()
    with_all, anchor = losses(fused()), losses(None)
    per_source = []
    for k in range(fusion.num_sources):
        others = [w for j, w in enumerate(fusion.source_weights) if j != k and w > 0]
        if not others:  # masking the only (weighted) source leaves the nets nothing to attend to
            per_source.append(None)
            continue
        with fusion.masked_sources({k}):
            masked = losses(fused())
        per_source.append({"loss_without": masked,
                           "delta_loss": {t: round(masked[t] - with_all[t], 5) for t in masked},
                           "mean_delta_loss": round(sum(masked[t] - with_all[t] for t in masked) / len(masked), 5)})
    return {"rows": "held-out" if held_out else "training (in-sample)",
            "rows_per_task": {t: len(r) for t, r in sorted(by_task.items())},
            "loss_all_sources": with_all, "loss_anchor_alone": anchor, "sources": per_source}


__all__ = ["MAX_ROWS", "source_ablation"]
