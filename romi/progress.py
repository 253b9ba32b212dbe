"""How far a long step is, said to a person: durations, the dynamics model's epoch status, and the
`Reporter` a run hands its progress to.

The base `Reporter` writes compact lines through a `log` callable (what a Tune worker's log or a pipe
shows); `romi.cli` gives a terminal a rich bar instead by overriding its methods. Nothing here draws a
random number: a run's results never depend on how its progress is shown.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from romi.types import Log

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import ProgressColumn, TaskID

Clock = Callable[[], float]


def format_duration(seconds: float | None) -> str:
    """`45 s`, `12 min`, `1 h 05 min`, `2 d 3 h`: as precise as a person planning their time needs."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(round(minutes), 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@dataclass(frozen=True)
class DynamicsEpoch:
    """Where the training of one dynamics ensemble stands after an epoch."""

    direction: str
    epoch: int
    max_epochs: int | None
    """The cap on epochs (None: until early stopping)."""
    patience: int
    epochs_since_update: int
    """Epochs in a row in which no member improved; training stops when this exceeds `patience`."""
    holdout_mse: float
    """The best member's holdout MSE so far."""
    seconds_per_epoch: float

    @property
    def eta_seconds(self) -> float | None:
        """Time to the epoch cap; None without a cap (early stopping decides, so no honest ETA exists)."""
        if self.max_epochs is None:
            return None
        return max(0, self.max_epochs - self.epoch) * self.seconds_per_epoch


def format_dynamics_epoch(status: DynamicsEpoch) -> str:
    """One line: `dynamics (reverse): epoch 7/20  holdout MSE 0.0123  2.1 s/epoch  ETA 27 s`, or without a
    cap `dynamics (reverse): epoch 7, no improvement for 2 of 5  holdout MSE 0.0123  95.0 s/epoch`."""
    if status.max_epochs is not None:
        where = f"epoch {status.epoch}/{status.max_epochs}"
        eta = f"  ETA {format_duration(status.eta_seconds)}"
    else:
        where = (f"epoch {status.epoch}, no improvement for {status.epochs_since_update} of "
                 f"{status.patience}")
        eta = ""
    return (f"dynamics ({status.direction}): {where}  holdout MSE {status.holdout_mse:.4g}  "
            f"{status.seconds_per_epoch:.1f} s/epoch{eta}")


class EpochTimer:
    """Mean seconds per epoch of a training loop that reports once per epoch (wall clock, no RNG). The
    mean since the start, not the last epoch alone: the first epoch also pays the data preparation, and a
    single epoch's time jitters on a busy machine."""

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self._start = clock()
        self._epochs = 0

    def epoch_done(self) -> float:
        """Call at the end of each epoch timed here (a resumed fit's earlier epochs are not): the mean so far."""
        self._epochs += 1
        return (self._clock() - self._start) / self._epochs


class Reporter:
    """Where a run says how far it is. This one writes lines through `log`, at most one per
    `min_interval` seconds for the frequent events (a Tune worker's log is read by a person, and every
    line of it is forwarded to the sweep's driver); the last epoch of a model is always written.

    Subclasses (the CLI's rich bars) override the methods; `romi.pipeline.Run` calls them.
    """

    def __init__(self, log: Log = print, *, min_interval: float = 10.0, clock: Clock = time.monotonic) -> None:
        self.log = log
        self.min_interval = min_interval
        self._clock = clock
        self._last_line: float | None = None

    def _due(self, final: bool) -> bool:
        now = self._clock()
        if final or self._last_line is None or now - self._last_line >= self.min_interval:
            self._last_line = now
            return True
        return False

    def dynamics_epoch(self, status: DynamicsEpoch) -> None:
        """After every epoch of a dynamics model's training."""
        final = status.max_epochs is not None and status.epoch >= status.max_epochs
        if self._due(final):
            self.log(format_dynamics_epoch(status))

    def dynamics_done(self, direction: str) -> None:
        """The model of `direction` is trained or loaded (its summary line goes through `log`)."""
        self._last_line = None  # the next model's first epoch is shown at once

    def gradient_steps(self, step: int, total: int) -> None:
        """Every few gradient steps, and once with the resumed step. Lines would flood a log: the
        evaluations say how far a run is there, so this one says nothing."""


class BarReporter(Reporter):
    """A terminal's view: one rich bar per dynamics model while it trains, then the gradient-step bar
    (created at the first call, at the resumed step). The ETAs are romi's own: a dynamics model's from its
    mean seconds per epoch, the steps' from the steps of this session (never the resumed ones) over its
    time, evaluations included; rich's estimate needs two updates within its window, which epochs of
    minutes or a slow learner never give it."""

    def __init__(self, progress: RichProgress, log: Log, clock: Clock = time.monotonic) -> None:
        super().__init__(log)
        self.progress = progress
        self._clock = clock
        self._dynamics: dict[str, TaskID] = {}
        self._steps: TaskID | None = None
        self._first: tuple[int, float] = (0, 0.0)
        self._eta = ""
        self._status = ""

    @staticmethod
    def columns() -> tuple[ProgressColumn, ...]:
        from rich.progress import BarColumn, TextColumn

        return (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                TextColumn("{task.fields[status]}"))

    def dynamics_epoch(self, status: DynamicsEpoch) -> None:
        count = f"epoch {status.epoch}" + (f"/{status.max_epochs}" if status.max_epochs else "")
        text = f"holdout MSE {status.holdout_mse:.4g}  {status.seconds_per_epoch:.1f} s/epoch"
        if status.max_epochs is None:
            text += f"  no improvement for {status.epochs_since_update} of {status.patience}"
        else:
            text += f"  ETA {format_duration(status.eta_seconds)}"
        handle = self._dynamics.get(status.direction)
        if handle is None:
            handle = self._dynamics[status.direction] = self.progress.add_task(
                f"dynamics ({status.direction})", total=status.max_epochs, count=count, status=text)
        self.progress.update(handle, completed=status.epoch, count=count, status=text)

    def dynamics_done(self, direction: str) -> None:
        handle = self._dynamics.pop(direction, None)
        if handle is not None:
            self.progress.remove_task(handle)

    def gradient_steps(self, step: int, total: int) -> None:
        count = f"{step:,}/{total:,}"
        if self._steps is None:
            self._first = (step, self._clock())
            self._steps = self.progress.add_task("gradient steps", total=total, completed=step, count=count,
                                                 status="")
            return
        first_step, started = self._first
        done = step - first_step
        eta = (total - step) * (self._clock() - started) / done if done > 0 else None
        self._eta = f"ETA {format_duration(eta)}"
        self.progress.update(self._steps, completed=step, count=count, status=self._text())

    def status(self, text: str) -> None:
        """The text after the gradient-step bar's ETA (the latest score)."""
        self._status = text
        if self._steps is not None:
            self.progress.update(self._steps, status=self._text())

    def _text(self) -> str:
        return "  ".join(part for part in (self._eta, self._status) if part)
