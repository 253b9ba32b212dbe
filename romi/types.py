"""Shared tensor types and the small protocols that connect the rooms of the house."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

Direction = Literal["reverse", "forward"]
"""Which way a dynamics model runs: reverse p(s, r | s', a) (ROMI) or forward p(s', r | s, a) (FOMI)."""
RolloutKind = Literal["cvae", "rbc", "uniform"]
"""The rollout policy G(a | s') (reverse) or pi(a | s) (forward) that picks imagined actions."""


class Batch(NamedTuple):
    """A training batch on the trial's device, float32 throughout.

    `dones[i]` is 1.0 when `next_observations[i]` is terminal (no bootstrapping past it); episode
    time-outs are *not* dones.
    """

    observations: torch.Tensor  # (B, obs_dim)
    actions: torch.Tensor  # (B, act_dim)
    rewards: torch.Tensor  # (B,)
    next_observations: torch.Tensor  # (B, obs_dim)
    dones: torch.Tensor  # (B,)


@runtime_checkable
class RolloutPolicy(Protocol):
    """Every rollout policy (CVAE, RBC, uniform; reverse or forward) answers the same call.

    `states` are the states the policy is conditioned on: s' for reverse rollouts, s for forward.
    """

    def sample(self, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


@runtime_checkable
class StepModel(Protocol):
    """A learned model that takes one imagined step in its direction.

    Reverse: `states` are s', returns (s, r). Forward: `states` are s, returns (s', r).
    """

    direction: str

    def step(
        self, states: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class Learner(Protocol):
    """An offline learner (BCQ, CQL): one gradient step per batch, acting, and an exact checkpoint."""

    step: int

    def update(self, batch: Batch) -> dict[str, float]: ...

    def act(self, observations: np.ndarray) -> np.ndarray: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
