# SPDX-License-Identifier: Apache-2.0
"""Data: replay rows, their token ids, batched greedy generation, the one model loader, safetensors headers."""
