"""Networks shared by the learners: MLPs, batched twin critics, the tanh-Gaussian actor."""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from romi.models.ensemble import EnsembleLinear
from romi.models.rollout_policy import tanh_gaussian_log_prob


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class EnsembleCritic(nn.Module):
    """`num_critics` Q(s, a) networks evaluated in one batched matmul per layer.

    Initialised like `nn.Linear` (Kaiming-uniform weights, uniform bias), not like the dynamics model.
    """

    def __init__(self, num_critics: int, state_dim: int, action_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        dims = [state_dim + action_dim, *hidden, 1]
        self.num_critics = num_critics
        self.layers = nn.ModuleList(EnsembleLinear(num_critics, a, b) for a, b in itertools.pairwise(dims))
        for layer in self.layers:
            bound = 1.0 / math.sqrt(layer.in_dim)
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound)
                layer.bias.uniform_(-bound, bound)

    def forward(self, states: torch.Tensor, actions: torch.Tensor, members: int | None = None) -> torch.Tensor:
        """Q-values (E, N) for states/actions (N, .); `members=k` evaluates only the first k critics."""
        e = members or self.num_critics
        x = torch.cat([states, actions], dim=-1).unsqueeze(0).expand(e, -1, -1)
        for i, layer in enumerate(self.layers):
            x = torch.baddbmm(layer.bias[:e], x, layer.weight[:e])
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x.squeeze(-1)


class TanhGaussianActor(nn.Module):
    """pi(a | s) = max_action * tanh(N(mean(s), std(s))) with log_std clamped."""

    def __init__(self, state_dim: int, action_dim: int, max_action: float, hidden: Sequence[int],
                 log_std_min: float, log_std_max: float) -> None:
        super().__init__()
        self.trunk = mlp(state_dim, hidden[:-1], hidden[-1])
        self.head = nn.Linear(hidden[-1], 2 * action_dim)
        self.max_action = float(max_action)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.head(torch.relu(self.trunk(states))).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def rsample(
        self, states: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability."""
        mean, log_std = self(states)
        u = mean + log_std.exp() * torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        return self.max_action * torch.tanh(u), tanh_gaussian_log_prob(u, mean, log_std, self.max_action)

    def log_prob(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = self(states)
        bound = (1.0 - 1e-6) * self.max_action
        u = torch.atanh(actions.clamp(-bound, bound) / self.max_action)
        return tanh_gaussian_log_prob(u, mean, log_std, self.max_action)

    def deterministic(self, states: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self(states)[0])


def target_copy(module: nn.Module) -> nn.Module:
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    target_params = list(target.parameters())
    torch._foreach_lerp_(target_params, list(source.parameters()), tau)


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Network construction under a private RNG: the same seed gives the same initial weights,
    and the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def as_batch_tensor(observations: object, device: torch.device) -> tuple[torch.Tensor, bool]:
    """(N, obs_dim) float tensor from one observation or a batch; flag = was a single observation."""
    x = torch.as_tensor(observations, dtype=torch.float32, device=device)
    single = x.dim() == 1
    return (x.unsqueeze(0) if single else x), single
