"""Pieces shared by the dataset recipes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass
class RecipeResult:
    episodes: list[Any]  # minari EpisodeBuffer
    ref_min_score: float
    ref_max_score: float
    description: str
    generation_seconds: float
    eval_env_spec: Any = None
    extra_metadata: dict[str, Any] = field(default_factory=dict)


def episode_buffer(
    observations: Any, actions: np.ndarray, rewards: np.ndarray, terminations: np.ndarray, truncations: np.ndarray
) -> Any:
    """A Minari `EpisodeBuffer` from arrays (observations: one more row than actions)."""
    from minari.data_collector import EpisodeBuffer

    return EpisodeBuffer(
        observations=observations,
        actions=np.asarray(actions, dtype=np.float32),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminations=np.asarray(terminations, dtype=bool),
        truncations=np.asarray(truncations, dtype=bool),
    )


def mean_return(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> float:
    """Average undiscounted return of `act` over `episodes` seeded episodes of `env`."""
    from romi.evaluation import evaluate

    return float(evaluate(act, env, episodes=episodes, seed=seed).mean_return)


def random_actor(space: gym.spaces.Box, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)

    def act(observation: np.ndarray) -> np.ndarray:
        return rng.uniform(low, high).astype(np.float32)

    return act
