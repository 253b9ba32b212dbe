"""Acting with a checkpointed SAC policy (an RLlib RLModule) as a numpy function of one observation.

Policies act through the RLModule's `forward_inference` outputs (the squashed-Gaussian inputs); the
action is computed here (`squashed_gaussian_action`) so data collection is deterministic given a numpy
generator, and the "deterministic" action is tanh(mean), as in SAC (RLlib's `to_deterministic()`
returns the unsquashed mean).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np


def squashed_gaussian_action(
    dist_inputs: np.ndarray, low: np.ndarray, high: np.ndarray, noise: np.ndarray | None = None
) -> np.ndarray:
    """SAC's action from the policy head's outputs `[mean, log_std]`, mapped to the env's bounds.

    noise None: the deterministic action tanh(mean). Otherwise tanh(mean + std * noise) with
    log_std clipped to RLlib's range, as RLlib's `TorchSquashedGaussian` samples, then scaled from
    [-1, 1] to [low, high] as RLlib's action normalisation does (all three envs use [-1, 1]).
    """
    from ray.rllib.utils.numpy import MAX_LOG_NN_OUTPUT, MIN_LOG_NN_OUTPUT

    mean, log_std = np.split(np.asarray(dist_inputs, dtype=np.float64), 2, axis=-1)
    pre_squash = mean
    if noise is not None:
        pre_squash = mean + np.exp(np.clip(log_std, MIN_LOG_NN_OUTPUT, MAX_LOG_NN_OUTPUT)) * noise
    unit = np.tanh(pre_squash)
    return np.clip(low + (unit + 1.0) * 0.5 * (high - low), low, high).astype(np.float32)


class SACPolicy:
    """A checkpointed SAC policy (RLlib RLModule) as a numpy function of one observation."""

    def __init__(self, module: Any, action_space: gym.spaces.Box) -> None:
        self.module = module
        self.low = action_space.low.astype(np.float64)
        self.high = action_space.high.astype(np.float64)

    @classmethod
    def load(cls, path: Path, action_space: gym.spaces.Box) -> SACPolicy:
        from ray.rllib.core.rl_module.rl_module import RLModule

        return cls(RLModule.from_checkpoint(str(path)), action_space)

    def dist_inputs(self, observation: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)[None])
            out = self.module.forward_inference({"obs": obs})
        return out["action_dist_inputs"][0].numpy()

    def act(self, observation: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Stochastic with `rng` (the behaviour policy that made the data), deterministic without."""
        inputs = self.dist_inputs(observation)
        noise = None if rng is None else rng.standard_normal(len(self.low))
        return squashed_gaussian_action(inputs, self.low, self.high, noise)
