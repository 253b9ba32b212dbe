"""Evaluation (spec §6): deterministic episodes, normalised scores, trajectory discrepancy (eq. 5)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from romi.evaluation import DiscrepancyIndex, EvalResult, evaluate, normalized_score, trajectory_discrepancy


class LineEnv(gym.Env):
    """x starts uniform in [0, 1) (from the reset seed) and moves by the action; reward = the action.
    Terminates when x >= 3, truncates after 10 steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform()), 0
        return np.array([self.x]), {}

    def step(self, action):
        self.x += float(action[0])
        self.t += 1
        return np.array([self.x]), float(action[0]), self.x >= 3.0, self.t >= 10, {}


def test_episodes_by_hand() -> None:
    env = LineEnv()
    result = evaluate(lambda obs: np.array([0.5], np.float32), env, episodes=2, seed=7, record_states=True)
    starts = [LineEnv().reset(seed=7 + i)[0][0] for i in range(2)]
    # From x0 in [0, 1), +0.5 per step reaches 3 after ceil((3 - x0) / 0.5) steps (terminated).
    expected_lengths = [int(np.ceil((3.0 - x0) / 0.5)) for x0 in starts]
    assert result.lengths.tolist() == expected_lengths
    np.testing.assert_allclose(result.returns, 0.5 * np.array(expected_lengths))
    assert result.mean_return == pytest.approx(0.5 * np.mean(expected_lengths))
    # The recorded states are the ones the policy acted in: x0, x0 + 0.5, ... (not the final state).
    for trajectory, x0, length in zip(result.trajectories, starts, expected_lengths, strict=True):
        assert trajectory.shape == (length, 1) and trajectory.dtype == np.float32
        np.testing.assert_allclose(trajectory[:, 0], x0 + 0.5 * np.arange(length), rtol=1e-6)
    # Truncation ends an episode too.
    still = evaluate(lambda obs: np.array([0.0], np.float32), env, episodes=1, seed=0)
    assert still.lengths.tolist() == [10] and still.returns.tolist() == [0.0] and still.trajectories == []


def test_evaluation_is_deterministic_given_the_seed() -> None:
    env = gym.make("Pendulum-v1", max_episode_steps=20)

    def act(obs: np.ndarray) -> np.ndarray:
        assert obs.dtype == np.float32
        return np.clip(-2.0 * obs[:1], -2, 2).astype(np.float32)

    a = evaluate(act, env, episodes=3, seed=5, record_states=True)
    env.reset(seed=123)  # whatever happened to the env in between
    b = evaluate(act, env, episodes=3, seed=5)
    c = evaluate(act, env, episodes=3, seed=6)
    assert isinstance(a, EvalResult)
    assert np.array_equal(a.returns, b.returns) and a.lengths.tolist() == [20, 20, 20]
    assert not np.array_equal(a.returns, c.returns), "a different seed starts elsewhere"
    assert a.returns[1] == c.returns[0], "episode i uses seed + i"
    assert len(a.trajectories) == 3 and a.trajectories[0].shape == (20, 3)
    with pytest.raises(ValueError):
        evaluate(act, env, episodes=0, seed=0)


def test_normalized_score() -> None:
    np.testing.assert_allclose(normalized_score(np.array([10.0, 30.0, 20.0]), 10.0, 30.0), [0.0, 100.0, 50.0])
    # D4RL hopper references (spec §6).
    assert normalized_score(np.array([3234.3]), -20.27, 3234.3)[0] == pytest.approx(100.0)
    with pytest.raises(ValueError):
        normalized_score(np.array([1.0]), 2.0, 2.0)


def test_trajectory_discrepancy_by_hand() -> None:
    dataset = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert trajectory_discrepancy([dataset.copy(), dataset[::-1]], dataset) == 0.0
    trajectory = np.array([[0.0, 2.0], [1.0, 1.0], [4.0, 4.0]])  # nearest distances 2, 1, 5
    index = DiscrepancyIndex(dataset)
    assert index.query([trajectory]) == pytest.approx(8.0 / 3.0)
    # Averaged over trajectories, each counting once whatever its length: (8/3 + 0) / 2.
    assert index.query([trajectory, dataset[:1]]) == pytest.approx(4.0 / 3.0)
    np.testing.assert_allclose(index.per_trajectory([trajectory, dataset]), [8.0 / 3.0, 0.0])
    assert np.isnan(index.query([]))
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        index.query([np.zeros((3, 5))])


@settings(max_examples=25, deadline=None)
@given(
    dataset=arrays(np.float64, st.tuples(st.integers(1, 30), st.just(3)), elements=st.floats(-10, 10)),
    trajectory=arrays(np.float64, st.tuples(st.integers(1, 20), st.just(3)), elements=st.floats(-10, 10)),
)
def test_discrepancy_matches_brute_force(dataset: np.ndarray, trajectory: np.ndarray) -> None:
    brute = np.linalg.norm(trajectory[:, None, :] - dataset[None, :, :], axis=-1).min(axis=1).mean()
    assert trajectory_discrepancy([trajectory], dataset) == pytest.approx(brute, rel=1e-9, abs=1e-9)
    # Dataset states themselves are at distance zero.
    assert trajectory_discrepancy([dataset], dataset) == 0.0
