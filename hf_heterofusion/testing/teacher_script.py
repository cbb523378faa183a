# SPDX-License-Identifier: Apache-2.0
"""Run the teacher stage from a JSON config and save its rows (main process); used under `accelerate launch`.

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m hf_heterofusion.testing.teacher_script CONFIG.json OUT.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate import Accelerator

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.prepare import prepare
from hf_heterofusion.teacher.run import run_teachers


def main(config_path: str, out_path: str) -> None:
    cfg = FusionConfig.from_mapping(json.loads(Path(config_path).read_text(encoding="utf-8")))
    acc = Accelerator()
    result = run_teachers(prepare(cfg).teaching, cfg, accelerator=acc, show_progress=False)
    if acc.is_main_process:
        print(f"world_size={acc.num_processes}")
        result.write_jsonl(Path(out_path))
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:3])
