"""Rollout invariants on a toy system whose exact reverse and forward dynamics are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from romi.imagination.rollout import Rollouts, fill_buffer, generate_rollouts, generate_shard, shard_plan
from romi.models.termination import termination_fn


class ShiftModel:
    """s' = s + a (forward) and s = s' - a (reverse); reward = first coordinate of s."""

    def __init__(self, direction: str, poison_above: float | None = None) -> None:
        self.direction = direction
        self.poison_above = poison_above

    def step(self, states, actions, generator=None):
        other = states - actions if self.direction == "reverse" else states + actions
        rewards = (other if self.direction == "reverse" else states)[:, 0].clone()
        if self.poison_above is not None:
            other = torch.where(other[:, :1] > self.poison_above, torch.full_like(other, float("nan")), other)
        return other, rewards


class ConstantPolicy:
    def sample(self, states, generator=None):
        return torch.full((states.shape[0], states.shape[1]), 0.1)


def never(states: torch.Tensor) -> torch.Tensor:
    return torch.zeros(states.shape[0], dtype=torch.bool)


def test_reverse_rollouts_end_in_dataset_states_and_chain() -> None:
    starts = torch.arange(12, dtype=torch.float32).view(6, 2)
    out = generate_rollouts(ShiftModel("reverse"), ConstantPolicy(), starts, horizon=3, is_done=never)
    assert len(out) == 18
    first_step = out.next_observations[:6]
    assert torch.equal(first_step, starts), "the last transition of each reverse trajectory ends in its start state"
    # Step k+1 continues backwards from step k's s.
    assert torch.equal(out.next_observations[6:12], out.observations[:6])
    assert torch.allclose(out.observations, out.next_observations - out.actions)


def test_forward_rollouts_start_in_dataset_states() -> None:
    starts = torch.randn(5, 2)
    out = generate_rollouts(ShiftModel("forward"), ConstantPolicy(), starts, horizon=2, is_done=never)
    assert torch.equal(out.observations[:5], starts)
    assert torch.equal(out.observations[5:], out.next_observations[:5])


def test_done_samples_stop_and_non_finite_rows_are_dropped() -> None:
    starts = torch.tensor([[0.0, 0.0], [5.0, 0.0]])

    def done_above_1(states: torch.Tensor) -> torch.Tensor:
        return states[:, 0] > 1.0

    out = generate_rollouts(ShiftModel("forward"), ConstantPolicy(), starts, horizon=4, is_done=done_above_1)
    # Row 2 is done at its first step (5.1 > 1): stored with done=1, then stops.
    assert out.dones.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    poisoned = generate_rollouts(ShiftModel("forward", poison_above=0.25), ConstantPolicy(),
                                 torch.zeros(3, 2), horizon=5, is_done=never)
    assert torch.isfinite(poisoned.next_observations).all()
    assert len(poisoned) == 3 * 2  # steps reaching 0.3 are non-finite and dropped


def test_fill_buffer_returns_exactly_n() -> None:
    def starts(n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, 2, generator=gen)

    generator = torch.Generator().manual_seed(0)
    out = fill_buffer(ShiftModel("reverse"), ConstantPolicy(), starts, 1234, 5, never, 100, generator)
    assert len(out) == 1234


@settings(max_examples=20, deadline=None)
@given(total=st.integers(1, 5000), shard=st.integers(1, 2000), seed=st.integers(0, 2**31))
def test_shard_plan_covers_total(total: int, shard: int, seed: int) -> None:
    plan = shard_plan(total, shard, seed)
    assert sum(size for size, _ in plan) == total
    assert all(0 < size <= shard for size, _ in plan)
    assert plan == shard_plan(total, shard, seed)
    assert len({s for _, s in plan}) == len(plan)


def test_shards_depend_only_on_their_seed() -> None:
    pool = torch.randn(50, 2)
    weights = torch.rand(50)
    args = (ShiftModel("reverse"), ConstantPolicy(), pool, weights)
    plan = shard_plan(700, 300, base_seed=3)
    one = Rollouts.concat([generate_shard(*args, size, 3, never, 64, seed) for size, seed in plan])
    again = Rollouts.concat([generate_shard(*args, size, 3, never, 64, seed) for size, seed in reversed(plan)][::-1])
    assert torch.equal(one.observations, again.observations)
    pool_set = {tuple(row) for row in pool.tolist()}
    assert all(tuple(row) in pool_set for row in one.next_observations[::3][:5].tolist())


def test_rollouts_numpy_round_trip() -> None:
    r = generate_rollouts(ShiftModel("forward"), ConstantPolicy(), torch.randn(4, 2), 2, never)
    back = Rollouts.from_numpy(r.to_numpy())
    assert torch.equal(back.rewards, r.rewards) and len(back) == len(r)


def test_termination_functions() -> None:
    hopper = termination_fn("hopper")
    healthy = torch.zeros(1, 11)
    healthy[0, 0] = 1.25
    fallen = healthy.clone()
    fallen[0, 0] = 0.5
    tilted = healthy.clone()
    tilted[0, 1] = 0.3
    broken = healthy.clone()
    broken[0, 5] = float("nan")
    assert hopper(torch.cat([healthy, fallen, tilted, broken])).tolist() == [False, True, True, True]
    walker = termination_fn("walker2d")
    states = torch.zeros(3, 17)
    states[:, 0] = torch.tensor([1.2, 0.5, 2.5])
    assert walker(states).tolist() == [False, True, True]
    assert not termination_fn("maze2d")(torch.randn(4, 4)).any()
    assert not termination_fn("halfcheetah")(torch.randn(4, 17)).any()
    ant = termination_fn("antmaze", np.array([1.0, 1.0]))
    assert ant(torch.tensor([[1.2, 1.2] + [0.0] * 27, [3.0, 1.0] + [0.0] * 27])).tolist() == [True, False]
    with pytest.raises(ValueError, match="valid"):
        termination_fn("pong")
