# SPDX-License-Identifier: Apache-2.0
"""Shared pytest fixtures: tiny heterogeneous models and adapters, and the local Hub-protocol server."""

import os


# The Hub client reads these at import time; no test may talk to the real Hub.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["hf_heterofusion.testing.fixtures"]
