"""BCQ, Batch-Constrained deep Q-learning (Fujimoto, Meger & Precup, 2019), as spec §4 sets it.

Three parts train on every (mixed) batch:
  1. a conditional VAE G(a | s) of the behaviour policy (the same CVAE class ROMI's rollout policy uses);
  2. twin critics, whose target takes, for each s', 10 VAE actions perturbed by the target actor,
     scores them lambda * min(Q1, Q2) + (1 - lambda) * max(Q1, Q2) and keeps the best;
  3. a perturbation actor xi(s, a) in [-phi, phi] * max_action that nudges VAE actions uphill on Q1.
Acting: 100 VAE candidates, perturbed, the one with the highest Q1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from romi.agents.nets import EnsembleCritic, as_batch_tensor, mlp, seeded_init, soft_update, target_copy
from romi.config import BCQConfig
from romi.models.cvae import CVAE, cvae_loss
from romi.types import Batch


class PerturbationActor(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, max_action: float, hidden: tuple[int, ...], phi: float) -> None:
        super().__init__()
        self.net = mlp(state_dim + action_dim, hidden, action_dim)
        self.max_action, self.phi = float(max_action), phi

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        perturbation = self.phi * self.max_action * torch.tanh(self.net(torch.cat([states, actions], dim=-1)))
        return (actions + perturbation).clamp(-self.max_action, self.max_action)


class BCQ:
    def __init__(self, obs_dim: int, act_dim: int, max_action: float, config: BCQConfig, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.config, self.device = config, torch.device(device)
        self.max_action = float(max_action)
        with seeded_init(seed):
            self.actor = PerturbationActor(obs_dim, act_dim, max_action, config.actor_hidden, config.phi)
            self.actor.to(self.device)
            self.critic = EnsembleCritic(2, obs_dim, act_dim, config.critic_hidden).to(self.device)
            vae = config.vae
            self.vae = CVAE(obs_dim, act_dim, max_action, vae.hidden_dim, vae.latent_dim, vae.latent_clip,
                            vae.log_std_min, vae.log_std_max).to(self.device)
        self.actor_target, self.critic_target = target_copy(self.actor), target_copy(self.critic)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.learning_rate, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.learning_rate, fused=True)
        self.vae_optimizer = torch.optim.Adam(self.vae.parameters(), lr=config.learning_rate, fused=True)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.step = 0

    # --- learning -----------------------------------------------------------------------------
    def critic_target_values(self, rewards: torch.Tensor, next_observations: torch.Tensor,
                             dones: torch.Tensor) -> torch.Tensor:
        """y = r + gamma (1 - d) max_j [lambda min_i Q_i(s', a_j) + (1 - lambda) max_i Q_i(s', a_j)]."""
        cfg = self.config
        with torch.no_grad():
            repeated = next_observations.repeat_interleave(cfg.target_samples, dim=0)
            next_actions = self.actor_target(repeated, self.vae.decode(repeated, generator=self.generator))
            q = self.critic_target(repeated, next_actions)  # (2, B * n)
            q = cfg.lmbda * q.min(dim=0).values + (1.0 - cfg.lmbda) * q.max(dim=0).values
            q = q.view(-1, cfg.target_samples).max(dim=1).values
            return rewards + cfg.gamma * (1.0 - dones) * q

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        obs, actions, rewards, next_obs, dones = batch

        # 1. the behaviour VAE
        vae_loss, vae_metrics = cvae_loss(self.vae, obs, actions, cfg.vae.kl_weight, self.generator)
        self.vae_optimizer.zero_grad(set_to_none=True)
        vae_loss.backward()
        self.vae_optimizer.step()

        # 2. the twin critics
        target = self.critic_target_values(rewards, next_obs, dones)
        q = self.critic(obs, actions)  # (2, B)
        critic_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # 3. the perturbation actor (critic frozen: no gradient is computed for it here)
        with torch.no_grad():
            sampled = self.vae.decode(obs, generator=self.generator)
        self.critic.requires_grad_(False)
        actor_loss = -self.critic(obs, self.actor(obs, sampled), members=1).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        self.critic.requires_grad_(True)

        soft_update(self.critic_target, self.critic, cfg.tau)
        soft_update(self.actor_target, self.actor, cfg.tau)
        self.step += 1
        return {
            "critic_loss": float(critic_loss.detach()),
            "actor_loss": float(actor_loss.detach()),
            "vae_loss": float(vae_loss.detach()),
            "q_mean": float(q.detach().mean()),
            **{f"vae_{k}": v for k, v in vae_metrics.items()},
        }

    # --- acting -------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, observations: np.ndarray) -> np.ndarray:
        states, single = as_batch_tensor(observations, self.device)
        n = self.config.eval_candidates
        repeated = states.repeat_interleave(n, dim=0)
        candidates = self.actor(repeated, self.vae.decode(repeated, generator=self.generator))
        q1 = self.critic(repeated, candidates, members=1)[0].view(-1, n)
        best = candidates.view(-1, n, candidates.shape[-1])[torch.arange(states.shape[0]), q1.argmax(dim=1)]
        out = best.cpu().numpy()
        return out[0] if single else out

    # --- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(), "actor_target": self.actor_target.state_dict(),
            "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
            "vae": self.vae.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "vae_optimizer": self.vae_optimizer.state_dict(),
            "generator": self.generator.get_state(), "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("actor", "actor_target", "critic", "critic_target", "vae", "actor_optimizer",
                     "critic_optimizer", "vae_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
