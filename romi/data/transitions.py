"""`Transitions`: a dataset flattened to aligned numpy arrays, the one currency of the data layer."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from romi.errors import DatasetCorruptError
from romi.types import Direction


@dataclass(frozen=True)
class Transitions:
    """N transitions (s, a, r, s') with episode structure, all arrays aligned on axis 0.

    `terminals[i]` means s'_i is a true end of the task (the MDP stopped); `timeouts[i]` means the
    episode was cut after step i for another reason (time limit, goal reached in a goal-switching maze,
    end of the recording). The two never mix: learners bootstrap through timeouts, not terminals.
    `returns[i]` is the return of the trajectory (or antmaze segment) that transition i belongs to,
    used for return-weighted sampling (spec §3).
    """

    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    episode_ids: np.ndarray  # (N,) int64
    returns: np.ndarray  # (N,) float32

    def __post_init__(self) -> None:
        n = len(self.observations)
        for f in fields(self):
            array = getattr(self, f.name)
            if not isinstance(array, np.ndarray):
                raise TypeError(f"Transitions.{f.name} must be a numpy array, got {type(array).__name__}")
            if len(array) != n:
                raise DatasetCorruptError(
                    f"Transitions.{f.name} has {len(array)} rows but observations has {n}",
                    "the dataset's arrays must be aligned; re-create it",
                )
        if self.observations.ndim != 2 or self.next_observations.shape != self.observations.shape:
            raise DatasetCorruptError(
                f"observations {self.observations.shape} and next_observations "
                f"{self.next_observations.shape} must both be (N, obs_dim)",
            )
        if self.actions.ndim != 2:
            raise DatasetCorruptError(f"actions must be (N, act_dim), got {self.actions.shape}")
        for name in ("rewards", "terminals", "timeouts", "episode_ids", "returns"):
            if getattr(self, name).ndim != 1:
                raise DatasetCorruptError(f"Transitions.{name} must be one-dimensional")

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def num_episodes(self) -> int:
        return len(np.unique(self.episode_ids))

    def given_and_predicted(self, direction: Direction) -> tuple[np.ndarray, np.ndarray]:
        """(the state a model of `direction` is given, the state it predicts) for every transition:
        reverse (s', s) -- ROMI models where s' came from --, forward (s, s'). The one place the
        direction convention is written; the dynamics model's training pairs and the rollout policy's
        conditioning states both read it."""
        if direction == "reverse":
            return self.next_observations, self.observations
        if direction == "forward":
            return self.observations, self.next_observations
        raise ValueError(f"direction must be 'reverse' or 'forward', got {direction!r}")

    @property
    def anchor_states(self) -> np.ndarray:
        """The dataset states imagined rollouts are anchored on, in both directions: `observations`, as in
        the official code. Reverse rollouts take them as s' and imagine backwards, so every imagined
        trajectory ends in a dataset state; forward ones take them as s. `observations` never holds a
        terminal state (hopper/walker falls and antmaze goals appear only as `next_observations`)."""
        return self.observations

    def check_finite(self, source: str, hint: str | None = None) -> None:
        """Raise `DatasetCorruptError` naming the first array with NaN or inf values (`hint`: how to
        re-create this dataset)."""
        for name in ("observations", "actions", "rewards", "next_observations", "returns"):
            array = getattr(self, name)
            bad = ~np.isfinite(array)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise DatasetCorruptError(
                    f"{source}: {name} holds {int(bad.sum())} NaN/inf values (first at transition {row})",
                    hint or "re-create the dataset, or download it again",
                )


def episode_returns(episode_ids: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Per-transition return of the episode each transition belongs to (ids need not be sorted)."""
    _, inverse = np.unique(episode_ids, return_inverse=True)
    totals = np.bincount(inverse, weights=rewards.astype(np.float64))
    return totals[inverse].astype(np.float32)
