"""The mixed sampler and return weights (spec §3)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from romi.data.transitions import Transitions
from romi.imagination.sampler import MixedSampler, return_weights
from romi.types import Batch


def _real(n: int = 1000) -> Transitions:
    """Real rows carry their index in observations[:, 0]; episode e (10 steps) has return e."""
    rng = np.random.default_rng(0)
    episode_ids = np.repeat(np.arange(n // 10), 10)
    observations = rng.normal(size=(n, 3)).astype(np.float32)
    observations[:, 0] = np.arange(n)
    terminals = np.zeros(n, bool)
    terminals[9::20] = True  # every other episode ends in a terminal ...
    timeouts = np.zeros(n, bool)
    timeouts[19::20] = True  # ... the others in a time-out
    return Transitions(
        observations=observations, actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32), next_observations=rng.normal(size=(n, 3)).astype(np.float32),
        terminals=terminals, timeouts=timeouts, episode_ids=episode_ids, returns=episode_ids.astype(np.float32),
    )


def _model(n: int = 500) -> Batch:
    """Model rows are marked by observations[:, 0] = -1."""
    return Batch(torch.full((n, 3), -1.0), torch.zeros(n, 2), torch.ones(n), torch.zeros(n, 3), torch.ones(n))


REAL = _real()


@settings(max_examples=25, deadline=None)
@given(share=st.floats(0.0, 1.0), batch_size=st.integers(1, 300))
def test_every_batch_has_the_model_share(share: float, batch_size: int) -> None:
    sampler = MixedSampler(REAL, _model(), model_share=share, real_weights=None, batch_size=batch_size, seed=0)
    batch = sampler.sample()
    assert all(t.shape[0] == batch_size and t.dtype == torch.float32 for t in batch)
    is_model = batch.observations[:, 0] == -1.0
    assert int(is_model.sum()) == round(share * batch_size)
    # Real rows come first, then model rows (so a learner could split them if it ever needs to).
    assert not is_model[: batch_size - round(share * batch_size)].any()


def test_real_rows_are_exact_and_dones_are_terminals_not_timeouts() -> None:
    sampler = MixedSampler(REAL, None, model_share=0.0, real_weights=None, batch_size=2000, seed=3)
    batch = sampler.sample()
    rows = batch.observations[:, 0].long().numpy()
    np.testing.assert_array_equal(batch.actions.numpy(), REAL.actions[rows])
    np.testing.assert_array_equal(batch.rewards.numpy(), REAL.rewards[rows])
    np.testing.assert_array_equal(batch.next_observations.numpy(), REAL.next_observations[rows])
    np.testing.assert_array_equal(batch.dones.numpy(), REAL.terminals[rows].astype(np.float32))
    assert REAL.timeouts[rows].any() and batch.dones[torch.as_tensor(REAL.timeouts[rows])].sum() == 0
    # The data lives in tensors from the start: sampling never touches numpy.
    assert all(isinstance(t, torch.Tensor) for t in sampler.real)


def test_return_weights_by_hand() -> None:
    np.testing.assert_allclose(return_weights(np.array([0.0, 1.0, 3.0])), [0.0, 0.25, 0.75])
    # A return range below 1 is not stretched: (R - min) / 1, then normalised.
    np.testing.assert_allclose(return_weights(np.array([0.0, 0.5, 0.5, 0.25])), [0.0, 0.4, 0.4, 0.2])
    with pytest.raises(ValueError):
        return_weights(np.array([1.0, np.nan]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4), min_size=2, max_size=50))
def test_return_weights_are_a_distribution_increasing_in_return(returns: list[float]) -> None:
    r = np.array(returns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        w = return_weights(r)
    assert np.isclose(w.sum(), 1.0) and (w >= 0).all()
    order = np.argsort(r, kind="stable")
    assert (np.diff(w[order]) >= -1e-15).all()


def test_equal_returns_fall_back_to_uniform_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="uniformly"):
        weights = return_weights(np.ones(5))
    np.testing.assert_allclose(weights, 0.2)


def test_weighted_sampling_follows_the_weights_and_is_deterministic() -> None:
    weights = return_weights(REAL.returns)
    sampler = MixedSampler(REAL, None, model_share=0.0, real_weights=weights, batch_size=20_000, seed=1)
    again = MixedSampler(REAL, None, model_share=0.0, real_weights=weights, batch_size=20_000, seed=1)
    drawn = sampler.sample().observations
    assert torch.equal(drawn, again.sample().observations)
    rows = drawn[:, 0].long().numpy()
    episodes = REAL.episode_ids[rows]
    assert (REAL.returns[rows] == 0).sum() == 0, "the lowest-return trajectory has weight zero"
    # Episode e is drawn with probability e / sum(e); compare the mean return: sum e^2 / sum e = 66.
    e = np.arange(100)
    assert REAL.returns[rows].mean() == pytest.approx((e**2).sum() / e.sum(), abs=1.0)  # uniform would be 49.5
    counts = np.bincount(episodes, minlength=100)
    expected = len(rows) * e / e.sum()
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected.max())  # within 5 binomial std


def test_model_share_one_and_zero() -> None:
    all_model = MixedSampler(REAL, _model(), model_share=1.0, real_weights=None, batch_size=50, seed=0).sample()
    assert (all_model.observations[:, 0] == -1).all() and (all_model.dones == 1).all()
    no_model = MixedSampler(REAL, _model(), model_share=0.0, real_weights=None, batch_size=50, seed=0).sample()
    assert (no_model.observations[:, 0] >= 0).all()


def test_validation() -> None:
    with pytest.raises(ValueError, match="model buffer"):
        MixedSampler(REAL, None, model_share=0.5, real_weights=None, batch_size=10, seed=0)
    with pytest.raises(ValueError, match="model buffer"):
        MixedSampler(REAL, _model(0), model_share=0.5, real_weights=None, batch_size=10, seed=0)
    for share in (1.5, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            MixedSampler(REAL, _model(), model_share=share, real_weights=None, batch_size=10, seed=0)
    with pytest.raises(ValueError, match="weight"):
        MixedSampler(REAL, None, model_share=0.0, real_weights=np.ones(3), batch_size=10, seed=0)
    wrong_dims = Batch(torch.zeros(5, 4), torch.zeros(5, 2), torch.zeros(5), torch.zeros(5, 4), torch.zeros(5))
    with pytest.raises(ValueError, match="does not match"):
        MixedSampler(REAL, wrong_dims, model_share=0.5, real_weights=None, batch_size=10, seed=0)


def test_state_dict_resumes_the_same_batches() -> None:
    sampler = MixedSampler(REAL, _model(), model_share=0.3, real_weights=return_weights(REAL.returns),
                           batch_size=10, seed=0)
    sampler.sample()
    state = sampler.state_dict()
    first = [sampler.sample() for _ in range(3)]
    sampler.load_state_dict(state)
    for batch in first:
        assert all(torch.equal(a, b) for a, b in zip(sampler.sample(), batch, strict=True))
