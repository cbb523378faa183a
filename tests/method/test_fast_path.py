# SPDX-License-Identifier: Apache-2.0
"""The fast path (the default `amortize_nets: true`) against the reference arithmetic (`amortize_nets: false`).

Speed is measured in `python -m benchmarks --perf`, never asserted here; these tests pin what each
optimisation may change: nothing beyond float rounding (tolerances stated per test).
"""

import pytest
import torch

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.method.transfer_net import HeteroFusionTransferNet, TransferNetConfig, rdm_regulariser
from hf_heterofusion.pipeline import fit


def _pair():
    nets = []
    for fast in (False, True):
        torch.manual_seed(0)
        net = HeteroFusionTransferNet(TransferNetConfig(block_size=16, rank=4, embed_dim=32, num_heads=4,
                                                        max_positions=64, fast_kernels=fast))
        torch.nn.init.normal_(net.decoder_out.weight)  # a trained decoder: the delta is not identically zero
        nets.append(net)
    nets[1].load_state_dict(nets[0].state_dict())
    return nets


def _inputs(m=3, n_t=2, n_s=6):
    g = torch.Generator().manual_seed(1)
    t, s = torch.randn(m, n_t, 16, 4, generator=g), torch.randn(m, n_s, 16, 4, generator=g)
    return (t, torch.linalg.svdvals(t), s, torch.linalg.svdvals(s), torch.arange(n_s),
            torch.tensor([0, 0, 1, 1, 2, 2]))


def test_default_is_the_fast_path():
    cfg = FusionConfig(target_model="t", target_adapter="a", sources=["s"], replay="r")
    assert cfg.amortize_nets is True and cfg.torch_dtype is None


def test_fused_attention_equals_the_explicit_softmax_within_float_tolerance():
    ref, fast = _pair()
    bias = torch.tensor([0.0, 0.0, 0.693, 0.693, -float("inf"), -float("inf")])
    for b in (None, bias):
        a = ref(*_inputs(), source_bias=b, need_weights=False)
        f = fast(*_inputs(), source_bias=b, need_weights=False)
        assert f.attention is None  # no weights materialised on the fast path
        torch.testing.assert_close(f.delta, a.delta, rtol=1e-5, atol=1e-5)
        # Asking for the weights (export statistics) takes the explicit attention on both; the fast net still
        # encodes in one pass, so the two agree to float rounding.
        with_weights = fast(*_inputs(), source_bias=b)
        torch.testing.assert_close(with_weights.delta, ref(*_inputs(), source_bias=b).delta, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(with_weights.attention, ref(*_inputs(), source_bias=b).attention)


def test_one_encoder_pass_gives_the_reference_outputs_and_weight_gradients():
    # The fast net encodes target and source tokens in one pass (one weight-gradient matmul per encoder layer
    # instead of two plus an add); only the summation order may differ.
    ref, fast = _pair()
    outs = []
    for net in (ref, fast):
        out = net(*_inputs(), need_weights=False)
        (out.delta.square().sum() + out.source_embeddings.sum() + out.source_gate.sum()).backward()
        outs.append(out)
    torch.testing.assert_close(outs[1].target_embeddings, outs[0].target_embeddings, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[1].source_gate, outs[0].source_gate, rtol=1e-5, atol=1e-6)
    for name in ("encoder.row.weight", "encoder.col.weight", "encoder.gate.0.weight", "encoder.norm_in.weight"):
        g_ref, g_fast = ref.get_parameter(name).grad, fast.get_parameter(name).grad
        assert g_ref.abs().sum() > 0  # the loss reaches the encoder, so the comparison can fail
        # float32 sums of ~1e3-sized terms in another order: compare against the gradient's own scale
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-5 * g_ref.abs().max().item())


def test_fast_rdm_draws_the_same_sample_and_equals_the_reference_within_float_tolerance():
    z = torch.randn(40, 64)
    kw = dict(mu=0.0, sigma=1.0, num_projections=128)
    ref = rdm_regulariser(z, generator=torch.Generator().manual_seed(3), **kw)
    fast = rdm_regulariser(z, generator=torch.Generator().manual_seed(3), fast=True, **kw)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-7)
    other = rdm_regulariser(z, generator=torch.Generator().manual_seed(4), fast=True, **kw)
    assert not torch.equal(other, fast)  # the sample matters, so the test above could fail


def test_fast_rdm_gradient_matches_the_reference():
    grads = []
    for fast in (False, True):
        z = torch.randn(30, 32, generator=torch.Generator().manual_seed(0)).requires_grad_()
        rdm_regulariser(z, mu=0.0, sigma=1.0, num_projections=64, generator=torch.Generator().manual_seed(5),
                        fast=fast).backward()
        grads.append(z.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)


@pytest.mark.integration
def test_amortized_fit_matches_the_reference_schedule_without_regulariser(make_config):
    # lambda_reg = 0: the two schedules have the same gradient; fused attention, fused AdamW and the summation
    # order differ in the last bits only (measured ~1e-7 on these fixtures).
    ref = fit(make_config(max_steps=3, lambda_reg=0.0, amortize_nets=False), show_progress=False).tensors
    fast = fit(make_config(max_steps=3, lambda_reg=0.0), show_progress=False).tensors
    for k in ref:
        torch.testing.assert_close(fast[k], ref[k], rtol=1e-5, atol=1e-6)


@pytest.mark.integration
def test_reference_path_is_reproducible_bit_for_bit(make_config):
    cfg = make_config(max_steps=2, amortize_nets=False)
    a, b = fit(cfg, show_progress=False), fit(cfg, show_progress=False)
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.report.training.losses == b.report.training.losses
    assert all(isinstance(r["loss"], float) for r in a.report.training.losses)


@pytest.mark.integration
def test_bf16_target_trains_float32_factors(make_config):
    cfg = make_config(max_steps=2, torch_dtype="bfloat16")
    result = fit(cfg, show_progress=False)
    assert all(t.dtype == torch.float32 for t in result.tensors.values())
    ref = fit(make_config(max_steps=2), show_progress=False)
    b_keys = [k for k in ref.tensors if ".lora_B." in k]
    assert any(not torch.equal(ref.tensors[k], result.tensors[k]) for k in b_keys)  # the base dtype acted
    for k in b_keys:  # ... and only through the base's rounding
        torch.testing.assert_close(result.tensors[k], ref.tensors[k], rtol=0.05, atol=1e-2)
    assert result.report.config["torch_dtype"] == "bfloat16"


def test_yaml_dtype_sets_the_fit_dtype_unless_torch_dtype_is_given(make_config, tmp_path):
    from mergekit.options import MergeOptions

    from hf_heterofusion.merge_methods.planner import output_layout, plan_fusion

    layout = output_layout("adapter", tmp_path / "out")
    for cfg, dtype, expected in ((make_config(), "bfloat16", "bfloat16"), (make_config(), "float64", None),
                                 (make_config(torch_dtype="float32"), "bfloat16", "float32"),
                                 (make_config(), None, None)):
        graph = plan_fusion(cfg, layout, MergeOptions(), dtype=dtype, out_dtype=None, work_dir=None)
        assert FusionConfig.model_validate_json(graph.fit.config_json).torch_dtype == expected
