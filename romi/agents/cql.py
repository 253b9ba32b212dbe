"""CQL(H) with importance sampling (Kumar et al., 2020) on SAC, as spec §4 sets it.

One step, in the order ROMI's copy of the CQL code runs it (`CQL/d4rl/rlkit/torch/sac/cql.py`, which
moves the policy step before the critic step):
  1. pi(. | s) with the networks as they were at the start of the step: one reparameterised action
     and its log-probability; the temperature alpha moves towards the target entropy -|A|;
  2. the policy step: behaviour cloning (alpha log pi - log pi(a_data | s)) for the first `bc_steps`,
     then SAC's alpha log pi - min_i Q_i(s, a~pi), Q from the critics before their step;
  3. the critic step, everything drawn from the *updated* policy: the TD error to
     r + gamma (1 - d) min_i Q'_i(s', a'~pi(s')) (no entropy term in the target), plus
     weight * (logsumexp over 30 importance-weighted actions - Q(s, a_data)) with 10 uniform actions
     (density (2 max_action)^-|A|), 10 of pi(. | s) and 10 of pi(. | s'), all scored at s, each minus
     its log sampling density;
  4. soft target updates. Acting: max_action * tanh(mean) (deterministic).
Log-probabilities are rlkit's (`romi.nets.TANH_EPSILON`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from romi.config import CQLConfig, Precision
from romi.nets import (
    EnsembleCritic,
    TanhGaussianActor,
    as_batch_tensor,
    compute_precision,
    soft_update,
    target_copy,
)
from romi.rng import generator, seeded_init
from romi.types import Batch


def conservative_penalty(q_data: torch.Tensor, q_sampled: torch.Tensor, log_density: torch.Tensor) -> torch.Tensor:
    """CQL(H) penalty per critic, shape (E,): mean_b [log sum_k exp(Q(s_b, a_bk) - log mu(a_bk)) - Q(s_b, a_b)].

    q_data: (E, B) values of the dataset actions; q_sampled: (E, B, K) values of K sampled actions;
    log_density: (B, K) log-density of each sampled action under the distribution it was drawn from.
    Dividing by the sampling density makes the logsumexp an importance-sampled estimate of
    log integral exp Q(s, a) da, the soft maximum that CQL(H) pushes down.
    """
    return (torch.logsumexp(q_sampled - log_density.unsqueeze(0), dim=2) - q_data).mean(dim=1)


class CQL:
    def __init__(self, obs_dim: int, act_dim: int, max_action: float, config: CQLConfig, seed: int = 0,
                 device: str | torch.device = "cpu", precision: Precision = "fp32") -> None:
        self.config, self.device = config, torch.device(device)
        # Network forward passes run in `with self.autocast():` (fp32: a no-op; bf16: hidden matmuls in
        # bf16, outputs fp32, so losses are fp32); backward passes and optimizer steps run outside it.
        self.autocast = functools.partial(compute_precision, precision, self.device)
        self.obs_dim, self.act_dim, self.max_action = obs_dim, act_dim, float(max_action)
        with seeded_init(seed, "learner-init"):
            self.policy = TanhGaussianActor(obs_dim, act_dim, max_action, config.hidden, config.log_std_min,
                                            config.log_std_max)
            self.critic = EnsembleCritic(2, obs_dim, act_dim, config.hidden)
        self.policy.to(self.device)
        self.critic.to(self.device)
        self.critic_target = target_copy(self.critic)
        self.log_alpha = torch.zeros(1, device=self.device, requires_grad=True)
        self.target_entropy = config.target_entropy if config.target_entropy is not None else -float(act_dim)
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.policy_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.q_lr, fused=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr, fused=True)
        self.generator = generator(seed, "learner", self.device)
        # log-density of the uniform distribution on the action box [-max_action, max_action]^|A|
        self.uniform_log_density = -act_dim * math.log(2.0 * self.max_action)
        self.step = 0

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step of alpha, the policy and the twin critics on `batch`."""
        cfg, gen = self.config, self.generator
        obs, actions, rewards, next_obs, dones = batch
        batch_size, n = obs.shape[0], cfg.num_sampled_actions

        # pi(. | s), differentiable: the policy is trained on it.
        with self.autocast():
            mean, log_std = self.policy(obs)
        new_actions, logp = self.policy.sample(mean, log_std, gen)

        # 1. Temperature: alpha grows when the policy's entropy -logp falls below the target.
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()
        alpha = self.log_alpha.detach().exp()

        # 2. Policy. The BC warm-up keeps the policy on the data while the critics are still untrained.
        if self.step < cfg.bc_steps:
            policy_loss = (alpha * logp - self.policy.log_prob(mean, log_std, actions)).mean()
        else:
            self.critic.requires_grad_(False)  # frozen: only the gradient w.r.t. the actions is computed
            with self.autocast():
                q_new = self.critic(obs, new_actions).min(dim=0).values
            self.critic.requires_grad_(True)
            policy_loss = (alpha * logp - q_new).mean()
        self.policy_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.policy_optimizer.step()

        # 3. Critics. Targets and the penalty's sampled actions need no gradient.
        with torch.no_grad(), self.autocast():
            next_mean, next_log_std = self.policy(next_obs)
            next_actions, next_logp = self.policy.sample(next_mean, next_log_std, gen)
            target_q = self.critic_target(next_obs, next_actions).min(dim=0).values
            if cfg.backup_entropy:
                target_q = target_q - alpha * next_logp
            target = rewards + cfg.gamma * (1.0 - dones) * target_q

            # 3n actions per state for the penalty: uniform, pi(. | s), pi(. | s'), both from the updated
            # policy (one forward pass each serves all n draws).
            updated_mean, updated_log_std = self.policy(obs)

            def draws(m: torch.Tensor, ls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                shape = (batch_size, n, self.act_dim)
                return self.policy.sample(m.detach().unsqueeze(1).expand(shape),
                                          ls.detach().unsqueeze(1).expand(shape), gen)

            uniform = (torch.rand(batch_size, n, self.act_dim, device=self.device, generator=gen) * 2 - 1)
            uniform = uniform * self.max_action
            current, logp_current = draws(updated_mean, updated_log_std)
            at_next, logp_next = draws(next_mean, next_log_std)
            sampled = torch.cat([uniform, current, at_next], dim=1)  # (B, 3n, |A|)
            log_density = torch.cat([logp_current.new_full((batch_size, n), self.uniform_log_density),
                                     logp_current, logp_next], dim=1)  # (B, 3n)

        # One critic pass over the dataset pairs and all 3n sampled actions, every one scored at s.
        k = sampled.shape[1]
        states = torch.cat([obs, obs.unsqueeze(1).expand(-1, k, -1).reshape(-1, self.obs_dim)])
        with self.autocast():
            q_all = self.critic(states, torch.cat([actions, sampled.reshape(-1, self.act_dim)]))  # (2, B + B k)
        q_data, q_sampled = q_all[:, :batch_size], q_all[:, batch_size:].view(2, batch_size, k)
        td_loss = F.mse_loss(q_data, target.expand_as(q_data), reduction="none").mean(dim=1)  # (2,)
        penalty = conservative_penalty(q_data, q_sampled, log_density)  # (2,)
        critic_loss = (td_loss + cfg.conservative_weight * penalty).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # 4. Polyak averaging of the target critics.
        soft_update(self.critic_target, self.critic, cfg.tau)
        self.step += 1
        return {
            "critic_loss": critic_loss.item(), "td_loss": td_loss.detach().mean().item(),
            "cql_penalty": penalty.detach().mean().item(), "policy_loss": policy_loss.item(),
            "alpha": alpha.item(), "alpha_loss": alpha_loss.item(), "q_mean": q_data.detach().mean().item(),
            "q_max": q_data.detach().max().item(), "target_mean": target.mean().item(),
            "target_max": target.max().item(),
            "entropy": -logp.detach().mean().item(),
        }

    @torch.no_grad()
    def act(self, observations: np.ndarray) -> np.ndarray:
        """max_action * tanh(mean(s)) for one observation (obs_dim,) or a batch (N, obs_dim)."""
        states, single = as_batch_tensor(observations, self.device)
        with self.autocast():
            out = self.policy.deterministic(states).cpu().numpy()
        return out[0] if single else out

    _MODULES = ("policy", "critic", "critic_target", "policy_optimizer", "critic_optimizer", "alpha_optimizer")

    def state_dict(self) -> dict[str, Any]:
        """Everything the next update depends on: networks, targets, optimizers, log_alpha, RNG, step."""
        return {
            **{name: getattr(self, name).state_dict() for name in self._MODULES},
            "log_alpha": self.log_alpha.detach().clone(), "generator": self.generator.get_state(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._MODULES:
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
