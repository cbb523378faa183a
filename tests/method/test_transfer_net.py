# SPDX-License-Identifier: Apache-2.0
import torch

from hf_heterofusion.method.transfer_net import (
    HeteroFusionTransferNet,
    TransferNetConfig,
    hypernet_parameters,
    rdm_regulariser,
)


def _net(**kw):
    cfg = TransferNetConfig(block_size=16, rank=4, embed_dim=32, num_heads=4, max_positions=64, **kw)
    torch.manual_seed(0)
    return HeteroFusionTransferNet(cfg)


def _inputs(m=2, n_t=3, n_s=5):
    t, s = torch.randn(m, n_t, 16, 4), torch.randn(m, n_s, 16, 4)
    return t, torch.linalg.svdvals(t), s, torch.linalg.svdvals(s), torch.arange(n_s), torch.zeros(n_s, dtype=torch.long)


def test_zero_initialised_decoder_predicts_exactly_zero():
    out = _net()(*_inputs())
    assert out.delta.shape == (2, 3, 64)
    assert torch.count_nonzero(out.delta) == 0
    assert out.attention.shape == (2, 3, 5)
    assert torch.allclose(out.attention.sum(-1), torch.ones(2, 3))


def test_gate_is_hard_sparse_and_bounded():
    net = _net(mu_gate=-0.2)
    out = net(*_inputs())
    assert (out.source_gate == 0).any()
    assert out.source_gate.min() >= 0 and out.source_gate.max() <= 1


def test_parameter_count_matches_the_closed_form():
    for per_source in (False, True):
        cfg = TransferNetConfig(block_size=16, rank=4, embed_dim=32, num_heads=4, max_positions=64, num_sources=3,
                                per_source_positions=per_source)
        net = HeteroFusionTransferNet(cfg)
        counted = sum(p.numel() for p in net.parameters())
        assert counted == hypernet_parameters(4, 16, 32, 64, sources=3,
                                              position_mode="per_source" if per_source else "concat")


def test_paper_scale_parameter_count_is_about_110M():
    assert round(hypernet_parameters(8, 4096, 1024, 4096) / 1e6, 1) == 110.5


def test_rdm_is_seeded_and_small_for_matching_distributions():
    z = torch.randn(256, 16)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = rdm_regulariser(z, mu=0.0, sigma=1.0, num_projections=8, generator=g1)
    b = rdm_regulariser(z, mu=0.0, sigma=1.0, num_projections=8, generator=g2)
    assert torch.equal(a, b)
    far = rdm_regulariser(z + 5, mu=0.0, sigma=1.0, num_projections=8, generator=torch.Generator().manual_seed(1))
    assert far > 10 * a
