"""User-facing errors: each names the problem and the fix.

The CLI turns any `RomiError` into a short message and a non-zero exit code, so library code raises
these (never prints and exits) and callers in notebooks get ordinary exceptions.
"""

from __future__ import annotations


class RomiError(Exception):
    """Base class: `str(err)` is the problem, `err.hint` is what to do about it."""

    exit_code = 2

    def __init__(self, problem: str, hint: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        return self.problem if not self.hint else f"{self.problem}\n  fix: {self.hint}"


class UnknownTaskError(RomiError):
    """A task name or dataset id that the registry does not know."""


class DatasetMissingError(RomiError):
    """A dataset that is not in the local Minari store."""


class DatasetCorruptError(RomiError):
    """A dataset that exists but cannot be read, or holds impossible values."""


class DatasetOutdatedError(RomiError):
    """A home-made dataset written by an older recipe whose numbers no longer mean the same."""


class DatasetTooSmallError(RomiError):
    """A dataset holds too few transitions for a stage of the run (e.g. a dynamics model's fit)."""


class DatasetExistsError(RomiError):
    """Refusing to overwrite an existing dataset."""


class ResultsNotFoundError(RomiError, FileNotFoundError):
    """A sweep, run or exported-trials directory that is not there."""


class ConfigError(RomiError):
    """An invalid configuration key or value."""


class CheckpointError(RomiError):
    """A run's checkpoint that cannot be read or belongs to another run."""


class TrainingDivergedError(RomiError):
    """A loss or an evaluation went non-finite: the policy is garbage and no score may be reported."""


class PreflightError(RomiError):
    """A sweep or run that can never succeed as asked (resources, paths, cluster), refused before it starts."""
