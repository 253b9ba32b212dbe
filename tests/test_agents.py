from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from romi.agents.bcq import BCQ
from romi.agents.cql import CQL, conservative_penalty
from romi.agents.nets import EnsembleCritic
from romi.config import BCQConfig, CQLConfig, CVAEConfig
from romi.types import Batch

SMALL_BCQ = BCQConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), vae=CVAEConfig(hidden_dim=32), batch_size=16)
SMALL_CQL = CQLConfig(hidden=(32, 32), bc_steps=3, batch_size=16)


def _batch(n: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 4, generator=g), torch.rand(n, 2, generator=g) * 2 - 1, torch.randn(n, generator=g),
                 torch.randn(n, 4, generator=g), (torch.rand(n, generator=g) > 0.8).float())


def test_ensemble_critic_equals_separate_networks() -> None:
    critic = EnsembleCritic(2, 4, 2, (8, 8))
    s, a = torch.randn(5, 4), torch.randn(5, 2)
    q = critic(s, a)
    for e in range(2):
        x = torch.cat([s, a], 1)
        for i, layer in enumerate(critic.layers):
            x = x @ layer.weight[e] + layer.bias[e]
            x = torch.relu(x) if i < len(critic.layers) - 1 else x
        assert torch.allclose(q[e], x.squeeze(-1), atol=1e-6)
    assert torch.equal(critic(s, a, members=1)[0], q[0])


def test_bcq_target_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = BCQ(4, 2, 1.0, SMALL_BCQ.model_copy(update={"target_samples": 3, "lmbda": 0.75}), seed=0)
    # Fixed target critics: Q1 = sample index j, Q2 = 2 * j (per repeated row), so per sample the
    # lambda-value is 0.75 * j + 0.25 * 2j = 1.25 j and the max over j in {0, 1, 2} is 2.5.
    def fake_critic(states: torch.Tensor, actions: torch.Tensor, members: int | None = None) -> torch.Tensor:
        j = torch.arange(states.shape[0]).float().remainder(3)
        return torch.stack([j, 2 * j])

    monkeypatch.setattr(agent, "critic_target", fake_critic)
    rewards, dones = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])
    target = agent.critic_target_values(rewards, torch.randn(2, 4), dones)
    assert torch.allclose(target, torch.tensor([1.0 + 0.99 * 2.5, 0.5]))


def test_cql_penalty_matches_a_plain_computation() -> None:
    g = torch.Generator().manual_seed(1)
    q_data, q_r, q_c, q_n = torch.randn(2, 3, generator=g), *(torch.randn(2, 3, 4, generator=g) for _ in range(3))
    lp_c, lp_n = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    density = -2 * math.log(2.0)
    got = conservative_penalty(q_data, q_r, q_c, q_n, density, lp_c, lp_n)
    for e in range(2):
        total = 0.0
        for b in range(3):
            values = [float(q_r[e, b, k]) - density for k in range(4)]
            values += [float(q_n[e, b, k] - lp_n[b, k]) for k in range(4)]
            values += [float(q_c[e, b, k] - lp_c[b, k]) for k in range(4)]
            total += math.log(sum(math.exp(v) for v in values)) - float(q_data[e, b])
        assert got[e].item() == pytest.approx(total / 3, rel=1e-5)


def test_cql_switches_from_behaviour_cloning_to_q_learning(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = CQL(4, 2, 1.0, SMALL_CQL, seed=0)
    calls = []
    original = agent.policy.log_prob
    monkeypatch.setattr(agent.policy, "log_prob", lambda s, a: calls.append(agent.step) or original(s, a))
    for _ in range(5):
        agent.update(_batch())
    assert calls == [0, 1, 2], "behaviour cloning for the first bc_steps only"


@pytest.mark.parametrize(("cls", "config"), [(BCQ, SMALL_BCQ), (CQL, SMALL_CQL)])
def test_checkpoint_restore_next_update_is_bit_identical(cls, config) -> None:
    agent = cls(4, 2, 1.0, config, seed=3)
    for i in range(5):
        agent.update(_batch(seed=i))
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    expected = agent.update(_batch(seed=99))
    restored = cls(4, 2, 1.0, config, seed=12345)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert restored.update(_batch(seed=99)) == expected
    for name in ("critic",):
        for p, q in zip(getattr(agent, name).parameters(), getattr(restored, name).parameters(), strict=True):
            assert torch.equal(p, q)


@pytest.mark.parametrize(("cls", "config"), [(BCQ, SMALL_BCQ), (CQL, SMALL_CQL)])
def test_same_seed_same_metrics_and_bounded_actions(cls, config) -> None:
    runs = []
    for _ in range(2):
        agent = cls(4, 2, 1.0, config, seed=7)
        runs.append([agent.update(_batch(seed=i)) for i in range(3)])
    assert runs[0] == runs[1]
    single = agent.act(np.zeros(4, np.float32))
    many = agent.act(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))
    assert single.shape == (2,) and many.shape == (6, 2) and np.all(np.abs(many) <= 1.0)


@pytest.mark.parametrize(("cls", "config"), [(BCQ, SMALL_BCQ), (CQL, SMALL_CQL.model_copy(update={"bc_steps": 0}))])
def test_critic_learns_a_one_step_bandit(cls, config) -> None:
    """Terminal one-step data with reward = first action coordinate: Q must rank actions by reward."""
    agent = cls(4, 2, 1.0, config.model_copy(update={"gamma": 0.0}), seed=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        obs, actions = torch.randn(64, 4, generator=g), torch.rand(64, 2, generator=g) * 2 - 1
        agent.update(Batch(obs, actions, actions[:, 0].clone(), obs, torch.ones(64)))
    obs = torch.randn(200, 4, generator=g)
    high, low = torch.zeros(200, 2), torch.zeros(200, 2)
    high[:, 0], low[:, 0] = 0.8, -0.8
    with torch.no_grad():
        assert (agent.critic(obs, high)[0] > agent.critic(obs, low)[0]).float().mean() > 0.9
