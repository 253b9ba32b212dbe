"""BCQ and CQL (spec §4): targets and losses checked by hand on tiny inputs, acting, determinism,
checkpoint/restore, and a small learning check. Tiny networks keep the whole file to seconds."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from romi.agents.bcq import BCQ, bcq_target_values
from romi.agents.cql import CQL, conservative_penalty
from romi.config import BCQConfig, CQLConfig, CVAEConfig
from romi.nets import EnsembleCritic, TanhGaussianActor
from romi.types import Batch

SMALL_BCQ = BCQConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), vae=CVAEConfig(hidden_dim=32), batch_size=16)
SMALL_CQL = CQLConfig(hidden=(32, 32), bc_steps=3, batch_size=16)
OBS, ACT = 4, 2


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny networks gain nothing from intra-op threads, and on a loaded 2-core machine OpenMP barriers
    between two threads can make each small op ~100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _batch(n: int = 16, seed: int = 0, max_action: float = 1.0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, OBS, generator=g), (torch.rand(n, ACT, generator=g) * 2 - 1) * max_action,
                 torch.randn(n, generator=g), torch.randn(n, OBS, generator=g),
                 (torch.rand(n, generator=g) > 0.8).float())


def _all_tensors(agent: BCQ | CQL) -> dict[str, torch.Tensor]:
    """Every tensor of the agent's state (parameters, targets, optimizer moments, log_alpha)."""
    out: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, torch.Tensor):
            out[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)

    walk("", agent.state_dict())
    return out


# --- shared nets ---------------------------------------------------------------------------------
def test_ensemble_critic_equals_separate_networks() -> None:
    critic = EnsembleCritic(2, OBS, ACT, (8, 8))
    s, a = torch.randn(5, OBS), torch.randn(5, ACT)
    q = critic(s, a)
    assert q.shape == (2, 5)
    for e in range(2):
        x = torch.cat([s, a], 1)
        for i, layer in enumerate(critic.layers):
            x = x @ layer.weight[e] + layer.bias[e]
            x = torch.relu(x) if i < len(critic.layers) - 1 else x
        assert torch.allclose(q[e], x.squeeze(-1), atol=1e-6)
    assert torch.equal(critic(s, a, members=1)[0], q[0])
    # the two critics are initialised differently
    assert not torch.allclose(critic.layers[0].weight[0], critic.layers[0].weight[1])


def test_tanh_gaussian_log_prob_matches_torch_distributions() -> None:
    # Fixed inputs: away from saturation rlkit's epsilon is below the tolerance; an unseeded draw (it
    # depended on the tests run before) could land a sample near +-max_action, where it is not.
    torch.manual_seed(0)
    actor = TanhGaussianActor(OBS, ACT, 2.0, (16, 16), -5.0, 2.0)
    mean, log_std = actor(torch.randn(7, OBS))
    actions, logp = actor.sample(mean, log_std, torch.Generator().manual_seed(0))
    base = torch.distributions.Normal(mean, log_std.exp())
    squash = [torch.distributions.transforms.TanhTransform(), torch.distributions.transforms.AffineTransform(0, 2.0)]
    reference = torch.distributions.TransformedDistribution(base, squash).log_prob(actions).sum(-1)
    assert torch.allclose(logp, reference, atol=1e-4)
    assert torch.allclose(actor.log_prob(mean, log_std, actions), logp, atol=1e-4)
    assert actions.abs().max() <= 2.0


