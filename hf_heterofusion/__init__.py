# SPDX-License-Identifier: Apache-2.0
"""hf_heterofusion: fuse LoRA experts from different model families into one adapter (HeteroFusion)."""

__version__ = "0.1.0"
