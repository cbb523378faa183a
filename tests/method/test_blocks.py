# SPDX-License-Identifier: Apache-2.0
import torch

from hf_heterofusion.method.blocks import block_spectra, from_blocks, module_tokens, to_blocks


def test_blocks_pad_and_round_trip():
    x = torch.arange(10 * 3, dtype=torch.float32).view(10, 3)
    tokens = to_blocks(x, 4)
    assert tokens.shape == (3, 4, 3)
    assert torch.equal(tokens[2, 2:], torch.zeros(2, 3))  # zero padding at the bottom
    assert torch.equal(from_blocks(tokens, 10), x)


def test_module_tokens_are_a_transpose_then_b():
    A, B = torch.randn(2, 5), torch.randn(7, 2)
    tokens, n_a, n_b = module_tokens(A, B, 4)
    assert (n_a, n_b) == (2, 2)
    assert torch.equal(from_blocks(tokens[:n_a], 5), A.t())
    assert torch.equal(from_blocks(tokens[n_a:], 7), B)


def test_spectra_are_singular_values_of_each_block():
    tokens = torch.randn(3, 8, 2)
    spectra = block_spectra(tokens)
    assert spectra.shape == (3, 2)
    for i in range(3):
        assert torch.allclose(spectra[i], torch.linalg.svdvals(tokens[i]))
    assert torch.all(spectra[:, 0] >= spectra[:, 1])
