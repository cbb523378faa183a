# SPDX-License-Identifier: Apache-2.0
"""Built-in examples: the demo, the inputs of the shipped example configs, synthetic tasks and LoRA experts."""
