"""Rollout and model-buffer invariants (spec §3) on toy systems whose dynamics are known exactly.

The toy state is [row id, position]: the model never changes the id, so every stored transition can
be traced back to its start row and the chain of a rollout can be rebuilt from the buffer alone.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from romi.config import DynamicsConfig, RolloutPolicyConfig
from romi.imagination.rollout import (
    DEFAULT_START_BATCH_SIZE,
    BufferRequest,
    RowSampler,
    build_buffer_in_process,
    fill_buffer,
    generate_rollouts,
    generate_shard,
    shard_plan,
)
from romi.models.dynamics import DynamicsModel
from romi.models.rollout_policy import build_rollout_policy
from romi.types import Batch, RolloutPolicy, StepModel


class WalkModel:
    """Position moves by the action plus a little noise: forward p' = p + a + n, reverse p = p' - a + n.

    reward = the earlier position. Predictions whose position leaves [-poison, poison] come back as NaN
    (a diverging model), in the position or, for odd ids, in the reward.
    """

    def __init__(self, direction: str, poison: float = float("inf"), noise: float = 0.1) -> None:
        self.direction, self.poison, self.noise = direction, poison, noise

    def step(self, states, actions, generator=None):
        ids, position = states[:, 0], states[:, 1]
        n = self.noise * torch.randn(position.shape, generator=generator)
        other = position + actions[:, 0] + n if self.direction == "forward" else position - actions[:, 0] + n
        rewards = (position if self.direction == "forward" else other).clone()
        bad = other.abs() > self.poison
        odd = ids.remainder(2) == 1
        rewards = torch.where(bad & odd, torch.full_like(rewards, float("nan")), rewards)
        other = torch.where(bad & ~odd, torch.full_like(other, float("nan")), other)
        return torch.stack([ids, other], dim=1), rewards


class GaussianPolicy:
    def sample(self, states, generator=None):
        return torch.randn(states.shape[0], 1, generator=generator)


def done_beyond(limit: float):
    def is_done(states: torch.Tensor) -> torch.Tensor:
        return states[:, 1] > limit

    return is_done


def never(states: torch.Tensor) -> torch.Tensor:
    return torch.zeros(states.shape[0], dtype=torch.bool)


def _starts(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.stack([torch.arange(n, dtype=torch.float32), torch.randn(n, generator=generator)], dim=1)


def _by_row(out: Batch) -> dict[int, list[int]]:
    """Stored indices of each start row, in stored (= step) order."""
    rows: dict[int, list[int]] = {}
    for index, row_id in enumerate(out.observations[:, 0].long().tolist()):
        rows.setdefault(row_id, []).append(index)
    return rows


def test_toy_system_satisfies_the_protocols() -> None:
    assert isinstance(WalkModel("reverse"), StepModel) and isinstance(GaussianPolicy(), RolloutPolicy)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), horizon=st.integers(1, 6), limit=st.floats(0.0, 3.0), poison=st.floats(1.0, 4.0),
       seed=st.integers(0, 2**16))
def test_reverse_rollouts_end_in_dataset_states_and_chain(n: int, horizon: int, limit: float, poison: float,
                                                           seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    starts = _starts(n, generator)
    is_done = done_beyond(limit)
    out = generate_rollouts(WalkModel("reverse", poison), GaussianPolicy(), starts, horizon, is_done, generator)
    assert all(torch.isfinite(t).all() for t in (out.observations, out.actions, out.rewards, out.next_observations))
    assert torch.equal(out.dones.bool(), is_done(out.next_observations)), "done is judged on the later state s'"
    for row_id, indices in _by_row(out).items():
        assert len(indices) <= horizon
        # The first step back has the dataset state as s': the rollout ends (in time) in the data.
        assert torch.equal(out.next_observations[indices[0]], starts[row_id])
        for later, earlier in itertools.pairwise(indices):  # step k, then step k + 1 (further back)
            assert torch.equal(out.observations[later], out.next_observations[earlier]), "s of step k = s' of k+1"
        assert not out.dones[indices[:-1]].any(), "a done transition ends its rollout"
    # Replaying the first step with the same random stream: exactly the rows whose first prediction was
    # finite are in the buffer; the others were dropped without being stored.
    replay = torch.Generator().manual_seed(seed)
    _starts(n, replay)
    actions = GaussianPolicy().sample(starts, replay)
    previous, rewards = WalkModel("reverse", poison).step(starts, actions, replay)
    finite = torch.isfinite(previous).all(dim=1) & torch.isfinite(rewards)
    assert set(_by_row(out)) == set(torch.nonzero(finite).flatten().tolist())


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), horizon=st.integers(1, 6), limit=st.floats(0.0, 3.0), seed=st.integers(0, 2**16))
def test_forward_rollouts_start_in_dataset_states_and_chain(n: int, horizon: int, limit: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    starts = _starts(n, generator)
    is_done = done_beyond(limit)
    out = generate_rollouts(WalkModel("forward"), GaussianPolicy(), starts, horizon, is_done, generator)
    assert torch.equal(out.dones.bool(), is_done(out.next_observations))
    rows = _by_row(out)
    assert sorted(rows) == list(range(n)), "nothing is non-finite here, so every start row is stored"
    for row_id, indices in rows.items():
        assert torch.equal(out.observations[indices[0]], starts[row_id])
        for earlier, later in itertools.pairwise(indices):
            assert torch.equal(out.observations[later], out.next_observations[earlier])
        # Each rollout runs the full horizon unless it ended in a done transition.
        assert len(indices) == horizon or out.dones[indices[-1]] == 1
        assert not out.dones[indices[:-1]].any()


def test_done_rows_stop_and_non_finite_rows_are_not_stored() -> None:
    class Shift:
        direction = "forward"

        def step(self, states, actions, generator=None):
            nxt = states + actions
            # Row id 2's second step is non-finite.
            nxt = torch.where((states[:, :1] == 2) & (states[:, 1:] > 0.05), torch.full_like(nxt, float("nan")), nxt)
            return nxt, states[:, 1].clone()

    class Constant:
        def sample(self, states, generator=None):
            return torch.tensor([0.0, 0.1]).expand(states.shape[0], 2)

    starts = torch.tensor([[0.0, 0.0], [1.0, 5.0], [2.0, 0.0]])
    out = generate_rollouts(Shift(), Constant(), starts, horizon=4, is_done=done_beyond(1.0))
    # Step 1: all three stored; row 1 (5.1 > 1) is done and stops. Step 2: row 0 stored, row 2 is NaN and
    # dropped. Steps 3 and 4: only row 0.
    assert out.observations[:, 0].tolist() == [0, 1, 2, 0, 0, 0]
    assert out.dones.tolist() == [0, 1, 0, 0, 0, 0]
    assert out.next_observations[:, 1].tolist() == pytest.approx([0.1, 5.1, 0.1, 0.2, 0.3, 0.4])


def test_edge_cases() -> None:
    model, policy = WalkModel("reverse"), GaussianPolicy()
    empty = generate_rollouts(model, policy, _starts(0), 3, never)
    assert len(empty) == 0 and empty.actions.shape == (0, 1) and empty.observations.shape == (0, 2)
    with pytest.raises(ValueError, match="horizon"):
        generate_rollouts(model, policy, _starts(3), 0, never)
    with pytest.raises(ValueError, match="direction"):
        generate_rollouts(WalkModel("sideways"), policy, _starts(3), 1, never)
    with pytest.raises(RuntimeError, match="diverged"):
        fill_buffer(WalkModel("reverse", poison=-1.0), policy, _starts, 10, 3, never, 8, torch.Generator())
    with pytest.raises(ValueError, match="num_transitions"):
        fill_buffer(model, policy, _starts, 0, 3, never)


@settings(max_examples=20, deadline=None)
@given(total=st.integers(1, 700), batch=st.integers(1, 64), horizon=st.integers(1, 5))
def test_fill_buffer_returns_exactly_n_and_equals_the_truncated_batches(total: int, batch: int, horizon: int) -> None:
    model, policy, is_done = WalkModel("reverse", poison=2.5), GaussianPolicy(), done_beyond(1.0)
    out = fill_buffer(model, policy, _starts, total, horizon, is_done, batch, torch.Generator().manual_seed(1))
    assert len(out) == total
    # Reference: the same batches collected and concatenated, then cut.
    generator, parts, stored = torch.Generator().manual_seed(1), [], 0
    while stored < total:
        part = generate_rollouts(model, policy, _starts(batch, generator), horizon, is_done, generator)
        parts.append(part)
        stored += len(part)
    reference = Batch.concat(parts).head(total)
    for mine, theirs in zip(out.to_numpy().values(), reference.to_numpy().values(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_default_start_batch_is_the_spec_value() -> None:
    assert DEFAULT_START_BATCH_SIZE == 1000


@settings(max_examples=20, deadline=None)
@given(total=st.integers(1, 5000), shard=st.integers(1, 2000), seed=st.integers(0, 2**31))
def test_shard_plan_covers_total_and_seeds_are_stable(total: int, shard: int, seed: int) -> None:
    plan = shard_plan(total, shard, seed)
    assert sum(size for size, _ in plan) == total
    assert all(0 < size <= shard for size, _ in plan)
    assert plan == shard_plan(total, shard, seed)
    assert len({s for _, s in plan}) == len(plan)
    # A bigger buffer only appends shards: the seed of shard i does not depend on the total.
    longer = shard_plan(total + 3 * shard, shard, seed)
    assert [s for _, s in longer[: total // shard]] == [s for _, s in plan[: total // shard]]


@settings(max_examples=8, deadline=None)
@given(workers=st.integers(1, 4), weighted=st.booleans())
def test_buffer_does_not_depend_on_how_shards_are_grouped(workers: int, weighted: bool) -> None:
    """Any assignment of shards to workers (each with its own model copy), reassembled in plan order,
    is the same buffer, as long as every shard is generated from its own seed."""
    pool = _starts(50, torch.Generator().manual_seed(0))
    weights = torch.rand(50, generator=torch.Generator().manual_seed(1)) if weighted else None
    model, policy, is_done = WalkModel("reverse", poison=3.0), GaussianPolicy(), done_beyond(1.5)
    plan = shard_plan(700, 160, base_seed=3)
    reference = Batch.concat([generate_shard(model, policy, pool, weights, size, 3, is_done, 64, seed)
                                 for size, seed in plan])
    shards: dict[int, Batch] = {}
    for worker in range(workers):  # worker w takes shards w, w + workers, ..., latest first
        mine = [i for i in range(len(plan)) if i % workers == worker]
        local_model, local_policy = copy.deepcopy(model), copy.deepcopy(policy)
        for i in reversed(mine):
            size, seed = plan[i]
            shards[i] = generate_shard(local_model, local_policy, pool, weights, size, 3, is_done, 64, seed)
    grouped = Batch.concat([shards[i] for i in range(len(plan))])
    assert len(grouped) == 700
    for mine, theirs in zip(grouped.to_numpy().values(), reference.to_numpy().values(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    # A different seed is a different shard.
    other = generate_shard(model, policy, pool, weights, plan[0][0], 3, is_done, 64, plan[0][1] + 1)
    assert not torch.equal(other.observations, reference.head(plan[0][0]).observations)


def test_weighted_start_states_follow_the_weights() -> None:
    pool = _starts(4)
    weights = torch.tensor([0.0, 1.0, 3.0, 0.0])
    out = generate_shard(WalkModel("reverse"), GaussianPolicy(), pool, weights, 4000, 1, never, 500, seed=0)
    ids = out.next_observations[:, 0].long()
    counts = torch.bincount(ids, minlength=4).tolist()
    assert counts[0] == counts[3] == 0, "zero-weight start states are never drawn"
    assert 2.7 < counts[2] / counts[1] < 3.3


def test_row_sampler() -> None:
    generator = torch.Generator().manual_seed(0)
    uniform = RowSampler.create(5)
    drawn = uniform(10_000, generator)
    assert drawn.min() == 0 and drawn.max() == 4
    weighted = RowSampler.create(3, np.array([1.0, 0.0, 1.0]))
    assert set(weighted(1000, generator).tolist()) == {0, 2}
    for bad in (np.array([1.0, -1.0, 1.0]), np.zeros(3), np.array([1.0, np.nan, 1.0]), np.ones(4)):
        with pytest.raises(ValueError):
            RowSampler.create(3, bad)


def test_rollouts_container() -> None:
    r = generate_rollouts(WalkModel("forward"), GaussianPolicy(), _starts(4), 2, never, torch.Generator())
    back = Batch.from_numpy(r.to_numpy())
    assert len(back) == len(r) == 8
    assert all(np.array_equal(a, b) for a, b in zip(back.to_numpy().values(), r.to_numpy().values(), strict=True))
    both = Batch.concat([r, r.head(3)])
    assert len(both) == 11 and torch.equal(both.rewards[8:], r.rewards[:3])
    with pytest.raises(ValueError):
        Batch.concat([])
    with pytest.raises(AttributeError):
        r.rewards = r.rewards  # type: ignore[misc]  # frozen


def test_real_dynamics_model_reverse_buffer() -> None:
    """The same invariants with the real (tiny) DynamicsModel and uniform policy, through BufferRequest."""
    config = DynamicsConfig(hidden_dim=16, hidden_layers=2, weight_decays=(0.0, 0.0, 0.0), ensemble_size=3,
                            num_elites=2)
    torch.manual_seed(0)
    model = DynamicsModel(4, 2, config, "reverse").eval()
    policy = build_rollout_policy("uniform", 4, 2, 1.0, RolloutPolicyConfig())
    pool = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
    plan = shard_plan(1500, 600, base_seed=2)
    request = BufferRequest(model, policy, pool, None, plan, 5, "maze2d", None, 100)
    buffer = build_buffer_in_process(request)
    assert len(buffer) == 1500 and not buffer.observations.requires_grad
    assert buffer.observations.dtype == torch.float32 and buffer.actions.abs().max() <= 1.0
    assert not buffer.dones.any(), "maze2d is never done"
    pool_rows = {tuple(row) for row in pool.tolist()}
    # Each batch of 100 start rows stores its 100 step-1 transitions first: their s' are dataset states.
    first_steps = buffer.next_observations[:100]
    assert all(tuple(row) in pool_rows for row in first_steps.tolist())
    # ... and step 2 continues from step 1's s (h = 5 and nothing stops, so rows stay aligned).
    assert torch.equal(buffer.next_observations[100:200], buffer.observations[:100])
    assert torch.equal(build_buffer_in_process(request).rewards, buffer.rewards), "same plan, same buffer"
