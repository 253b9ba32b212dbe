"""Evaluation (spec §6): episodes of the deterministic policy, normalised scores, and the average
trajectory discrepancy of paper eq. 5 (distance of visited states to their nearest dataset state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class EvalResult:
    returns: np.ndarray
    lengths: np.ndarray
    trajectories: list[np.ndarray] = field(default_factory=list)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))


def evaluate(
    act: Callable[[np.ndarray], np.ndarray], env: gym.Env, episodes: int, seed: int, record_states: bool = False
) -> EvalResult:
    """`episodes` episodes of `act`; episode i resets with seed + i, so a call is reproducible."""
    returns, lengths, trajectories = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        states = [obs]
        total, steps, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(np.asarray(obs, dtype=np.float32)))
            total += float(reward)
            steps += 1
            done = terminated or truncated
            if record_states and not done:
                states.append(obs)
        returns.append(total)
        lengths.append(steps)
        if record_states:
            trajectories.append(np.asarray(states, dtype=np.float32))
    return EvalResult(np.asarray(returns), np.asarray(lengths), trajectories)


def normalized_score(returns: np.ndarray, ref_min: float, ref_max: float) -> np.ndarray:
    """D4RL's convention: 100 * (R - random) / (expert - random)."""
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


class DiscrepancyIndex:
    """A KD-tree over dataset states, built once and queried at every evaluation."""

    def __init__(self, dataset_states: np.ndarray) -> None:
        from scipy.spatial import cKDTree

        self.tree = cKDTree(np.asarray(dataset_states, dtype=np.float64))

    def query(self, trajectories: list[np.ndarray]) -> float:
        """Paper eq. 5 averaged over `trajectories` (nan if there are none)."""
        if not trajectories:
            return float("nan")
        per_trajectory = [float(self.tree.query(np.asarray(t, dtype=np.float64), k=1)[0].mean()) for t in trajectories]
        return float(np.mean(per_trajectory))


def trajectory_discrepancy(trajectories: list[np.ndarray], dataset_states: np.ndarray) -> float:
    return DiscrepancyIndex(dataset_states).query(trajectories)
