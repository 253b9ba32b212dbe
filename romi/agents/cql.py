"""CQL(H) with importance sampling (Kumar et al., 2020) on SAC, as spec §4 sets it.

Per batch:
  1. temperature alpha tuned towards the target entropy -|A|;
  2. the policy: behaviour cloning (alpha log pi - log pi(a_data | s)) for the first `bc_steps`,
     then SAC's alpha log pi - min_i Q_i(s, a~pi);
  3. twin critics: TD error to r + gamma (1 - d) min_i Q'_i(s', a'~pi) (no entropy term in the
     target), plus the conservative term weight * (logsumexp over 30 importance-weighted actions -
     Q(s, a_data)): 10 uniform actions (density (2 max_action)^-|A|), 10 policy actions at s and 10
     policy actions at s', each divided by its sampling density;
  4. soft target updates. Acting: tanh(mean) (deterministic).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from romi.agents.nets import EnsembleCritic, TanhGaussianActor, as_batch_tensor, seeded_init, soft_update, target_copy
from romi.config import CQLConfig
from romi.types import Batch


def conservative_penalty(q_data: torch.Tensor, q_random: torch.Tensor, q_current: torch.Tensor,
                         q_next: torch.Tensor, random_log_density: float, logp_current: torch.Tensor,
                         logp_next: torch.Tensor) -> torch.Tensor:
    """CQL(H) importance-sampled penalty per critic, shape (E,).

    q_data: (E, B); q_random/q_current/q_next: (E, B, n); logp_current/logp_next: (B, n).
    """
    stacked = torch.cat(
        [q_random - random_log_density, q_next - logp_next.unsqueeze(0), q_current - logp_current.unsqueeze(0)], dim=2
    )
    return (torch.logsumexp(stacked, dim=2) - q_data).mean(dim=1)


class CQL:
    def __init__(self, obs_dim: int, act_dim: int, max_action: float, config: CQLConfig, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.config, self.device = config, torch.device(device)
        self.act_dim, self.max_action = act_dim, float(max_action)
        with seeded_init(seed):
            self.policy = TanhGaussianActor(obs_dim, act_dim, max_action, config.hidden, config.log_std_min,
                                            config.log_std_max).to(self.device)
            self.critic = EnsembleCritic(2, obs_dim, act_dim, config.hidden).to(self.device)
        self.critic_target = target_copy(self.critic)
        self.log_alpha = torch.zeros(1, device=self.device, requires_grad=True)
        self.target_entropy = config.target_entropy if config.target_entropy is not None else -float(act_dim)
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.policy_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.q_lr, fused=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr, fused=True)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.step = 0

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        obs, actions, rewards, next_obs, dones = batch
        batch_size, n = obs.shape[0], cfg.num_sampled_actions

        # 1. temperature
        new_actions, logp = self.policy.rsample(obs, self.generator)
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()
        alpha = self.log_alpha.detach().exp()

        # 2. policy (critic frozen)
        if self.step < cfg.bc_steps:
            policy_loss = (alpha * logp - self.policy.log_prob(obs, actions)).mean()
        else:
            self.critic.requires_grad_(False)
            q_new = self.critic(obs, new_actions).min(dim=0).values
            self.critic.requires_grad_(True)
            policy_loss = (alpha * logp - q_new).mean()
        self.policy_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.policy_optimizer.step()

        # 3. critics: TD + conservative penalty
        with torch.no_grad():
            next_actions, next_logp = self.policy.rsample(next_obs, self.generator)
            target_q = self.critic_target(next_obs, next_actions).min(dim=0).values
            if cfg.backup_entropy:
                target_q = target_q - alpha * next_logp
            target = rewards + cfg.gamma * (1.0 - dones) * target_q
            obs_rep = obs.repeat_interleave(n, dim=0)
            next_rep = next_obs.repeat_interleave(n, dim=0)
            random_actions = (torch.rand(batch_size * n, self.act_dim, device=self.device, generator=self.generator)
                              * 2 - 1) * self.max_action
            current_actions, logp_current = self.policy.rsample(obs_rep, self.generator)
            next_state_actions, logp_next = self.policy.rsample(next_rep, self.generator)
        q_data = self.critic(obs, actions)  # (2, B)
        td_loss = F.mse_loss(q_data, target.expand_as(q_data), reduction="none").mean(dim=1)
        # One critic pass over all 3n sampled actions per state (uniform, pi(s), pi(s') evaluated at s).
        sampled = torch.cat([random_actions, current_actions, next_state_actions])
        q_sampled = self.critic(obs_rep.repeat(3, 1), sampled).view(2, 3, batch_size, n)
        penalty = conservative_penalty(
            q_data, q_sampled[:, 0], q_sampled[:, 1], q_sampled[:, 2],
            random_log_density=-self.act_dim * math.log(2.0 * self.max_action),
            logp_current=logp_current.view(batch_size, n), logp_next=logp_next.view(batch_size, n),
        )
        critic_loss = (td_loss + cfg.conservative_weight * penalty).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        soft_update(self.critic_target, self.critic, cfg.tau)
        self.step += 1
        return {
            "critic_loss": float(critic_loss.detach()), "td_loss": float(td_loss.detach().mean()),
            "cql_penalty": float(penalty.detach().mean()), "policy_loss": float(policy_loss.detach()),
            "alpha": float(alpha), "q_mean": float(q_data.detach().mean()), "entropy": float(-logp.detach().mean()),
        }

    @torch.no_grad()
    def act(self, observations: np.ndarray) -> np.ndarray:
        states, single = as_batch_tensor(observations, self.device)
        out = self.policy.deterministic(states).cpu().numpy()
        return out[0] if single else out

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "generator": self.generator.get_state(), "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("policy", "critic", "critic_target", "policy_optimizer", "critic_optimizer", "alpha_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
