"""Evaluation (spec §6): episodes of the deterministic policy, normalised scores, and the average
trajectory discrepancy of paper eq. 5 (distance of visited states to their nearest dataset state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from scipy.spatial import cKDTree

from romi.rng import spawn


@dataclass(frozen=True)
class EvalResult:
    returns: np.ndarray  # (episodes,) undiscounted return of each episode
    lengths: np.ndarray  # (episodes,) steps of each episode
    trajectories: list[np.ndarray] = field(default_factory=list)
    """With `record_states`: per episode the (T, obs_dim) states the policy acted in; else empty."""

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))


def evaluate(
    act: Callable[[np.ndarray], np.ndarray], env: gym.Env, episodes: int, seed: int, record_states: bool = False
) -> EvalResult:
    """`episodes` episodes of `act`; episode i resets with `seed + i`, so a call is reproducible
    (and two calls with different seeds see different start states).

    The recorded trajectory holds the states the policy acted in, s_0 .. s_{T-1}: the final state
    after the last action is not one the policy was asked about, so it does not count towards the
    discrepancy (and a terminal state of a fall would dominate it).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    returns, lengths, trajectories = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        states = []
        total, steps, done = 0.0, 0, False
        while not done:
            obs = np.asarray(obs, dtype=np.float32)
            if record_states:
                states.append(obs)
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            steps += 1
            done = bool(terminated or truncated)
        returns.append(total)
        lengths.append(steps)
        if record_states:
            trajectories.append(np.stack(states))
    return EvalResult(np.asarray(returns, dtype=np.float64), np.asarray(lengths, dtype=np.int64), trajectories)


def normalized_score(returns: np.ndarray, ref_min: float, ref_max: float) -> np.ndarray:
    """D4RL's convention: 100 * (R - ref_min) / (ref_max - ref_min) (random policy 0, expert 100)."""
    if ref_max == ref_min:
        raise ValueError(f"reference scores must differ, got min = max = {ref_min}")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


class DiscrepancyIndex:
    """A KD-tree over the dataset's states, built once per trial and queried at every evaluation.

    `query` is paper eq. 5 averaged over trajectories: for each trajectory, the mean over its states
    of the Euclidean distance to the nearest dataset state; then the mean over trajectories (each
    trajectory counts once, however long it is).
    """

    def __init__(self, dataset_states: np.ndarray) -> None:
        states = np.asarray(dataset_states, dtype=np.float64)
        if states.ndim != 2 or len(states) == 0:
            raise ValueError(f"dataset states must be a non-empty (N, obs_dim) array, got shape {states.shape}")
        self.obs_dim = states.shape[1]
        self.tree = cKDTree(states)

    def per_trajectory(self, trajectories: list[np.ndarray]) -> np.ndarray:
        """Eq. 5 for each trajectory."""
        out = []
        for trajectory in trajectories:
            t = np.asarray(trajectory, dtype=np.float64)
            if t.ndim != 2 or t.shape[1] != self.obs_dim or len(t) == 0:
                raise ValueError(f"a trajectory must be a non-empty (T, {self.obs_dim}) array, got {t.shape}")
            distances, _ = self.tree.query(t, k=1)
            out.append(float(distances.mean()))
        return np.asarray(out, dtype=np.float64)

    def query(self, trajectories: list[np.ndarray]) -> float:
        """The average trajectory discrepancy (nan if there are no trajectories)."""
        if not trajectories:
            return float("nan")
        return float(self.per_trajectory(trajectories).mean())


def trajectory_discrepancy(trajectories: list[np.ndarray], dataset_states: np.ndarray) -> float:
    """One-off eq. 5; build a `DiscrepancyIndex` instead when querying the same dataset repeatedly."""
    return DiscrepancyIndex(dataset_states).query(trajectories)


@dataclass(frozen=True)
class Scores:
    """One evaluation point of a run, before it becomes a record."""

    score: float
    """Mean return normalised with D4RL's reference scores (0 random, 100 expert)."""
    score_local: float
    """Normalised with the dataset's own reference scores, measured on our evaluation env (the
    headline for home-made `local/...` datasets; for official ones the refs their metadata carries)."""
    return_mean: float
    return_std: float
    discrepancy: float
    """Average trajectory discrepancy to the dataset (paper eq. 5)."""


class Evaluator:
    """Scores a policy the way every run is scored (spec §6): `episodes` episodes on the evaluation env,
    each evaluation point with its own seed (so it is reproducible on its own), normalised with D4RL's
    refs and the dataset's own, and the discrepancy of the visited states to the data."""

    def __init__(self, env: gym.Env, dataset_states: np.ndarray, *, episodes: int, seed: int,
                 d4rl_refs: tuple[float, float], local_refs: tuple[float, float]) -> None:
        self.env = env
        self.episodes = episodes
        self.seed = seed
        self.d4rl_refs = d4rl_refs
        self.local_refs = local_refs
        self.discrepancy = DiscrepancyIndex(dataset_states)

    def __call__(self, act: Callable[[np.ndarray], np.ndarray], step: int) -> Scores:
        result = evaluate(act, self.env, episodes=self.episodes, seed=spawn(self.seed, "evaluation") + step,
                          record_states=True)
        returns = np.asarray(result.returns, dtype=np.float64)
        return Scores(
            score=float(normalized_score(returns, *self.d4rl_refs).mean()),
            score_local=float(normalized_score(returns, *self.local_refs).mean()),
            return_mean=float(returns.mean()),
            return_std=float(returns.std()),
            discrepancy=float(self.discrepancy.query(result.trajectories)),
        )
