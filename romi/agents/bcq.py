"""BCQ, Batch-Constrained deep Q-learning (Fujimoto, Meger & Precup, 2019), as spec §4 sets it.

Three parts train on every (mixed) batch, in this order:
  1. a conditional VAE G(a | s) of the behaviour policy (the same CVAE class ROMI's rollout policy uses);
  2. twin critics, whose target takes, for each s', 10 VAE actions perturbed by the target actor,
     scores them lambda * min(Q1, Q2) + (1 - lambda) * max(Q1, Q2) and keeps the best;
  3. a perturbation actor xi(s, a) in [-phi, phi] * max_action that nudges VAE actions uphill on Q1.
Then soft target updates of the critics and the actor. Acting: 100 VAE candidates, perturbed, the one
with the highest Q1.

Fidelity (issue 31, `analysis/results/baselines/`): this is the authors' BCQ (`sfujim/BCQ`,
`continuous_BCQ/BCQ.py`) line by line, and run on the same transitions, seed 0, one thread, the authors'
own code gives the same curves (critic loss 0.10 / 0.34 / 1.39 at 10k / 15k / 30k steps against romi's
0.10 / 0.31 / 0.87; both critics run past the value bound on the Minari-recipe umaze data). d3rlpy 2.8.1's
BCQ, whose critic does not run away there, differs from both in one place: its VAE decoder's output is
linear (its `VAEDecoder` applies tanh only when called with `with_squash=False`, and its BCQ never does).
romi keeps the authors' tanh; `bcq.vae.output=linear` reproduces d3rlpy's, labelled as off the paper's.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from romi.config import BCQConfig, Precision
from romi.nets import (
    CVAE,
    EnsembleCritic,
    as_batch_tensor,
    compute_precision,
    cvae_loss,
    mlp,
    soft_update,
    target_copy,
)
from romi.rng import generator, seeded_init
from romi.types import Batch


class PerturbationActor(nn.Module):
    """xi(s, a) = a + phi * max_action * tanh(net([s, a])), clipped to the action box."""

    def __init__(self, state_dim: int, action_dim: int, max_action: float, hidden: tuple[int, ...],
                 phi: float) -> None:
        super().__init__()
        self.net = mlp(state_dim + action_dim, hidden, action_dim)
        self.max_action, self.phi = float(max_action), phi

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        perturbation = self.phi * self.max_action * torch.tanh(self.net(torch.cat([states, actions], dim=-1)))
        return (actions + perturbation).clamp(-self.max_action, self.max_action)


def bcq_target_values(q_next: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor, gamma: float,
                      lmbda: float) -> torch.Tensor:
    """y = r + gamma (1 - d) max_j [lambda min_i Q_i(s', a_j) + (1 - lambda) max_i Q_i(s', a_j)].

    q_next: (2, B, n) target-critic values of the n sampled actions a_j per next state; returns (B,).
    The soft clipped double-Q (lambda = 0.75) penalises disagreement between the critics less than
    a hard min would; the max over samples is the batch-constrained greedy step.
    """
    soft_clipped = lmbda * q_next.min(dim=0).values + (1.0 - lmbda) * q_next.max(dim=0).values
    return rewards + gamma * (1.0 - dones) * soft_clipped.max(dim=1).values


class BCQ:
    def __init__(self, obs_dim: int, act_dim: int, max_action: float, config: BCQConfig, seed: int = 0,
                 device: str | torch.device = "cpu", precision: Precision = "fp32") -> None:
        self.config, self.device = config, torch.device(device)
        # Network forward passes run in `with self.autocast():` (fp32: a no-op; bf16: hidden matmuls in
        # bf16, outputs fp32, so losses are fp32); backward passes and optimizer steps run outside it.
        self.autocast = functools.partial(compute_precision, precision, self.device)
        self.max_action = float(max_action)
        with seeded_init(seed, "learner-init"):
            self.actor = PerturbationActor(obs_dim, act_dim, max_action, config.actor_hidden, config.phi)
            self.critic = EnsembleCritic(2, obs_dim, act_dim, config.critic_hidden)
            self.vae = CVAE.from_config(obs_dim, act_dim, max_action, config.vae)
        self.actor.to(self.device)
        self.critic.to(self.device)
        self.vae.to(self.device)
        self.actor_target, self.critic_target = target_copy(self.actor), target_copy(self.critic)
        # fused Adam: one kernel for all parameters of an optimizer instead of a loop of small ops.
        adam = {"lr": config.learning_rate, "fused": True}
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), **adam)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), **adam)
        self.vae_optimizer = torch.optim.Adam(self.vae.parameters(), **adam)
        # Training noise and acting noise come from separate streams: evaluating never changes training.
        self.generator = generator(seed, "learner", self.device)
        self.act_generator = generator(seed, "acting", self.device)
        self.step = 0

    # --- learning -----------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step of the VAE, the critics and the actor on `batch`."""
        cfg, n = self.config, self.config.target_samples
        obs, actions, rewards, next_obs, dones = batch
        batch_size = obs.shape[0]

        # 1. The behaviour VAE: reconstruction + 0.5 KL.
        with self.autocast():
            vae_loss, vae_metrics = cvae_loss(self.vae, obs, actions, cfg.vae.kl_weight, self.generator)
        self.vae_optimizer.zero_grad(set_to_none=True)
        vae_loss.backward()
        self.vae_optimizer.step()

        # Every VAE sample this step needs (n per s' for the target, 1 per s for the actor) comes from
        # the updated VAE, which does not change again this step: decode them all in one pass.
        with torch.no_grad(), self.autocast():
            next_repeated = next_obs.repeat_interleave(n, dim=0)  # row b * n + j = (s'_b, sample j)
            decoded = self.vae.decode(torch.cat([next_repeated, obs]), generator=self.generator)
            next_candidates, actor_candidates = decoded.split([batch_size * n, batch_size])

        # 2. The twin critics: MSE to the soft clipped double-Q target, summed over the two critics.
        with torch.no_grad(), self.autocast():
            next_actions = self.actor_target(next_repeated, next_candidates)
            q_next = self.critic_target(next_repeated, next_actions).view(2, batch_size, n)
            target = bcq_target_values(q_next, rewards, dones, cfg.gamma, cfg.lmbda)
        with self.autocast():
            q = self.critic(obs, actions)  # (2, B)
            critic_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # 3. The perturbation actor maximises Q1 of its perturbed VAE actions. The critic is frozen for
        # this pass so autograd computes only the input gradient it needs, not weight gradients.
        self.critic.requires_grad_(False)
        with self.autocast():
            actor_loss = -self.critic(obs, self.actor(obs, actor_candidates), members=1).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        self.critic.requires_grad_(True)

        # 4. Polyak averaging of both target networks.
        soft_update(self.critic_target, self.critic, cfg.tau)
        soft_update(self.actor_target, self.actor, cfg.tau)
        self.step += 1
        return {
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "vae_loss": vae_loss.item(),
            "q_mean": q.detach().mean().item(),
            "q_max": q.detach().max().item(),
            "target_mean": target.mean().item(),
            "target_max": target.max().item(),
            **{f"vae_{k}": v for k, v in vae_metrics.items()},
        }

    # --- acting -------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, observations: np.ndarray) -> np.ndarray:
        """argmax_j Q1(s, xi(s, a_j)) over `eval_candidates` VAE actions a_j ~ G(. | s), per state.
        Accepts one observation (obs_dim,) or a batch (N, obs_dim)."""
        states, single = as_batch_tensor(observations, self.device)
        n = self.config.eval_candidates
        repeated = states.repeat_interleave(n, dim=0)
        with self.autocast():
            candidates = self.actor(repeated, self.vae.decode(repeated, generator=self.act_generator))
            q1 = self.critic(repeated, candidates, members=1)[0].view(-1, n)
        best = candidates.view(-1, n, candidates.shape[-1])[torch.arange(states.shape[0]), q1.argmax(dim=1)]
        out = best.cpu().numpy()
        return out[0] if single else out

    # --- checkpointing ------------------------------------------------------------------------
    _MODULES = ("actor", "actor_target", "critic", "critic_target", "vae",
                "actor_optimizer", "critic_optimizer", "vae_optimizer")

    def state_dict(self) -> dict[str, Any]:
        """Everything the next update depends on: networks, targets, optimizers, RNG streams, step."""
        return {
            **{name: getattr(self, name).state_dict() for name in self._MODULES},
            "generator": self.generator.get_state(), "act_generator": self.act_generator.get_state(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._MODULES:
            getattr(self, name).load_state_dict(state[name])
        self.generator.set_state(state["generator"])
        self.act_generator.set_state(state["act_generator"])
        self.step = int(state["step"])
