"""Critic divergence, measured in every run instead of left for a reviewer to find.

A learner's Q estimates a discounted sum of rewards, so on data whose rewards lie in [r_min, r_max]
no true value can leave

    [min(0, r_min) / (1 - gamma),  max(0, r_max) / (1 - gamma)]

(the 0 covers terminal states, after which nothing more is earned). For maze2d-sparse (rewards 0 or 1,
gamma 0.99) that is [0, 100]. The rewards are those the learner actually trains on: the dataset's,
and for ROMI/FOMI also the model buffer's, whose Gaussian reward samples can leave the data's range.

Every evaluation record carries the bound (`value_bound_low`, `value_bound_high`) beside the learner's
`train/q_mean` (the mean of Q(s, a) over the batches since the previous evaluation). A run has
*diverged at step N* when, at the evaluation of step N, that mean first lies outside the bound: the
critic then claims more reward than the data holds. The flag is sticky (a Q that comes back down has
still diverged once) and only measured: nothing here changes what a learner computes.

One caveat is named, not hidden: CQL with `backup_entropy` backs up a soft value, which an entropy
bonus may legitimately lift above r_max / (1 - gamma); romi's CQL runs without it (the paper's setting).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Q_KEY = "train/q_mean"
LOW_KEY, HIGH_KEY = "value_bound_low", "value_bound_high"
MARK = "‡"
"""The tables' marker of a cell with a diverged trial (the `†` marker means incomplete)."""


@dataclass(frozen=True)
class ValueBound:
    """The range every true Q of a learner lies in, from the rewards it trains on and its discount."""

    low: float
    high: float

    @staticmethod
    def of(reward_min: float, reward_max: float, gamma: float) -> ValueBound:
        if not (math.isfinite(reward_min) and math.isfinite(reward_max)) or reward_min > reward_max:
            raise ValueError(f"need a finite reward range, got [{reward_min}, {reward_max}]")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if gamma == 1:  # undiscounted: only an all-zero reward bounds Q
            return ValueBound(-math.inf if reward_min < 0 else 0.0, math.inf if reward_max > 0 else 0.0)
        return ValueBound(min(0.0, reward_min) / (1 - gamma), max(0.0, reward_max) / (1 - gamma))

    def contains(self, q: float) -> bool:
        return self.low <= q <= self.high

    def as_record(self) -> dict[str, float | None]:
        """The record's fields: both None when a side is unbounded (gamma = 1; JSON has no inf)."""
        finite = math.isfinite(self.low) and math.isfinite(self.high)
        return {LOW_KEY: self.low if finite else None, HIGH_KEY: self.high if finite else None}


def record_bound(record: Mapping[str, Any]) -> ValueBound | None:
    """The bound an evaluation record carries; None for records written before bounds were measured,
    and for runs with no finite bound (gamma = 1), which store none (JSON has no inf)."""
    low, high = record.get(LOW_KEY), record.get(HIGH_KEY)
    if _missing(low) or _missing(high):
        return None
    return ValueBound(float(low), float(high))


def diverged_at(records: Iterable[Mapping[str, Any]], fallback: ValueBound | None = None) -> int | None:
    """The step of the first evaluation whose `train/q_mean` lies outside the value bound, or None.

    Each record is judged by its own bound; `fallback` judges records that carry none (runs from before
    the bound was recorded; the analysis passes the task's reward range, see `task_bound`)."""
    for record in records:
        bound = record_bound(record) or fallback
        q = record.get(Q_KEY)
        if bound is None or q is None or _missing(q):
            continue
        if not bound.contains(float(q)):
            return int(record["step"])
    return None


def task_bound(task_name: str, gamma: float) -> ValueBound | None:
    """The bound a task's own reward definition sets, for records that carry none: maze2d's relabelled
    rewards lie in [0, 1] (sparse: 0/1; dense: exp(-distance)). None where the reward range is the
    data's (locomotion, antmaze: a run's records must carry it)."""
    if task_name.startswith("maze2d"):
        return ValueBound.of(0.0, 1.0, gamma)
    return None


def describe(step: int | None, bound: ValueBound | None) -> str:
    """`diverged at step 55,000 (Q past 100.0)`, or '' for a run that has not."""
    if step is None:
        return ""
    where = "" if bound is None else f" (Q outside [{bound.low:g}, {bound.high:g}])"
    return f"diverged at step {step:,}{where}"


def _missing(value: Any) -> bool:
    """None, NaN, or pandas' NA (records read back through a DataFrame)."""
    try:
        return value is None or bool(value != value)
    except TypeError:  # pd.NA refuses to be a bool
        return True
