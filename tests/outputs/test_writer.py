# SPDX-License-Identifier: Apache-2.0
"""The output writer's loss plot says which trainer ran."""

from PIL import Image

from hf_heterofusion.outputs.writer import write_loss_plot


def test_lora_trainer_loss_plot_has_one_panel_and_no_regulariser(tmp_path):
    losses = [{"step": i, "ce": 3.0 - 0.1 * i, "rdm": 0.0, "loss": 3.0 - 0.1 * i} for i in range(1, 6)]
    write_loss_plot(losses, tmp_path / "nets.png")
    write_loss_plot(losses, tmp_path / "lora.png", trainer="lora")
    assert Image.open(tmp_path / "nets.png").size == (600, 440)  # CE and RDM panels
    assert Image.open(tmp_path / "lora.png").size == (600, 280)  # CE alone
