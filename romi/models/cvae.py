"""The conditional VAE over actions, used twice: as ROMI's diverse rollout policy G(a | s') (spec §2)
and as BCQ's generative model of the behaviour policy (spec §4). One implementation for both.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CVAE(nn.Module):
    """q(z | c, a) and p(a | c, z) with c the conditioning state (s' reverse, s forward / BCQ).

    Encoder [c, a] -> hidden -> hidden -> (mean, log_std); decoder [c, z] -> hidden -> hidden ->
    max_action * tanh. log_std is clamped to [log_std_min, log_std_max]; sampling clips z to
    [-latent_clip, latent_clip], which keeps decoded actions near the data.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        max_action: float,
        hidden_dim: int = 750,
        latent_dim: int | None = None,
        latent_clip: float = 0.5,
        log_std_min: float = -4.0,
        log_std_max: float = 15.0,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim or 2 * action_dim
        self.max_action = max_action
        self.latent_clip = latent_clip
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.encoder = nn.Sequential(
            nn.Linear(state_dim + action_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        )
        self.mean = nn.Linear(hidden_dim, self.latent_dim)
        self.log_std = nn.Linear(hidden_dim, self.latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(state_dim + self.latent_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, action_dim),
        )

    def encode(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(torch.cat([states, actions], dim=-1))
        log_std = self.log_std(hidden).clamp(self.log_std_min, self.log_std_max)
        return self.mean(hidden), log_std

    def decode(
        self, states: torch.Tensor, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if z is None:
            z = torch.randn(
                states.shape[0], self.latent_dim, device=states.device, dtype=states.dtype, generator=generator
            ).clamp(-self.latent_clip, self.latent_clip)
        return self.max_action * torch.tanh(self.decoder(torch.cat([states, z], dim=-1)))

    def forward(
        self, states: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction of `actions`, and the posterior's mean and std."""
        mean, log_std = self.encode(states, actions)
        std = log_std.exp()
        eps = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        return self.decode(states, mean + std * eps), mean, std

    def sample(self, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw actions for `states` from the prior (the `RolloutPolicy` interface)."""
        return self.decode(states, generator=generator)


def cvae_loss(
    model: CVAE,
    states: torch.Tensor,
    actions: torch.Tensor,
    kl_weight: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Action MSE + kl_weight * KL(q(z | s, a) || N(0, I)), the loss of spec §2 and BCQ's VAE."""
    reconstruction, mean, std = model(states, actions, generator)
    recon_loss = F.mse_loss(reconstruction, actions)
    kl = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
    loss = recon_loss + kl_weight * kl
    return loss, {"recon_loss": float(recon_loss.detach()), "kl": float(kl.detach())}
