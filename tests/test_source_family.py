# SPDX-License-Identifier: Apache-2.0
"""A source's family comes from the base the config names, even when its adapter's own base path is stale."""

import json
import shutil

from hf_heterofusion.outputs.report import source_reports
from hf_heterofusion.prepare import prepare


def test_family_from_the_configs_base_when_the_adapters_base_path_is_stale(make_config, fixture_zoo, tmp_path):
    source = shutil.copytree(fixture_zoo.adapter("qwen2", seed=10), tmp_path / "qwen2-adapter")
    config = json.loads((source / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "../models/qwen2"  # relative to where it was trained: gone here
    (source / "adapter_config.json").write_text(json.dumps(config))
    base = make_config(sources=("qwen2",), max_steps=0).model_dump()
    without = prepare(type(make_config()).model_validate({**base, "sources": [str(source)]}))
    named = prepare(type(make_config()).model_validate({**base, "sources": [
        {"adapter": str(source), "base_model": str(fixture_zoo.model("qwen2"))}]}))
    assert source_reports(without)[0].family is None  # nothing says what it was trained on
    assert source_reports(named)[0].family == "qwen2"
