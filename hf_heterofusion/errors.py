# SPDX-License-Identifier: Apache-2.0
"""Exceptions and warnings of hf_heterofusion.

Every user-facing failure is a `HeteroFusionError`: the CLI prints its message on one line and exits with
status 2, without a traceback. Each class also inherits the builtin that describes it (`ValueError`,
`FileNotFoundError`, ...), so callers can catch either.
"""

from __future__ import annotations


class HeteroFusionError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class ConfigError(HeteroFusionError, ValueError):
    """The fusion config or a CLI option is invalid."""


class AdapterNotFoundError(HeteroFusionError, FileNotFoundError):
    """An adapter or model path does not exist or cannot be read."""


class AdapterFormatError(HeteroFusionError, ValueError):
    """A directory is not a usable PEFT LoRA adapter (config, tensors, shapes or values)."""


class IncompatibleAdaptersError(HeteroFusionError, ValueError):
    """Target and sources cannot be fused (no shared module role, unsupported architecture, ...)."""


class NoAlignedModulesError(IncompatibleAdaptersError):
    """No target module has a source module of the same role in an aligned layer."""


class ReplayDataError(HeteroFusionError, ValueError):
    """The replay file is missing, empty or malformed."""


class OutputExistsError(HeteroFusionError, FileExistsError):
    """The output directory exists and is not empty."""


class DiskFullError(HeteroFusionError, OSError):
    """The device (or the user's quota) ran out of space while the output was being written."""


class HubError(HeteroFusionError, RuntimeError):
    """A Hugging Face Hub operation failed for a reason the user can fix (id, token, offline cache)."""


class HeteroFusionWarning(UserWarning):
    """Something worth knowing that does not stop the fusion (e.g. truncated replay examples)."""


class TeacherKeptLittleWarning(HeteroFusionWarning):
    """A teacher kept under a quarter of the answers it gave: its rows teach little (the counts say why)."""


class SeedsOneAnswerWarning(HeteroFusionWarning):
    """Every seed of a synthesizing source gets the same answer from its expert: synthesized prompts imitate the
    seeds, so the rows show little of the skill beyond that answer."""


class LossBlewUpWarning(HeteroFusionWarning):
    """The training loss ended far above its lowest stretch (`outputs.report.loss_stretches`): the fit likely diverged
    and the adapter answers little that is usable (benchmark v10: one fit of 22, 9.4 against 77-86 for its seeds)."""


class LowEnergyWarning(HeteroFusionWarning):
    """A source lost much of its update when re-factored to the anchor's rank."""
