# SPDX-License-Identifier: Apache-2.0
"""Run `pipeline.fit` from a JSON config and save the fused tensors (main process); used under `accelerate launch`.

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m hf_heterofusion.testing.fit_script CONFIG.json OUT.safetensors
"""

from __future__ import annotations

import json
import sys

from accelerate import Accelerator
from safetensors.torch import save_file

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.pipeline import fit


def main(config_path: str, out_path: str) -> None:
    cfg = FusionConfig.from_mapping(json.loads(open(config_path, encoding="utf-8").read()))
    acc = Accelerator(mixed_precision=cfg.mixed_precision)
    result = fit(cfg, accelerator=acc, show_progress=False)
    if acc.is_main_process:
        print(f"world_size={acc.num_processes}")
        save_file(result.tensors, out_path)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:3])
