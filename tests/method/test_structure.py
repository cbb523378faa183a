# SPDX-License-Identifier: Apache-2.0
"""Why the faithful method needs a teacher to move a skill: its updates are made of replay-loss gradients.

The decoder's last layer starts at zero, so under plain SGD every predicted update `delta = W_out h + b_out` has
`W_out = -lr * sum of dL/dW_out`, whose columns are the gradients of the replay loss with respect to the predicted
updates: whatever the sources are, `dB` lies in the span of those gradients (the sources only choose the
coefficients, through `h`). Under AdamW the directions are element-wise rescaled gradients (measured on these
fixtures: 44-52 % of the update's norm leaves the raw span), still a function of the replay gradients alone.
"""

import pytest
import torch
from accelerate import Accelerator

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.encoding import pad_token_id
from hf_heterofusion.method import train as train_mod
from hf_heterofusion.method.fusion import FusionModel
from hf_heterofusion.pipeline import _encode_replay, _load_target
from hf_heterofusion.prepare import prepare


pytestmark = pytest.mark.integration


def test_under_sgd_the_faithful_update_lies_in_the_span_of_replay_gradients(fixture_zoo, replay_file, monkeypatch):
    cfg = FusionConfig.from_mapping(dict(
        block_size="auto", embed_dim=32, num_heads=4, max_position_embeddings=32, num_projections=16, epochs=1,
        gradient_accumulation_steps=2, lr=1e-1, checkpoint_every=0, max_steps=3, lambda_reg=0.0,
        target_model=str(fixture_zoo.model("llama")), target_adapter=str(fixture_zoo.adapter("llama")),
        sources=[str(fixture_zoo.adapter("qwen2", r=4, seed=10)), str(fixture_zoo.adapter("phi3", r=4, seed=11))],
        replay=str(replay_file)))
    prepared = prepare(cfg)
    model, tokenizer = _load_target(prepared, cfg)
    encoded, _ = _encode_replay(prepared.replay.examples, cfg, tokenizer)
    torch.manual_seed(0)
    fusion = FusionModel(prepared.target, prepared.groups, cfg, prepared.block_size, len(prepared.sources))
    grads: dict[str, list[torch.Tensor]] = {k: [] for k in fusion.nets}
    for key, net in fusion.nets.items():
        net.decoder_out.weight.register_hook(lambda g, key=key: grads[key].append(g.detach().clone()))
        net.decoder_out.bias.register_hook(lambda g, key=key: grads[key].append(g.detach().clone()[:, None]))
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, **_: torch.optim.SGD(params, lr=lr))
    train_mod.train(fusion, model, encoded, cfg, pad_id=pad_token_id(tokenizer), accelerator=Accelerator(),
                    show_progress=False)
    checked = 0
    with torch.no_grad():
        for g in fusion.groups:
            net, b = fusion.nets[g.key], g.buckets[0]
            delta = net(b.target_tokens, b.target_spectra, b.source_tokens, b.source_spectra, b.source_positions,
                        b.source_ids).delta
            updates = delta.reshape(-1, delta.shape[-1]).T  # (b*r, tokens): every predicted block update
            assert updates.norm() > 0, "training must have moved the decoder"
            basis, s, _ = torch.linalg.svd(torch.cat(grads[g.key], dim=1), full_matrices=False)
            basis = basis[:, s > s[0] * 1e-6]
            assert basis.shape[1] < updates.shape[0] // 4, "the span must be small for the check to mean something"
            outside = (updates - basis @ (basis.T @ updates)).norm() / updates.norm()
            noise = torch.randn_like(updates)
            control = (noise - basis @ (basis.T @ noise)).norm() / noise.norm()
            assert outside < 1e-4 and control > 0.5, (g.role, float(outside), float(control))
            checked += 1
    assert checked == len(fusion.groups) == 7
