"""Batched ensemble layers and the probabilistic (Gaussian) ensemble MLP of spec §1.

Every member of the ensemble has its own weights, but all members run in one batched matmul:
activations are shaped (E, B, features) and a layer's weight is (E, in, out). This is the same
arithmetic as E separate `nn.Linear`s, only E times fewer kernel launches.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from romi.config import DynamicsConfig
from romi.nets import EnsembleLinear


def soft_bound_logvar(logvar: torch.Tensor, max_logvar: torch.Tensor, min_logvar: torch.Tensor) -> torch.Tensor:
    """Squash raw log-variances smoothly into (min_logvar, max_logvar) (spec §1).

    Hard clamping would kill the gradient outside the range; the softplus version keeps it, and
    because the bounds are learned (and pulled together by the loss) the model can tighten them.
    """
    logvar = max_logvar - F.softplus(max_logvar - logvar)
    return min_logvar + F.softplus(logvar - min_logvar)


class GaussianEnsemble(nn.Module):
    """E MLPs mapping x to a diagonal Gaussian N(mean, exp(logvar)), evaluated in one batch.

    Trunk: `hidden_layers` x `hidden_dim` swish (SiLU); then a mean head and a separate
    log-variance head on the last hidden layer. The log-variance bounds are learned per output
    dimension and shared by the members.
    """

    def __init__(
        self,
        ensemble_size: int,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int,
        hidden_layers: int,
        weight_decays: Sequence[float],
        logvar_max_init: float,
        logvar_min_init: float,
    ) -> None:
        super().__init__()
        if len(weight_decays) != hidden_layers + 1:
            raise ValueError(f"need hidden_layers + 1 = {hidden_layers + 1} weight decays, got {len(weight_decays)}")
        self.ensemble_size, self.in_dim, self.out_dim = ensemble_size, in_dim, out_dim
        dims = [in_dim] + [hidden_dim] * hidden_layers
        self.hidden = nn.ModuleList(EnsembleLinear(ensemble_size, a, b) for a, b in itertools.pairwise(dims))
        self.mean_head = EnsembleLinear(ensemble_size, hidden_dim, out_dim)
        self.logvar_head = EnsembleLinear(ensemble_size, hidden_dim, out_dim)
        self.max_logvar = nn.Parameter(torch.full((out_dim,), float(logvar_max_init)))
        self.min_logvar = nn.Parameter(torch.full((out_dim,), float(logvar_min_init)))
        self.weight_decays = tuple(float(w) for w in weight_decays)
        self._logvar_max_init, self._logvar_min_init = float(logvar_max_init), float(logvar_min_init)

    @classmethod
    def from_config(cls, in_dim: int, out_dim: int, config: DynamicsConfig) -> GaussianEnsemble:
        return cls(config.ensemble_size, in_dim, out_dim, hidden_dim=config.hidden_dim,
                   hidden_layers=config.hidden_layers, weight_decays=config.weight_decays,
                   logvar_max_init=config.logvar_max_init, logvar_min_init=config.logvar_min_init)

    def reset_parameters(self) -> None:
        """Re-initialise every member (and the log-variance bounds); seed it with `romi.rng.seeded_init`."""
        for layer in self.ensemble_layers():
            layer.reset_parameters()
        with torch.no_grad():
            self.max_logvar.fill_(self._logvar_max_init)
            self.min_logvar.fill_(self._logvar_min_init)

    def ensemble_layers(self) -> list[EnsembleLinear]:
        """All per-member layers (hidden, then the mean and log-variance heads)."""
        return [*self.hidden, self.mean_head, self.logvar_head]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (E, B, in) -> (mean, logvar), each (E, B, out), logvar soft-bounded."""
        h = x
        for layer in self.hidden:
            h = F.silu(layer(h))
        mean = self.mean_head(h)
        logvar = soft_bound_logvar(self.logvar_head(h), self.max_logvar, self.min_logvar)
        return mean, logvar

    def weight_decay_loss(self) -> torch.Tensor:
        """sum over layers of wd_l * 0.5 * ||W_l||^2 (all members; biases are not decayed).

        The last weight decay applies to each head, the mean head and the log-variance head alike.
        """
        terms = [
            wd * 0.5 * layer.weight.pow(2).sum()
            for wd, layer in zip(self.weight_decays[:-1], self.hidden, strict=True)
        ]
        head_wd = self.weight_decays[-1]
        terms.append(head_wd * 0.5 * self.mean_head.weight.pow(2).sum())
        terms.append(head_wd * 0.5 * self.logvar_head.weight.pow(2).sum())
        return torch.stack(terms).sum()

    def logvar_bound_loss(self) -> torch.Tensor:
        """sum(max_logvar) - sum(min_logvar): pulls the learned bounds together (spec §1)."""
        return self.max_logvar.sum() - self.min_logvar.sum()
