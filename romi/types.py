"""Shared tensor types and the small protocols that connect the rooms of the house."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

Direction = Literal["reverse", "forward"]
"""Which way a dynamics model runs: reverse p(s, r | s', a) (ROMI) or forward p(s', r | s, a) (FOMI)."""
RolloutKind = Literal["cvae", "rbc", "uniform"]
"""The rollout policy G(a | s') (reverse) or pi(a | s) (forward) that picks imagined actions."""
Log = Callable[[str], None]
"""Where a long step writes its human-readable lines (print, a logger, a Ray worker's stdout)."""
IsDone = Callable[[torch.Tensor], torch.Tensor]
"""(B, obs_dim) states -> (B,) bool: is this state terminal? (`romi.models.termination`)."""
ProgressCallback = Callable[[int, dict[str, float]], None]
"""Called by a training loop with (epoch or iteration, metrics) as it goes."""


COLUMNS: tuple[str, ...] = ("observations", "actions", "rewards", "next_observations", "dones")
"""The five aligned columns of every transition container: (s, a, r, s', done)."""


@dataclass(frozen=True)
class Batch:
    """Transitions (s, a, r, s', done) as aligned tensors: a training batch, a shard of imagined
    rollouts or the whole model buffer -- one type, whatever the number of rows.

    `dones[i]` is 1.0 when `next_observations[i]` is terminal (no bootstrapping past it); episode
    time-outs are *not* dones. Frozen: the fields are never re-bound (`fill_buffer` writes into
    freshly allocated tensors, `allocate`).
    """

    observations: torch.Tensor  # (N, obs_dim)
    actions: torch.Tensor  # (N, act_dim)
    rewards: torch.Tensor  # (N,)
    next_observations: torch.Tensor  # (N, obs_dim)
    dones: torch.Tensor  # (N,) float 0/1: next_observations is terminal

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    def __iter__(self) -> Iterator[torch.Tensor]:
        """The columns in order, so a learner reads `obs, actions, rewards, next_obs, dones = batch`."""
        return iter((self.observations, self.actions, self.rewards, self.next_observations, self.dones))

    @staticmethod
    def concat(parts: Sequence[Batch]) -> Batch:
        if not parts:
            raise ValueError("no transitions to concatenate")
        return Batch(*(torch.cat(column) for column in zip(*parts, strict=True)))

    def take(self, index: torch.Tensor | slice) -> Batch:
        """The rows at `index` (a copy for a tensor index, views for a slice)."""
        return Batch(*(column[index] for column in self))

    def head(self, n: int) -> Batch:
        """The first `n` transitions (views, no copy)."""
        return self.take(slice(0, n))

    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> Batch:
        return Batch(*(column.to(device=device, dtype=dtype).contiguous() for column in self))

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {name: column.detach().cpu().numpy() for name, column in zip(COLUMNS, self, strict=True)}

    @staticmethod
    def from_numpy(arrays: Mapping[str, np.ndarray]) -> Batch:
        # The arrays may be read-only views of Ray's object store. torch only reads them here and
        # every consumer copies (concat, sampling by index), so the "non-writable" warning is noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return Batch(*(torch.from_numpy(arrays[name]) for name in COLUMNS))

    @staticmethod
    def allocate(like: Batch, n: int) -> Batch:
        """Uninitialised room for `n` transitions shaped, typed and placed like `like`."""
        return Batch(*(torch.empty((n, *c.shape[1:]), dtype=c.dtype, device=c.device) for c in like))


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
