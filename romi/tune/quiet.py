"""Ray's lines a sweep user should not have to read, dropped by logging filters (nothing else of Ray's
logging changes): a "Checkpoint successfully created" line after every evaluation of every trial, and,
after Ctrl-C, the hint to resume with `Tuner.restore(...)` (romi's own message says `--resume`) and a
`FileNotFoundError` per trial that had not started (it has no results yet; romi's table says
"not started").
"""

from __future__ import annotations

import logging

CHECKPOINT_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")
"""Where Ray (v1 and v2 train internals) logs each persisted checkpoint, in the trial's process."""
TUNE_LOGGER = "ray.tune.tune"
"""Where Tune logs the restore hint, in the driver."""
ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"
"""Where Tune logs, in the driver, the trials whose results it could not read when the run ends."""


class DropMessages(logging.Filter):
    """Drops the records whose message contains one of `fragments`."""

    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


class DropUnstartedTrials(logging.Filter):
    """Drops Tune's "Failed to fetch metrics" warning when every trial it lists merely has no result file
    yet (it never started: an interrupted sweep); a trial whose results are there but unreadable is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Failed to fetch metrics"):
            return True
        trials = [line for line in message.splitlines()[1:] if line.startswith("- ")]
        return not trials or not all("FileNotFoundError" in line and "were not found" in line for line in trials)


def _install(logger_name: str, log_filter: logging.Filter) -> None:
    logger = logging.getLogger(logger_name)
    # Idempotent: every trial of a reused worker process and every sweep of a session installs it again.
    if not any(type(f) is type(log_filter) and vars(f) == vars(log_filter) for f in logger.filters):
        logger.addFilter(log_filter)


def quiet_trial_logs() -> None:
    """In a trial's process: no line per checkpoint (one per evaluation, saying only that it worked)."""
    for name in CHECKPOINT_LOGGERS:
        _install(name, DropMessages("Checkpoint successfully created"))


def quiet_driver_logs() -> None:
    """In the sweep's driver: no `Tuner.restore(...)` hint and no `FileNotFoundError` per unstarted trial
    after an interrupt."""
    _install(TUNE_LOGGER, DropMessages("Tuner.restore("))
    _install(ANALYSIS_LOGGER, DropUnstartedTrials())
