# SPDX-License-Identifier: Apache-2.0
"""Beyond the paper: source experts label prompts of their task (plan, labeller, filters, cache, run)."""
