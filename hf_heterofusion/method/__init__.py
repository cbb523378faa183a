# SPDX-License-Identifier: Apache-2.0
"""The paper's method: read and align adapters, block them, the transfer nets (or the anchor itself) trained by
weight patching on replay rows, the export pass and the per-source ablation."""
