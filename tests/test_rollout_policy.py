"""Tests of the rollout policies (spec §2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import distributions as D

from romi.config import CVAEConfig, RolloutPolicyConfig
from romi.data.transitions import Transitions
from romi.models.rollout_policy import (
    CVAERolloutPolicy,
    GaussianRBCPolicy,
    UniformRolloutPolicy,
    build_rollout_policy,
    rollout_policy_pairs,
    train_rollout_policy,
)
from romi.nets import tanh_gaussian_log_prob
from romi.types import RolloutPolicy

SMALL = RolloutPolicyConfig(iterations=600, cvae=CVAEConfig(hidden_dim=64), rbc_hidden_dim=64)


def deterministic_action_dataset(n: int = 2000, seed: int = 0) -> Transitions:
    """The action is a deterministic function of the *next* state; the current state is noise.

    So a reverse-conditioned policy (on s') can predict the action, a forward one (on s) cannot.
    """
    rng = np.random.default_rng(seed)
    next_obs = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    W = np.array([[1.5, -1.0, 0.5], [0.0, 1.0, -2.0]], dtype=np.float32)
    actions = 0.9 * np.tanh(next_obs @ W.T)
    return Transitions(
        observations=rng.normal(size=(n, 3)).astype(np.float32),
        actions=actions.astype(np.float32),
        rewards=np.zeros(n, np.float32),
        next_observations=next_obs,
        terminals=np.zeros(n, bool),
        timeouts=np.zeros(n, bool),
        episode_ids=np.zeros(n, np.int64),
        returns=np.zeros(n, np.float32),
    )


def action_mse(policy: RolloutPolicy, states: np.ndarray, actions: np.ndarray) -> float:
    sampled = policy.sample(torch.as_tensor(states), torch.Generator().manual_seed(0))
    return float((sampled - torch.as_tensor(actions)).pow(2).mean())


@pytest.fixture(scope="module")
def data() -> Transitions:
    return deterministic_action_dataset()


@pytest.fixture(scope="module")
def trained(data: Transitions) -> dict[str, tuple[torch.nn.Module, dict]]:
    return {
        kind: train_rollout_policy(kind, data, "reverse", SMALL, max_action=1.0, seed=0)  # type: ignore[arg-type]
        for kind in ("cvae", "rbc", "uniform")
    }


def test_rollout_policy_pairs_follow_direction(data: Transitions) -> None:
    states, actions = rollout_policy_pairs(data, "reverse")
    np.testing.assert_array_equal(states, data.next_observations)
    np.testing.assert_array_equal(actions, data.actions)
    states, _ = rollout_policy_pairs(data, "forward")
    np.testing.assert_array_equal(states, data.observations)
    with pytest.raises(ValueError):
        rollout_policy_pairs(data, "up")  # type: ignore[arg-type]


def test_learned_policies_reconstruct_actions_better_than_uniform(
    data: Transitions, trained: dict[str, tuple[torch.nn.Module, dict]]
) -> None:
    test = deterministic_action_dataset(500, seed=1)
    mse = {kind: action_mse(policy, test.next_observations, test.actions)  # type: ignore[arg-type]
           for kind, (policy, _) in trained.items()}
    assert mse["uniform"] > 0.3  # E[(u - a)^2] with u ~ U(-1, 1) is at least 1/3
    assert mse["cvae"] < 0.1 * mse["uniform"], mse
    assert mse["rbc"] < 0.1 * mse["uniform"], mse
    for kind in ("cvae", "rbc"):
        report = trained[kind][1]
        assert report["kind"] == kind and report["iterations"] == SMALL.iterations
        assert math.isfinite(report["final_loss"])
    assert trained["uniform"][1]["iterations"] == 0


def test_forward_conditioning_cannot_see_the_next_state(data: Transitions) -> None:
    # Same data, forward direction: the policy sees s (noise here), so it cannot beat the
    # marginal spread of the actions by much; the reverse-conditioned one can.
    config = SMALL.model_copy(update={"iterations": 500})
    forward, _ = train_rollout_policy("cvae", data, "forward", config, max_action=1.0, seed=0)
    reverse, _ = train_rollout_policy("cvae", data, "reverse", config, max_action=1.0, seed=0)
    test = deterministic_action_dataset(500, seed=1)
    fwd = action_mse(forward, test.observations, test.actions)
    rev = action_mse(reverse, test.next_observations, test.actions)
    assert rev < 0.5 * fwd, (rev, fwd)


def test_policies_satisfy_protocol_and_stay_in_box(trained: dict[str, tuple[torch.nn.Module, dict]]) -> None:
    states = 10 * torch.randn(256, 3)  # far outside the data, too
    for policy, _ in trained.values():
        assert isinstance(policy, RolloutPolicy)
        actions = policy.sample(states, torch.Generator().manual_seed(0))  # type: ignore[operator]
        assert actions.shape == (256, 2)
        assert torch.all(actions.abs() <= 1.0)


@pytest.mark.parametrize("kind", ["cvae", "rbc", "uniform"])
def test_save_load_samples_identically(kind: str, trained: dict[str, tuple[torch.nn.Module, dict]], tmp_path) -> None:
    policy = trained[kind][0]
    torch.save(policy.state_dict(), tmp_path / "policy.pt")
    fresh = build_rollout_policy(kind, 3, 2, 1.0, SMALL)  # type: ignore[arg-type]
    assert type(fresh) is type(policy)
    fresh.load_state_dict(torch.load(tmp_path / "policy.pt"))
    states = torch.randn(32, 3)
    a = policy.sample(states, torch.Generator().manual_seed(3))  # type: ignore[operator]
    b = fresh.sample(states, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["cvae", "rbc"])
def test_same_seed_same_policy(kind: str, data: Transitions) -> None:
    config = SMALL.model_copy(update={"iterations": 20})
    a, ra = train_rollout_policy(kind, data, "reverse", config, max_action=1.0, seed=4)  # type: ignore[arg-type]
    b, rb = train_rollout_policy(kind, data, "reverse", config, max_action=1.0, seed=4)  # type: ignore[arg-type]
    c, _ = train_rollout_policy(kind, data, "reverse", config, max_action=1.0, seed=5)  # type: ignore[arg-type]
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ra["final_loss"] == rb["final_loss"]
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_progress_callback_is_called(data: Transitions) -> None:
    calls: list[int] = []
    config = SMALL.model_copy(update={"iterations": 30})
    train_rollout_policy("rbc", data, "reverse", config, 1.0, seed=0, progress_callback=lambda i, m: calls.append(i))
    assert calls == [30]


def test_tanh_gaussian_log_prob_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    mean, log_std = torch.randn(5, 2), 0.3 * torch.randn(5, 2)
    u = torch.randn(5, 2)
    max_action = 2.0
    dist = D.TransformedDistribution(
        D.Normal(mean, log_std.exp()),
        [D.TanhTransform(), D.AffineTransform(0.0, max_action)],
    )
    expected = dist.log_prob(max_action * torch.tanh(u)).sum(-1)
    torch.testing.assert_close(tanh_gaussian_log_prob(u, mean, log_std, max_action), expected, atol=1e-4, rtol=1e-4)


def test_rbc_loss_by_hand_and_clips_boundary_actions() -> None:
    policy = GaussianRBCPolicy(2, 1, 1.0, RolloutPolicyConfig(rbc_hidden_dim=8, rbc_entropy_weight=0.0))
    states = torch.randn(4, 2)
    actions = torch.tensor([[1.0], [-1.0], [0.0], [0.5]])  # +-1 would be atanh(+-1) = inf without the clip
    loss, metrics = policy.loss(states, actions)
    assert torch.isfinite(loss)
    mean, log_std = policy(states)
    u = 0.5 * torch.log((1 + actions).clamp(min=1e-6) / (1 - actions).clamp(min=1e-6))  # finite at +-1
    assert torch.isfinite(u).all()
    expected_nll = -tanh_gaussian_log_prob(u, mean, log_std, 1.0).mean()
    torch.testing.assert_close(loss, expected_nll)
    assert metrics["nll"] == pytest.approx(float(expected_nll.detach()))
    # The log_std head (the second half of the actor's output) is clamped to [-20, 2].
    with torch.no_grad():
        policy.actor.net[-1].bias[1:].fill_(100.0)
    assert torch.all(policy(states)[1] == 2.0)


def test_rbc_entropy_term_is_the_closed_form_pre_tanh_entropy() -> None:
    """Loss = NLL - w * H[N(mean, sigma)] (the official GaussianReverseBC's bonus); no sampling noise."""
    policy = GaussianRBCPolicy(2, 1, 1.0, RolloutPolicyConfig(rbc_hidden_dim=8, rbc_entropy_weight=0.5))
    states, actions = torch.randn(6, 2), torch.rand(6, 1) * 1.8 - 0.9
    loss, metrics = policy.loss(states, actions, torch.Generator().manual_seed(0))
    again, _ = policy.loss(states, actions, torch.Generator().manual_seed(1))
    mean, log_std = policy(states)
    entropy = torch.distributions.Normal(mean, log_std.exp()).entropy().sum(-1).mean()
    nll = -tanh_gaussian_log_prob(torch.atanh(actions), mean, log_std, 1.0).mean()
    torch.testing.assert_close(loss, nll - 0.5 * entropy)
    torch.testing.assert_close(loss, again)
    assert metrics["entropy"] == pytest.approx(entropy.detach().item())


def test_cvae_policy_conditions_on_the_given_states() -> None:
    policy = CVAERolloutPolicy(3, 2, 1.0, SMALL)
    assert policy.cvae.latent_dim == 4  # 2 |A|
    out = policy.sample(torch.zeros(7, 3), torch.Generator().manual_seed(0))
    assert out.shape == (7, 2)


@settings(max_examples=50, deadline=None)
@given(
    bounds=st.lists(
        st.tuples(st.floats(-100, 100), st.floats(0, 50)), min_size=1, max_size=6
    ),
    batch=st.integers(0, 64),
    seed=st.integers(0, 2**31 - 1),
)
def test_uniform_stays_in_the_box(bounds: list[tuple[float, float]], batch: int, seed: int) -> None:
    low = np.array([lo for lo, _ in bounds], dtype=np.float32)
    high = low + np.array([width for _, width in bounds], dtype=np.float32)
    policy = UniformRolloutPolicy(low, high)
    actions = policy.sample(torch.zeros(batch, 5), torch.Generator().manual_seed(seed))
    assert actions.shape == (batch, len(bounds))
    assert torch.all(actions >= policy.low) and torch.all(actions <= policy.high)


def test_uniform_covers_the_box_and_rejects_bad_bounds() -> None:
    policy = UniformRolloutPolicy([-1.0, 0.0], [1.0, 4.0])
    actions = policy.sample(torch.zeros(20000, 1), torch.Generator().manual_seed(0))
    torch.testing.assert_close(actions.mean(0), torch.tensor([0.0, 2.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(actions.var(0), torch.tensor([4 / 12, 16 / 12]), atol=0.05, rtol=0)
    with pytest.raises(ValueError):
        UniformRolloutPolicy([1.0], [0.0])
    with pytest.raises(ValueError):
        build_rollout_policy("gan", 3, 2, 1.0, SMALL)  # type: ignore[arg-type]
