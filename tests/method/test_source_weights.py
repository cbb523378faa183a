# SPDX-License-Identifier: Apache-2.0
"""`SourceSpec.weight` scales a source's influence: `log(w)` is added to the attention logits of its tokens."""

import pytest
import torch

from hf_heterofusion.errors import ConfigError
from hf_heterofusion.method.fusion import FusionModel
from hf_heterofusion.pipeline import fit
from hf_heterofusion.prepare import prepare


def _weighted(cfg, weights):
    return cfg.model_copy(update={"sources": tuple(s.model_copy(update={"weight": w})
                                                   for s, w in zip(cfg.sources, weights))})


def _fusion(cfg, seed=0):
    prepared = prepare(cfg)
    torch.manual_seed(seed)
    fusion = FusionModel(prepared.target, prepared.groups, cfg, prepared.block_size, len(prepared.sources))
    for net in fusion.nets.values():  # a "trained" decoder, so sources visibly move the output
        torch.nn.init.normal_(net.decoder_out.weight, std=0.02)
    return fusion


@pytest.mark.integration
@pytest.mark.parametrize("amortize", [False, True])
def test_weight_zero_removes_the_source_exactly(make_config, fixture_zoo, amortize):
    """Training with source 1 at weight 0 gives the same adapter whatever source 1's tensors are."""
    cfg = _weighted(make_config(max_steps=2, amortize_nets=amortize), [1.0, 0.0])
    other = cfg.model_copy(update={"sources": (cfg.sources[0], cfg.sources[1].model_copy(
        update={"adapter": str(fixture_zoo.adapter("phi3", r=4, seed=99))}))})
    a, b = fit(cfg, show_progress=False), fit(other, show_progress=False)
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.report.training.losses == b.report.training.losses
    assert a.report.sources[1].contribution == 0.0
    # ... and the test could fail: with weight 1 the other tensors do change the result.
    c = fit(_weighted(other, [1.0, 1.0]), show_progress=False)
    d = fit(_weighted(cfg, [1.0, 1.0]), show_progress=False)
    assert any(not torch.equal(c.tensors[k], d.tensors[k]) for k in c.tensors)


def test_weight_one_adds_no_bias_and_is_the_unweighted_fusion(make_config):
    cfg = make_config(amortize_nets=False)
    fusion = _fusion(cfg)
    assert fusion.source_weights == (1.0, 1.0)
    assert all(fusion._source_bias(key, torch.device("cpu")) is None for key in fusion._token_sources)
    plain = fusion(generator=torch.Generator().manual_seed(0))
    with fusion.source_weights_override({0: 1.0}):
        same = fusion(generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(plain.b_patches[k], same.b_patches[k]) for k in plain.b_patches)
    assert torch.equal(plain.regulariser, same.regulariser)


def test_larger_weight_raises_the_source_attention_mass(make_config):
    fusion = _fusion(make_config())
    share = []
    for w in (0.5, 1.0, 2.0, 4.0):
        with fusion.source_weights_override({0: w}):
            mass = fusion(with_stats=True).stats["source_mass"]
        share.append((mass[0] / mass.sum()).item())
    assert share == sorted(share) and share[-1] > share[0] + 0.2, share


def test_masked_sources_is_an_exact_ablation_and_restores(make_config):
    fusion = _fusion(make_config())
    before = fusion(with_stats=True)
    with fusion.masked_sources({1}):
        masked = fusion(with_stats=True)
        assert fusion.source_weights == (1.0, 0.0)
    assert fusion.source_weights == (1.0, 1.0)
    assert masked.stats["source_mass"][1] == 0
    assert any(not torch.equal(before.b_patches[k], masked.b_patches[k]) for k in before.b_patches)
    # Masking source 1 = giving source 1 no tokens to look at: perturb its tokens, nothing moves.
    for g in fusion.groups:
        g.buckets[0].source_tokens[:, g.buckets[0].source_ids == 1] += 1.0
    with fusion.masked_sources({1}):
        again = fusion(with_stats=True)
    assert all(torch.equal(masked.b_patches[k], again.b_patches[k]) for k in masked.b_patches)


def test_all_sources_masked_is_refused(make_config):
    fusion = _fusion(make_config())
    with pytest.raises(ConfigError, match="weight 0"):
        with fusion.masked_sources({0, 1}):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with fusion.masked_sources({5}):
            pass
    assert fusion.source_weights == (1.0, 1.0)
