from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from romi.data.transitions import Transitions
from romi.evaluation import DiscrepancyIndex, evaluate, normalized_score, trajectory_discrepancy
from romi.imagination.rollout import Rollouts
from romi.imagination.sampler import MixedSampler, return_weights


def _real(n: int = 1000) -> Transitions:
    rng = np.random.default_rng(0)
    episode_ids = np.repeat(np.arange(n // 10), 10)
    returns = episode_ids.astype(np.float32)  # later episodes have higher returns
    return Transitions(
        observations=rng.normal(size=(n, 3)).astype(np.float32), actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        rewards=np.zeros(n, np.float32), next_observations=rng.normal(size=(n, 3)).astype(np.float32),
        terminals=np.zeros(n, bool), timeouts=np.zeros(n, bool), episode_ids=episode_ids, returns=returns,
    )


def _model(n: int = 500) -> Rollouts:
    return Rollouts(torch.full((n, 3), 7.0), torch.zeros(n, 2), torch.ones(n), torch.zeros(n, 3), torch.zeros(n))


def test_model_share_of_every_batch() -> None:
    sampler = MixedSampler(_real(), _model(), model_share=0.7, real_weights=None, batch_size=100, seed=0)
    batch = sampler.sample()
    assert batch.observations.shape == (100, 3)
    assert int((batch.observations[:, 0] == 7.0).sum()) == 70


def test_weighted_sampling_favours_high_returns_and_is_deterministic() -> None:
    real = _real()
    weights = return_weights(real.returns)
    assert np.isclose(weights.sum(), 1) and weights[real.returns == 0].sum() == 0
    sampler = MixedSampler(real, None, model_share=0.0, real_weights=weights, batch_size=4000, seed=1)
    again = MixedSampler(real, None, model_share=0.0, real_weights=weights, batch_size=4000, seed=1)
    drawn = sampler.sample().observations
    assert torch.equal(drawn, again.sample().observations)
    index = {tuple(r): i for i, r in enumerate(real.observations.tolist())}
    rows = np.array([index[tuple(r)] for r in drawn.tolist()])
    assert real.returns[rows].mean() > 60  # uniform would give ~49.5; weighted by return ~66
    assert (real.returns[rows] == 0).sum() == 0


def test_equal_returns_fall_back_to_uniform_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="uniformly"):
        weights = return_weights(np.ones(5))
    assert np.allclose(weights, 0.2)


def test_sampler_validation_and_state() -> None:
    with pytest.raises(ValueError, match="model buffer"):
        MixedSampler(_real(), None, model_share=0.5, real_weights=None, batch_size=10, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MixedSampler(_real(), _model(), model_share=1.5, real_weights=None, batch_size=10, seed=0)
    sampler = MixedSampler(_real(), _model(), model_share=0.3, real_weights=None, batch_size=10, seed=0)
    state = sampler.state_dict()
    first = sampler.sample()
    sampler.load_state_dict(state)
    assert torch.equal(sampler.sample().actions, first.actions)


def test_evaluation_is_deterministic_and_normalised() -> None:
    env = gym.make("Pendulum-v1", max_episode_steps=20)

    def act(obs: np.ndarray) -> np.ndarray:
        return np.clip(-obs[:1] * 2.0, -2, 2).astype(np.float32)

    a = evaluate(act, env, episodes=3, seed=5, record_states=True)
    b = evaluate(act, env, episodes=3, seed=5)
    assert np.array_equal(a.returns, b.returns) and a.lengths.tolist() == [20, 20, 20]
    assert len(a.trajectories) == 3 and a.trajectories[0].shape == (20, 3)
    assert normalized_score(np.array([10.0, 30.0]), 10.0, 30.0).tolist() == [0.0, 100.0]


def test_trajectory_discrepancy_by_hand() -> None:
    dataset = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert trajectory_discrepancy([dataset.copy()], dataset) == 0.0
    trajectory = np.array([[0.0, 2.0], [1.0, 1.0]])  # distances 2 and 1
    index = DiscrepancyIndex(dataset)
    assert index.query([trajectory]) == pytest.approx(1.5)
    assert index.query([trajectory, dataset]) == pytest.approx(0.75)
