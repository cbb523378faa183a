# SPDX-License-Identifier: Apache-2.0
"""`embed_dim: auto` (the default) scales with the target and keeps the nets no larger than it."""

import pytest

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.method.transfer_net import hypernet_parameters
from hf_heterofusion.outputs.sizing import target_parameters
from hf_heterofusion.prepare import _auto_embed_dim, prepare


def test_auto_is_the_default_and_an_explicit_width_is_kept(make_config):
    assert FusionConfig.model_fields["embed_dim"].default == "auto"
    assert prepare(make_config(embed_dim=64, num_heads=4)).config.embed_dim == 64


def test_auto_resolves_to_nets_no_larger_than_a_tiny_target(make_config):
    prepared = prepare(make_config(embed_dim="auto", num_heads=4, max_position_embeddings=32))
    e = prepared.config.embed_dim
    assert isinstance(e, int) and e % 4 == 0
    nets = sum(prepared.hypernet_parameters().values())
    assert nets <= target_parameters(prepared) or e == 16  # halved until they fit, down to 4 x num_heads


@pytest.mark.parametrize(("hidden", "expected"), [(4096, 1024), (8192, 1024), (2048, 512), (576, 128)])
def test_auto_follows_the_targets_width_up_to_the_papers_1024(make_config, tmp_path, hidden, expected):
    cfg = make_config(embed_dim="auto")
    no_weights = tmp_path / "empty"  # no checkpoint here: only the width rule applies
    no_weights.mkdir()
    assert _auto_embed_dim(cfg, no_weights, {"hidden_size": hidden}, (), 1024, 2) == expected
    assert hypernet_parameters(8, 4096, expected, 4096) > 0


def test_auto_is_always_a_multiple_of_the_heads(make_config, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for heads, hidden in ((3, 64), (12, 4096), (5, 576)):
        cfg = make_config(embed_dim="auto", num_heads=heads)
        e = _auto_embed_dim(cfg, empty, {"hidden_size": hidden}, (), 1024, 2)
        assert e % heads == 0 and 4 * heads <= e <= max(4 * heads, min(1024, hidden // 4))
