# SPDX-License-Identifier: Apache-2.0
import pytest

from hf_heterofusion.outputs.memory import LLAMA3_8B, estimate_fit_memory, estimate_from_config


def test_parameter_count_of_the_8b_shape_is_llama3_8b():
    est = estimate_from_config(LLAMA3_8B, "bfloat16")
    assert est.weights / 2 == pytest.approx(8.03e9, rel=0.01)


def test_bf16_halves_weights_and_activations_and_keeps_nets_float32():
    fp32 = estimate_fit_memory(10**9, "float32", hypernet_parameters=10**7, hidden_size=2048, num_layers=18,
                               vocab_size=49152, tokens=128)
    bf16 = estimate_fit_memory(10**9, "bfloat16", hypernet_parameters=10**7, hidden_size=2048, num_layers=18,
                               vocab_size=49152, tokens=128)
    assert bf16.weights * 2 == fp32.weights
    assert bf16.nets == fp32.nets == 16 * 10**7  # float32 weight, grad and two AdamW moments
    assert bf16.total < 0.6 * fp32.total + fp32.overhead
    assert "GiB" in bf16.line("8B")
    with pytest.raises(ValueError, match="unknown dtype"):
        estimate_fit_memory(1, "int8")