def test_tanh_gaussian_log_prob_follows_rlkit_where_actions_saturate() -> None:
    """rlkit's log(1 - a^2 + 1e-6) caps the Jacobian term; the exact formula would grow without bound.
    Dataset actions are scored with the mean clamped to [-9, 9] and a clamped atanh (finite at +-1)."""
    actor = TanhGaussianActor(OBS, 1, 1.0, (8,), -5.0, 2.0)
    mean, log_std = torch.tensor([[10.0]]), torch.tensor([[0.0]])
    generator = torch.Generator().manual_seed(0)
    u = mean + torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    _, logp = actor.sample(mean, log_std, generator)
    gaussian = torch.distributions.Normal(mean, 1.0).log_prob(u).sum()
    expected = gaussian - torch.log(1 - torch.tanh(u) ** 2 + 1e-6).sum()  # float32, as rlkit computes it
    assert logp.item() == pytest.approx(expected.item(), rel=1e-5)
    exact = gaussian - (2 * (math.log(2) - u - torch.nn.functional.softplus(-2 * u))).sum()
    assert logp.item() < exact.item() - 1.0, "the epsilon must cap log pi of a saturated action"
    # A dataset action at the bound: finite, and scored as if the mean were 9, not 20.
    at_bound = actor.log_prob(torch.tensor([[20.0]]), log_std, torch.tensor([[1.0]]))
    assert torch.isfinite(at_bound)
    clamped = actor.log_prob(torch.tensor([[9.0]]), log_std, torch.tensor([[1.0]]))
    assert at_bound.item() == pytest.approx(clamped.item())


# --- BCQ -----------------------------------------------------------------------------------------
def test_bcq_target_values_by_hand() -> None:
    # q_next[critic, state, sample]
    q_next = torch.tensor([[[1.0, 4.0, 0.0], [2.0, 2.0, 2.0]],
                           [[3.0, 0.0, 0.0], [2.0, 6.0, -2.0]]])
    # lambda 0.75: state 0 -> samples (0.75*1 + 0.25*3, 0.75*0 + 0.25*4, 0) = (1.5, 1.0, 0) -> 1.5
    #              state 1 -> (2, 0.75*2 + 0.25*6, 0.75*-2 + 0.25*2) = (2, 3, -1) -> 3
    target = bcq_target_values(q_next, torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0]), 0.9, 0.75)
    assert torch.allclose(target, torch.tensor([1.0 + 0.9 * 1.5, 0.5]))


