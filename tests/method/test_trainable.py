# SPDX-License-Identifier: Apache-2.0
"""Both trainers implement the interface `train()` declares, and their outputs have the same shape."""

from hf_heterofusion.method.fusion import FusionModel
from hf_heterofusion.method.lora_trainer import AnchorLora
from hf_heterofusion.method.trainable import FusionOutput, Trainable
from hf_heterofusion.prepare import prepare


def test_transfer_nets_and_anchor_lora_are_trainables_with_the_same_patches(make_config):
    cfg = make_config(max_steps=0)
    prepared = prepare(cfg)
    nets = FusionModel(prepared.target, prepared.groups, cfg, prepared.block_size, len(prepared.sources))
    anchor = AnchorLora(prepared.target, len(prepared.sources))
    for trainable in (nets, anchor):
        assert isinstance(trainable, Trainable)
        out = trainable(generator=None, with_stats=True)
        assert isinstance(out, FusionOutput)
        assert set(out.stats) >= {"roles", "source_mass"}
    # the anchor trainer patches every LoRA module the nets do (and the A factors besides)
    assert set(nets(generator=None).b_patches) <= set(anchor(generator=None).b_patches)
