# SPDX-License-Identifier: Apache-2.0
"""Shared pytest fixtures: tiny heterogeneous models and adapters, and the local Hub-protocol server."""

import os


# The Hub client reads these at import time; no test may talk to the real Hub.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The teacher stage caches labelled rows under $HF_HETEROFUSION_CACHE: never the user's cache during tests, and
# removed when the test process ends (each xdist worker makes its own).
os.environ["HF_HETEROFUSION_CACHE"] = __import__("tempfile").mkdtemp(prefix="hf-heterofusion-test-cache-")
__import__("atexit").register(__import__("shutil").rmtree, os.environ["HF_HETEROFUSION_CACHE"], ignore_errors=True)

import torch  # noqa: E402


# Every test model is tiny: per-op OpenMP barriers cost more than a second thread gains, and make timings erratic
# on a loaded machine.
torch.set_num_threads(1)

pytest_plugins = ["hf_heterofusion.testing.fixtures", "hf_heterofusion.testing.hub_fixtures"]


import json  # noqa: E402

import pytest  # noqa: E402


SMALL = dict(block_size="auto", embed_dim=32, num_heads=4, max_position_embeddings=32, num_projections=16,
             epochs=1, gradient_accumulation_steps=2, lr=1e-3, checkpoint_every=0)


@pytest.fixture(scope="session")
def replay_file(tmp_path_factory):
    """A tiny plain-shape replay set (8 examples)."""
    path = tmp_path_factory.mktemp("replay") / "replay.jsonl"
    rows = [{"prompt": f"Name the colour {i}:", "response": f" colour {i % 3}"} for i in range(8)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def make_config(fixture_zoo, replay_file):
    """Build a small FusionConfig: llama target + anchor, sources of the given families."""
    from hf_heterofusion.config import FusionConfig

    def build(sources=("qwen2", "phi3"), *, target="llama", ranks=None, **overrides):
        ranks = ranks or [4] * len(sources)
        srcs = [str(fixture_zoo.adapter(f, r=r, seed=10 + i)) for i, (f, r) in enumerate(zip(sources, ranks))]
        data = dict(SMALL, target_model=str(fixture_zoo.model(target)), target_adapter=str(fixture_zoo.adapter(target)),
                    sources=srcs, replay=str(replay_file))
        data.update(overrides)
        return FusionConfig.from_mapping(data)

    return build
