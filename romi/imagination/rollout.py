"""Imagined rollouts, pure and batched (no Ray here; `workers.py` parallelises shards).

Reverse (ROMI): start from dataset states as s', repeatedly draw a ~ G(a | s') and (s, r) from the
reverse model, store (s, a, r, s'), and continue backwards from s. Every rollout therefore *ends* in
a dataset state. Forward (FOMI): start from dataset states as s and step forwards.
A stored transition is done when its later state is terminal; done rows stop, and rows whose
prediction is not finite are dropped without being stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch

from romi.types import RolloutPolicy, StepModel

IsDone = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Rollouts:
    """Imagined transitions (s, a, r, s', done) as aligned tensors."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor  # float 0/1

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @staticmethod
    def concat(parts: list[Rollouts]) -> Rollouts:
        if not parts:
            raise ValueError("no rollouts to concatenate")
        return Rollouts(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Rollouts)})

    def head(self, n: int) -> Rollouts:
        return Rollouts(**{f.name: getattr(self, f.name)[:n] for f in fields(self)})

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name).detach().cpu().numpy() for f in fields(self)}

    @staticmethod
    def from_numpy(arrays: dict[str, np.ndarray]) -> Rollouts:
        # The arrays may be read-only views of Ray's object store; torch only reads them here
        # (every consumer copies: concat, sampling by index).
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "non-writable NumPy array"
            return Rollouts(**{f.name: torch.from_numpy(arrays[f.name]) for f in fields(Rollouts)})


def generate_rollouts(
    model: StepModel,
    policy: RolloutPolicy,
    start_states: torch.Tensor,
    horizon: int,
    is_done: IsDone,
    generator: torch.Generator | None = None,
) -> Rollouts:
    """Rollouts of length <= `horizon` from `start_states`, in the model's direction."""
    reverse = model.direction == "reverse"
    current = start_states
    parts: list[tuple[torch.Tensor, ...]] = []
    for _ in range(horizon):
        if current.shape[0] == 0:
            break
        actions = policy.sample(current, generator)
        predicted, rewards = model.step(current, actions, generator)
        finite = torch.isfinite(predicted).all(dim=1) & torch.isfinite(rewards)
        if reverse:  # stored (s = predicted, a, r, s' = current); done is judged on s'
            obs, next_obs = predicted, current
        else:  # stored (s = current, a, r, s' = predicted)
            obs, next_obs = current, predicted
        done = is_done(next_obs) & finite
        keep = finite
        parts.append((obs[keep], actions[keep], rewards[keep], next_obs[keep], done[keep].float()))
        go_on = finite & ~done
        current = predicted[go_on]
    if not parts:
        empty = start_states[:0]
        return Rollouts(empty, empty[:, :0], empty[:, 0], empty, empty[:, 0])
    return Rollouts(*(torch.cat(column) for column in zip(*parts, strict=True)))


def shard_plan(total: int, shard_size: int, base_seed: int) -> list[tuple[int, int]]:
    """(size, seed) of every shard; concatenated in this order they are the model buffer."""
    if total < 1 or shard_size < 1:
        raise ValueError("total and shard_size must be positive")
    sizes = [shard_size] * (total // shard_size) + ([total % shard_size] if total % shard_size else [])
    children = np.random.SeedSequence(base_seed).spawn(len(sizes))
    return [(size, int(child.generate_state(1)[0])) for size, child in zip(sizes, children, strict=True)]


def generate_shard(
    model: StepModel,
    policy: RolloutPolicy,
    start_pool: torch.Tensor,
    start_weights: torch.Tensor | None,
    num_transitions: int,
    horizon: int,
    is_done: IsDone,
    start_batch_size: int,
    seed: int,
) -> Rollouts:
    """Exactly `num_transitions` imagined transitions; the content depends only on `seed`."""
    generator = torch.Generator(device=start_pool.device).manual_seed(seed)

    def sample_starts(n: int, gen: torch.Generator) -> torch.Tensor:
        if start_weights is None:
            index = torch.randint(start_pool.shape[0], (n,), device=start_pool.device, generator=gen)
        else:
            index = torch.multinomial(start_weights, n, replacement=True, generator=gen)
        return start_pool[index]

    return fill_buffer(model, policy, sample_starts, num_transitions, horizon, is_done, start_batch_size, generator)


def fill_buffer(
    model: StepModel,
    policy: RolloutPolicy,
    sample_start_states: Callable[[int, torch.Generator], torch.Tensor],
    num_transitions: int,
    horizon: int,
    is_done: IsDone,
    start_batch_size: int,
    generator: torch.Generator,
) -> Rollouts:
    """Batches of `start_batch_size` rollouts until `num_transitions` are stored (then truncated)."""
    parts: list[Rollouts] = []
    stored, empty_batches = 0, 0
    with torch.no_grad():
        while stored < num_transitions:
            batch = generate_rollouts(model, policy, sample_start_states(start_batch_size, generator), horizon,
                                      is_done, generator)
            if len(batch) == 0:
                empty_batches += 1
                if empty_batches >= 10:
                    raise RuntimeError("the model produced no finite transitions in 10 batches: it has diverged")
                continue
            parts.append(batch)
            stored += len(batch)
    return Rollouts.concat(parts).head(num_transitions)