def test_bcq_update_feeds_each_next_state_its_own_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring check: with fixed target critics Q1 = j + 10 b and Q2 = 2 j + 10 b for sample j of next
    state b, the lambda-value is 1.25 j + 10 b and the max over j in {0, 1, 2} is 2.5 + 10 b."""
    n, batch = 3, _batch(6)
    agent = BCQ(OBS, ACT, 1.0, SMALL_BCQ.model_copy(update={"target_samples": n, "lmbda": 0.75}), seed=0)
    seen = {}

    def fixed_critic(states: torch.Tensor, actions: torch.Tensor, members: int | None = None) -> torch.Tensor:
        seen["states"] = states
        row = torch.arange(states.shape[0])
        b, j = (row // n).float(), (row % n).float()
        return torch.stack([j + 10 * b, 2 * j + 10 * b])

    monkeypatch.setattr(agent.critic_target, "forward", fixed_critic)
    metrics = agent.update(batch)
    assert torch.equal(seen["states"], batch.next_observations.repeat_interleave(n, dim=0))
    expected = batch.rewards + 0.99 * (1 - batch.dones) * (2.5 + 10 * torch.arange(6.0))
    assert metrics["target_mean"] == pytest.approx(expected.mean().item(), rel=1e-6)


def test_bcq_act_picks_the_best_candidate_by_q1(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SMALL_BCQ.model_copy(update={"eval_candidates": 7})
    agent = BCQ(OBS, ACT, 1.0, config, seed=1)
    goal = torch.tensor([0.3, -0.2])
    monkeypatch.setattr(agent.critic, "forward", lambda s, a, members=None: -((a - goal) ** 2).sum(-1)[None])
    states = np.random.default_rng(0).normal(size=(3, OBS)).astype(np.float32)
    state = agent.act_generator.get_state()
    chosen = agent.act(states)
    agent.act_generator.set_state(state)  # replay the same candidates
    with torch.no_grad():
        repeated = torch.as_tensor(states).repeat_interleave(7, dim=0)
        candidates = agent.actor(repeated, agent.vae.decode(repeated, generator=agent.act_generator)).view(3, 7, ACT)
    for b in range(3):
        distances = [float(((c - goal) ** 2).sum()) for c in candidates[b]]
        assert np.allclose(chosen[b], candidates[b][int(np.argmin(distances))].numpy())


def test_bcq_acting_does_not_shift_the_training_noise() -> None:
    runs = []
    for act_between in (False, True):
        agent = BCQ(OBS, ACT, 1.0, SMALL_BCQ, seed=5)
        agent.update(_batch(seed=0))
        if act_between:
            agent.act(np.zeros((3, OBS), np.float32))
        runs.append(agent.update(_batch(seed=1)))
    assert runs[0] == runs[1]


# --- CQL -----------------------------------------------------------------------------------------
def test_cql_penalty_matches_a_plain_computation() -> None:
    g = torch.Generator().manual_seed(1)
    q_data, q_sampled = torch.randn(2, 3, generator=g), torch.randn(2, 3, 12, generator=g)
    log_density = torch.randn(3, 12, generator=g)
    got = conservative_penalty(q_data, q_sampled, log_density)
    for e in range(2):
        total = 0.0
        for b in range(3):
            soft_max = math.log(sum(math.exp(float(q_sampled[e, b, k] - log_density[b, k])) for k in range(12)))
            total += soft_max - float(q_data[e, b])
        assert got[e].item() == pytest.approx(total / 3, rel=1e-5)


def test_cql_critic_loss_matches_a_reference_computation() -> None:
    """The whole critic loss of one update, recomputed the plain way (per critic, per state, loops for
    the logsumexp) with the same random draws, replayed in the order the update documents: pi(.|s) of
    the pre-update policy, then from the *updated* policy (as ROMI's CQL code does) the pi(.|s') target
    action, uniform, 10 x pi(.|s), 10 x pi(.|s'); critics as they were before their step."""
    max_action, n = 2.0, 4
    config = SMALL_CQL.model_copy(update={"num_sampled_actions": n, "bc_steps": 0})
    agent = CQL(OBS, ACT, max_action, config, seed=2)
    batch = _batch(5, seed=3, max_action=max_action)
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)

    obs, actions, rewards, next_obs, dones = batch
    g = before.generator
    updated = agent.policy
    assert not torch.equal(updated.net[0].weight, before.policy.net[0].weight), "the policy step happened first"

    def rlkit_log_prob(u: torch.Tensor, m: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
        gaussian = torch.distributions.Normal(m, ls.exp()).log_prob(u)
        return (gaussian - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)).sum(-1) - ACT * math.log(max_action)

    with torch.no_grad():
        mean, _ = before.policy(obs)
        torch.randn(mean.shape, generator=g)  # the reparameterised action of the policy loss
        next_mean, next_log_std = updated(next_obs)
        current_mean, current_log_std = updated(obs)
        u = next_mean + next_log_std.exp() * torch.randn(next_mean.shape, generator=g)
        next_actions = max_action * torch.tanh(u)
        uniform = (torch.rand(5, n, ACT, generator=g) * 2 - 1) * max_action
        policy_draws = []
        for m, ls in ((current_mean, current_log_std), (next_mean, next_log_std)):
            u = m[:, None] + ls.exp()[:, None] * torch.randn(5, n, ACT, generator=g)
            a = max_action * torch.tanh(u)
            policy_draws.append((a, rlkit_log_prob(u, m[:, None], ls[:, None])))
        target_critic = before.critic_target
        q_target = torch.minimum(*target_critic(next_obs, next_actions))
        y = rewards + 0.99 * (1 - dones) * q_target
        loss = 0.0
        for e in range(2):
            def q(s: torch.Tensor, a: torch.Tensor, e: int = e) -> float:
                return float(before.critic(s[None], a[None])[e, 0])

            td = sum((q(obs[b], actions[b]) - float(y[b])) ** 2 for b in range(5)) / 5
            penalty = 0.0
            for b in range(5):
                terms = [q(obs[b], uniform[b, k]) + ACT * math.log(2 * max_action) for k in range(n)]
                for a, logp in policy_draws:
                    terms += [q(obs[b], a[b, k]) - float(logp[b, k]) for k in range(n)]
                penalty += math.log(sum(math.exp(t) for t in terms)) - q(obs[b], actions[b])
            loss += td + 5.0 * penalty / 5
    assert metrics["critic_loss"] == pytest.approx(loss, rel=1e-4)


