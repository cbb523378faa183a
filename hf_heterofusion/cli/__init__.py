# SPDX-License-Identifier: Apache-2.0
"""The `hf-heterofusion` command (and `hf heterofusion`): fuse, merge, check, pull, push, card, demo."""
