"""Rollout policies: where the actions of imagined transitions come from (spec §2).

All three answer `sample(states, generator) -> actions` (the `RolloutPolicy` protocol). `states`
are the states the policy is conditioned on: s' for ROMI's reverse rollouts (it models which action
led *into* s'), s for FOMI's forward ones. The caller picks the conditioning; the policy does not
know the direction.

- `CVAERolloutPolicy`: the paper's "diverse rollout policy", a conditional VAE G(a | state).
- `GaussianRBCPolicy`: a tanh-Gaussian trained by maximum likelihood plus an entropy bonus
  (ROMI-RBC, Table 4).
- `UniformRolloutPolicy`: uniform in the action box (maze2d and hopper in the paper profile).

Every policy is an `nn.Module` so it saves and loads through `state_dict`;
`build_rollout_policy` creates an untrained one of the right shape to load into.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from romi.config import RolloutPolicyConfig
from romi.data.transitions import Transitions
from romi.nets import CVAE, TanhGaussianActor, cvae_loss, rlkit_atanh, standardization, tanh_gaussian_log_prob
from romi.rng import generator, seeded_init
from romi.types import Direction, ProgressCallback, RolloutKind

LOG_EVERY = 1000
ArrayLike = Sequence[float] | np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------
# CVAE
# --------------------------------------------------------------------------------------------
class CVAERolloutPolicy(nn.Module):
    """G(a | state) as a conditional VAE; sampling decodes z ~ N(0, I) clipped to the latent clip.

    States are not standardised (spec §4: the CVAE sees raw states), as in the paper's code.
    """

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, config: RolloutPolicyConfig) -> None:
        super().__init__()
        self.cvae = CVAE.from_config(obs_dim, act_dim, max_action, config.cvae)
        self.kl_weight = config.cvae.kl_weight

    def loss(
        self, states: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Action MSE + kl_weight * KL (spec §2)."""
        return cvae_loss(self.cvae, states, actions, self.kl_weight, generator)

    @torch.no_grad()
    def sample(self, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.cvae.sample(states, generator)


# --------------------------------------------------------------------------------------------
# Gaussian RBC
# --------------------------------------------------------------------------------------------
class GaussianRBCPolicy(nn.Module):
    """pi(a | state): standardised input into CQL's tanh-Gaussian actor (2 x hidden ReLU), trained by
    maximum likelihood plus an entropy bonus (`loss`)."""

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, config: RolloutPolicyConfig) -> None:
        super().__init__()
        width = config.rbc_hidden_dim
        self.actor = TanhGaussianActor(obs_dim, act_dim, max_action, (width, width), config.rbc_log_std_min,
                                       config.rbc_log_std_max)
        self.max_action = float(max_action)
        self.entropy_weight = config.rbc_entropy_weight
        # Input standardisation, set from the training states (saved with the weights).
        self.register_buffer("state_mean", torch.zeros(obs_dim))
        self.register_buffer("state_std", torch.ones(obs_dim))

    def set_normalisation(self, states: torch.Tensor) -> None:
        mean, std = standardization(states)
        self.state_mean.copy_(mean)
        self.state_std.copy_(std)

    def standardise(self, states: torch.Tensor) -> torch.Tensor:
        return (states - self.state_mean) / self.state_std

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of the pre-tanh Gaussian."""
        return self.actor(self.standardise(states))

    def loss(
        self, states: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """NLL of the data actions (paper eq. 4) + entropy_weight * (-entropy of the pre-tanh Gaussian).

        Why this entropy: the spec asks for 0.5 * (-entropy) on top of eq. 4, and the only RBC in the
        official code (`utils/bc.py:GaussianReverseBC`, never instantiated there) adds the closed-form
        entropy of the Gaussian *before* the tanh, 0.5 |A| (1 + log 2 pi) + sum log sigma. It is exact
        and noise-free, and it only widens sigma against the NLL's pull; a sampled estimate of the
        squashed distribution's entropy (what romi did before) also penalises saturated actions, which
        neither the paper nor the official code does. `rbc_entropy_weight=0` gives eq. 4 alone. The NLL
        is the exact change of variables (`tanh_gaussian_log_prob`), not rlkit's epsilon form CQL trains
        with; data actions at the bound stay finite through the clamped atanh. `generator` is unused
        (the loss draws nothing); it is kept so every rollout policy trains through one signature.
        """
        del generator
        mean, log_std = self(states)
        u_data = rlkit_atanh(actions / self.max_action)
        nll = -tanh_gaussian_log_prob(u_data, mean, log_std, self.max_action).mean()
        entropy = (log_std + 0.5 * (1.0 + math.log(2.0 * math.pi))).sum(-1).mean()
        loss = nll - self.entropy_weight * entropy
        return loss, {"nll": float(nll.detach()), "entropy": float(entropy.detach())}

    @torch.no_grad()
    def sample(self, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.actor.sample_actions(self.standardise(states), generator)


# --------------------------------------------------------------------------------------------
# Uniform
# --------------------------------------------------------------------------------------------
class UniformRolloutPolicy(nn.Module):
    """Actions uniform in the box [low, high); ignores the states except for the batch size."""

    def __init__(self, low: ArrayLike, high: ArrayLike) -> None:
        super().__init__()
        low_t = torch.as_tensor(np.asarray(low, dtype=np.float32))
        high_t = torch.as_tensor(np.asarray(high, dtype=np.float32))
        if low_t.shape != high_t.shape or low_t.ndim != 1:
            raise ValueError(
                f"low and high must be 1-D of equal shape, got {tuple(low_t.shape)} and {tuple(high_t.shape)}"
            )
        if bool((high_t < low_t).any()):
            raise ValueError("every high must be >= low")
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)

    @torch.no_grad()
    def sample(self, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(
            states.shape[0], self.low.shape[0], device=self.low.device, dtype=self.low.dtype, generator=generator
        )
        # The clamp only guards against float rounding pushing low + (high - low) * u past high.
        return torch.clamp(self.low + (self.high - self.low) * u, self.low, self.high)


RolloutPolicyModule = CVAERolloutPolicy | GaussianRBCPolicy | UniformRolloutPolicy


# --------------------------------------------------------------------------------------------
# Construction and training
# --------------------------------------------------------------------------------------------
def build_rollout_policy(
    kind: RolloutKind, obs_dim: int, act_dim: int, max_action: float, config: RolloutPolicyConfig
) -> RolloutPolicyModule:
    """An untrained policy of `kind` (to train, or to `load_state_dict` into)."""
    if kind == "cvae":
        return CVAERolloutPolicy(obs_dim, act_dim, max_action, config)
    if kind == "rbc":
        return GaussianRBCPolicy(obs_dim, act_dim, max_action, config)
    if kind == "uniform":
        return UniformRolloutPolicy([-max_action] * act_dim, [max_action] * act_dim)
    raise ValueError(f"unknown rollout policy kind {kind!r}; choose cvae, rbc or uniform")


def rollout_policy_pairs(transitions: Transitions, direction: Direction) -> tuple[np.ndarray, np.ndarray]:
    """(conditioning states, actions): the state a model of `direction` is given -- reverse s',
    forward s -- with the action taken there."""
    given, _ = transitions.given_and_predicted(direction)
    return given.astype(np.float32), transitions.actions.astype(np.float32)


def train_rollout_policy(
    kind: RolloutKind,
    transitions: Transitions,
    direction: Direction,
    config: RolloutPolicyConfig,
    max_action: float,
    seed: int,
    progress_callback: ProgressCallback | None = None,
    device: str | torch.device = "cpu",
) -> tuple[RolloutPolicyModule, dict[str, Any]]:
    """Train a rollout policy of `kind` on the (condition, action) pairs of `direction`.

    CVAE and RBC: Adam, `config.iterations` steps of `config.batch_size` pairs drawn uniformly with
    replacement. Uniform trains nothing. Every random choice comes from `seed`'s streams
    (`romi.rng`: initial weights, then minibatches and noise). The report holds the loss
    averaged over the last `LOG_EVERY` iterations.
    """
    started = time.perf_counter()
    with seeded_init(seed, "rollout-policy-init"):
        policy = build_rollout_policy(kind, transitions.obs_dim, transitions.act_dim, max_action, config).to(device)
    if isinstance(policy, UniformRolloutPolicy):
        return policy, {"kind": kind, "iterations": 0, "train_seconds": time.perf_counter() - started}

    states_np, actions_np = rollout_policy_pairs(transitions, direction)
    n = len(states_np)
    if n == 0:
        raise ValueError("cannot train a rollout policy on zero transitions")
    states = torch.as_tensor(states_np, device=device)
    actions = torch.as_tensor(actions_np, device=device)

    gen = generator(seed, "rollout-policy", device)
    if isinstance(policy, GaussianRBCPolicy):
        policy.set_normalisation(states)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)

    window: dict[str, float] = {}
    window_steps = 0
    report: dict[str, Any] = {"kind": kind, "iterations": config.iterations}
    for it in range(1, config.iterations + 1):
        idx = torch.randint(n, (config.batch_size,), device=device, generator=gen)
        loss, metrics = policy.loss(states[idx], actions[idx], gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        metrics = {"loss": float(loss.detach()), **metrics}
        for key, value in metrics.items():
            window[key] = window.get(key, 0.0) + value
        window_steps += 1
        if it % LOG_EVERY == 0 or it == config.iterations:
            averaged = {key: value / window_steps for key, value in window.items()}
            report.update({f"final_{key}": value for key, value in averaged.items()})
            if progress_callback is not None:
                progress_callback(it, averaged)
            window, window_steps = {}, 0
    report["train_seconds"] = time.perf_counter() - started
    return policy, report