def test_cql_switches_from_behaviour_cloning_to_q_learning(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = CQL(OBS, ACT, 1.0, SMALL_CQL, seed=0)
    bc_steps = []
    original = agent.policy.log_prob
    monkeypatch.setattr(agent.policy, "log_prob",
                        lambda *args: bc_steps.append(agent.step) or original(*args))
    for _ in range(5):
        agent.update(_batch())
    assert bc_steps == [0, 1, 2], "behaviour cloning for the first bc_steps only"


def test_cql_policy_ignores_the_critic_during_behaviour_cloning() -> None:
    """In the BC phase the policy step must not depend on Q; afterwards it must."""
    for bc_steps, should_differ in ((10, False), (0, True)):
        policies = []
        for scale in (1.0, 3.0):
            agent = CQL(OBS, ACT, 1.0, SMALL_CQL.model_copy(update={"bc_steps": bc_steps}), seed=4)
            with torch.no_grad():
                agent.critic.layers[-1].weight.mul_(scale)
            agent.update(_batch())
            policies.append(torch.cat([p.flatten() for p in agent.policy.parameters()]))
        assert (not torch.equal(*policies)) == should_differ


# --- both learners -------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "config"), [(BCQ, SMALL_BCQ), (CQL, SMALL_CQL)])
def test_checkpoint_restore_next_update_is_bit_identical(cls, config) -> None:
    agent = cls(OBS, ACT, 1.0, config, seed=3)
    for i in range(4):  # CQL crosses from BC to Q-learning after the checkpoint
        agent.update(_batch(seed=i))
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    expected = [agent.update(_batch(seed=99)), agent.update(_batch(seed=100))]
    restored = cls(OBS, ACT, 1.0, config, seed=12345)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert [restored.update(_batch(seed=99)), restored.update(_batch(seed=100))] == expected
    ours, theirs = _all_tensors(agent), _all_tensors(restored)
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key
    assert restored.step == agent.step == 6


@pytest.mark.parametrize(("cls", "config"), [(BCQ, SMALL_BCQ), (CQL, SMALL_CQL)])
def test_same_seed_same_metrics_and_actions_in_bounds(cls, config) -> None:
    runs, actions = [], []
    for seed in (7, 7, 8):
        agent = cls(OBS, ACT, 2.0, config, seed=seed)
        runs.append([agent.update(_batch(seed=i, max_action=2.0)) for i in range(3)])
        actions.append(agent.act(np.ones((2, OBS), np.float32)))
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert np.array_equal(actions[0], actions[1])
    assert set(runs[0][0]) >= {"critic_loss", "q_mean"}
    assert all(math.isfinite(v) for run in runs for metrics in run for v in metrics.values())
    single = agent.act(np.zeros(OBS, np.float32))
    many = agent.act(np.random.default_rng(0).normal(size=(6, OBS)).astype(np.float32) * 10)
    assert single.shape == (ACT,) and many.shape == (6, ACT) and many.dtype == np.float32
    assert np.all(np.abs(many) <= 2.0) and np.all(np.abs(single) <= 2.0)


@pytest.mark.parametrize(
    ("cls", "config"), [(BCQ, SMALL_BCQ), (CQL, SMALL_CQL.model_copy(update={"bc_steps": 0, "policy_lr": 3e-3}))]
)
def test_critic_learns_a_one_step_bandit(cls, config) -> None:
    """Terminal one-step data with reward = first action coordinate: Q must rank actions by reward."""
    agent = cls(OBS, ACT, 1.0, config.model_copy(update={"gamma": 0.0}), seed=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        obs, actions = torch.randn(64, OBS, generator=g), torch.rand(64, ACT, generator=g) * 2 - 1
        agent.update(Batch(obs, actions, actions[:, 0].clone(), obs, torch.ones(64)))
    obs = torch.randn(200, OBS, generator=g)
    high, low = torch.zeros(200, ACT), torch.zeros(200, ACT)
    high[:, 0], low[:, 0] = 0.8, -0.8
    with torch.no_grad():
        assert (agent.critic(obs, high)[0] > agent.critic(obs, low)[0]).float().mean() > 0.9
    if cls is BCQ:  # the VAE has learnt the (uniform) behaviour policy's spread
        assert agent.update(Batch(obs, high, high[:, 0], obs, torch.ones(200)))["vae_recon_loss"] < 0.4
    else:  # the policy leans towards high first coordinates (alpha keeps it from going all the way)
        assert (agent.act(obs.numpy())[:, 0] > 0).mean() > 0.9


def test_soft_update_is_the_per_parameter_lerp() -> None:
    """`soft_update` uses torch's private foreach lerp: pinned here against the formula."""
    from romi.nets import soft_update

    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = [(1 - 0.1) * t.detach().clone() + 0.1 * s.detach() for t, s in
                zip(target.parameters(), source.parameters(), strict=True)]
    soft_update(target, source, 0.1)
    for got, want in zip(target.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want)


# --- precision -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "config"), [(BCQ, SMALL_BCQ), (CQL, SMALL_CQL.model_copy(update={"bc_steps": 0}))]
)
def test_bf16_updates_move_the_critics_q_estimates_like_fp32(cls, config) -> None:
    """From the same initial state and batches, 5 bf16 updates change Q on held-out pairs by nearly what
    5 fp32 updates do (measured: 0.3 % (BCQ) and 0.7 % (CQL) relative error), but not bit for bit, so
    the bf16 path did run."""
    probe = _batch(n=256, seed=50)
    moved = {}
    for precision in ("fp32", "bf16"):
        agent = cls(OBS, ACT, 1.0, config, seed=0, precision=precision)
        with torch.no_grad():
            before = agent.critic(probe.observations, probe.actions)
        for i in range(5):
            metrics = agent.update(_batch(seed=i))
        assert all(math.isfinite(v) for v in metrics.values())
        with torch.no_grad():
            moved[precision] = agent.critic(probe.observations, probe.actions) - before
    fp32, bf16 = moved["fp32"], moved["bf16"]
    assert not torch.equal(fp32, bf16)
    assert (bf16 - fp32).norm() / fp32.norm() < 0.05


def test_bf16_multiplies_hidden_layers_in_bf16_and_keeps_outputs_fp32() -> None:
    agent = BCQ(OBS, ACT, 1.0, SMALL_BCQ, precision="bf16")
    dtypes: dict[str, torch.dtype] = {}

    def record(name: str):  # a forward hook that returns None keeps the module's output
        return lambda module, args, out: dtypes.update({name: out.dtype}) and None

    for name, module in agent.actor.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(record(name))
    batch = _batch()
    with agent.autocast():
        q = agent.critic(batch.observations, batch.actions)
        actions = agent.actor(batch.observations, batch.actions)
        reconstruction, mean, std = agent.vae(batch.observations, batch.actions)
    assert dtypes == {"net.0": torch.bfloat16, "net.2": torch.bfloat16, "net.4": torch.float32}
    assert {t.dtype for t in (q, actions, reconstruction, mean, std)} == {torch.float32}
    metrics = agent.update(batch)  # gradients and optimizer state are fp32 (master weights)
    assert math.isfinite(metrics["critic_loss"])
    assert {p.grad.dtype for p in agent.critic.parameters()} == {torch.float32}
    assert {p.dtype for p in agent.critic.parameters()} == {torch.float32}


def test_compute_precision_never_multiplies_with_a_stale_weight_copy() -> None:
    """An optimizer step inside one bf16 region must be seen by the next pass of that region."""
    from romi.nets import compute_precision, mlp

    net, x = mlp(OBS, (16,), 1), torch.randn(8, OBS)
    with compute_precision("bf16", torch.device("cpu")):
        before = net(x)
        with torch.no_grad():
            net[0].weight.mul_(2.0)
        after = net(x)
    assert not torch.allclose(before, after)


def test_fp32_precision_changes_nothing() -> None:
    """The default path is the paper's: no autocast region, bit-identical to a learner built without
    the argument."""
    runs = [BCQ(OBS, ACT, 1.0, SMALL_BCQ, seed=1, **kwargs) for kwargs in ({}, {"precision": "fp32"})]
    assert runs[0].update(_batch()) == runs[1].update(_batch())
    with runs[0].autocast():
        assert not torch.is_autocast_enabled("cpu")
