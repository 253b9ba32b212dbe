"""Building blocks every floor above uses: MLPs, batched ensemble layers (the dynamics ensemble and the
twin critics), tanh-Gaussian policies and their log-probabilities, the conditional VAE over actions
(ROMI's rollout policy G(a | s') and BCQ's behaviour model: one implementation for both), and small
helpers (target copies, soft updates, the learners' compute precision)."""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import math
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from romi.config import CVAEConfig, Precision


def compute_precision(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """The context a learner's forward passes run in: nothing for fp32 (the paper's); for bf16, torch
    autocast, so the hidden layers' matmuls take bf16 inputs. Master weights, gradients, optimizer state,
    network outputs (`OutputLinear`, the critic's last layer), targets and losses stay fp32. Backward
    passes belong outside it (torch's recipe: they then run each op in its forward's dtype; inside,
    autocast would also cast the fp32 heads' gradient matmuls).

    `cache_enabled=False`: autocast keeps the bf16 copy of each weight until the outermost region exits,
    so an optimizer step inside a region would leave later passes of that region on stale weights.
    Casting a weight again per call costs O(parameters), against the O(rows x parameters) of its matmul.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


def has_native_bf16(device: torch.device) -> bool | None:
    """Whether `device` multiplies bf16 in hardware (a CUDA GPU that supports it; an x86 CPU with
    avx512_bf16 or AMX), where torch would otherwise emulate bf16 matmuls, several times slower than
    fp32. None where romi cannot tell (MPS)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return None


@functools.cache
def cpu_kind() -> str:
    """The CPU's model and the instruction set torch's kernels use on it (`Intel(R) Xeon(R) Processor,
    AVX512`). Recorded with every evaluation: the same config and seed give the same numbers bit for bit
    on one kind of CPU, not across kinds (float kernels differ between AVX2 and AVX-512 in the last bits)."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}"


def in_fp32(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` in fp32 even inside a bf16 autocast region (x cast up, autocast off for the call); just
    `layer(x)` outside one. For network outputs: see `OutputLinear`."""
    if not torch.is_autocast_enabled(x.device.type):
        return layer(x)
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


class OutputLinear(nn.Linear):
    """A network's output layer: computed in fp32 even inside a bf16 autocast region, so Q-values,
    log-stds and actions keep fp32 resolution (bf16 spaces values near Q = 200 a whole 1.0 apart) and
    every loss reads fp32. Output layers are narrow (1 to 2|A| columns), so bf16 would gain nothing there
    anyway. Same parameters as `nn.Linear`: state dicts do not change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_fp32(super().forward, x)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear -> ReLU -> ... -> OutputLinear. The ReLUs work in place: a Linear's backward needs its
    input, not its output, so overwriting the output saves one activation-sized buffer per layer."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True)]
        in_dim = width
    layers.append(OutputLinear(in_dim, out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """E independent affine maps applied at once: y[e] = x[e] @ W[e] + b[e].

    Weights are stored (E, in, out) (not nn.Linear's (out, in)) so the forward pass is a single
    `torch.baddbmm`. Init: truncated normal with std 1 / (2 sqrt(in_dim)) cut at two std, zero bias
    (spec §1; the usual init of probabilistic-ensemble dynamics models).
    """

    def __init__(self, ensemble_size: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.ensemble_size, self.in_dim, self.out_dim = ensemble_size, in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1.0 / (2.0 * math.sqrt(self.in_dim))
        nn.init.trunc_normal_(self.weight, std=std, a=-2.0 * std, b=2.0 * std)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (E, B, in) -> (E, B, out)."""
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"ensemble_size={self.ensemble_size}, in_dim={self.in_dim}, out_dim={self.out_dim}"


class EnsembleCritic(nn.Module):
    """`num_critics` Q(s, a) networks [s, a] -> hidden -> 1, evaluated in one batched matmul per layer.

    Weights are (E, in, out) and every layer is one `torch.baddbmm`, so twin critics cost one kernel
    per layer instead of two. Initialised like `nn.Linear` (uniform +-1/sqrt(fan_in) for weight and
    bias), as in the reference BCQ/CQL code, not with the dynamics model's truncated normal.
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
        """Q-values (E, N) for states/actions (N, .); `members=k` evaluates only the first k critics
        (BCQ's actor and action selection use Q1 alone)."""
        e = members or self.num_critics
        # All critics see the same input: a stride-0 expand, no copy.
        x = torch.cat([states, actions], dim=-1).unsqueeze(0).expand(e, -1, -1)
        *hidden, last = self.layers
        for layer in hidden:
            x = torch.baddbmm(layer.bias[:e], x, layer.weight[:e])
            x = x.relu_()  # in place: baddbmm's backward needs its inputs, not its output
        # The Q-values in fp32, as `OutputLinear`.
        return in_fp32(lambda h: torch.baddbmm(last.bias[:e], h, last.weight[:e]), x).squeeze(-1)


# rlkit's tanh-Gaussian conventions, which the official CQL (and so ROMI-CQL) trains with
# (`rlkit/torch/distributions.py`, `rlkit/torch/sac/policies.py`): the change-of-variables term is
# log(1 - tanh(u)^2 + 1e-6), the mean is clamped to [-9, 9] when scoring dataset actions, and atanh
# clamps 1 +- a at 1e-6. For saturated actions (|u| >~ 7) the epsilon caps log pi where the exact
# formula grows without bound; that shifts alpha's tuning and CQL's importance weights Q - log pi.
TANH_EPSILON = 1e-6
BC_MEAN_BOUND = 9.0


def _gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2.0 * math.pi)


def rlkit_tanh_log_prob(u: torch.Tensor, squashed: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
                        max_action: float) -> torch.Tensor:
    """log pi(max_action * squashed), squashed = tanh(u), as rlkit computes it, summed over action dims."""
    log_jacobian = torch.log(1.0 - squashed.pow(2) + TANH_EPSILON)
    return (_gaussian_log_prob(u, mean, log_std) - log_jacobian).sum(-1) - u.shape[-1] * math.log(max_action)


def rlkit_atanh(x: torch.Tensor) -> torch.Tensor:
    """atanh with 1 +- x clamped at 1e-6, so dataset actions at the bound stay finite (the RBC rollout
    policy's loss uses it too)."""
    return 0.5 * torch.log((1.0 + x).clamp(min=TANH_EPSILON) / (1.0 - x).clamp(min=TANH_EPSILON))


# The exact change of variables, for the Gaussian RBC rollout policy (spec §2); CQL keeps rlkit's
# epsilon-regularised form above, as the official CQL trains with it: two formulas on purpose.
def _log_one_minus_tanh_sq(u: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) computed stably: 2 (log 2 - u - softplus(-2u))."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


def tanh_gaussian_log_prob(
    u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, max_action: float
) -> torch.Tensor:
    """log pi(a) for a = max_action * tanh(u), u ~ N(mean, exp(log_std)^2), summed over action dims.

    Change of variables: log pi(a) = log N(u) - sum log(1 - tanh(u)^2) - |A| log(max_action).
    """
    gaussian = -0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2.0 * math.pi)
    return (gaussian - _log_one_minus_tanh_sq(u)).sum(-1) - u.shape[-1] * math.log(max_action)



class TanhGaussianActor(nn.Module):
    """pi(a | s) = max_action * tanh(u), u ~ N(mean(s), exp(log_std(s))^2), log_std clamped.

    `forward` returns the distribution's parameters so that one forward pass can serve several
    draws (CQL takes 1 + 10 actions per state from the same pi(. | s)). Log-probabilities follow
    rlkit (see `TANH_EPSILON`).
    """

    def __init__(self, state_dim: int, action_dim: int, max_action: float, hidden: Sequence[int],
                 log_std_min: float, log_std_max: float) -> None:
        super().__init__()
        self.net = mlp(state_dim, hidden, 2 * action_dim)
        self.max_action = float(max_action)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(states).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, mean: torch.Tensor, log_std: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action from N(mean, std) squashed, and its log-probability."""
        u = _gaussian_draw(mean, log_std, generator)
        squashed = torch.tanh(u)
        return self.max_action * squashed, rlkit_tanh_log_prob(u, squashed, mean, log_std, self.max_action)

    def log_prob(self, mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(actions) of given (dataset) actions, with rlkit's clamped mean and atanh."""
        squashed = actions / self.max_action
        mean = mean.clamp(-BC_MEAN_BOUND, BC_MEAN_BOUND)
        return rlkit_tanh_log_prob(rlkit_atanh(squashed), squashed, mean, log_std, self.max_action)

    def deterministic(self, states: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self(states)[0])

    def sample_actions(self, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions alone (no log-probability): what a rollout policy needs."""
        return self.max_action * torch.tanh(_gaussian_draw(*self(states), generator))


def _gaussian_draw(mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """u = mean + std * eps, eps ~ N(0, I): the pre-tanh draw both `sample` and `sample_actions` make."""
    noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
    return mean + log_std.exp() * noise


def standardization(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature (mean, std) of `x` (N, D) to standardise inputs with; a constant feature gets std 1,
    so it maps to 0 instead of dividing by zero. The dynamics model and the RBC policy both use it."""
    std = x.std(dim=0, unbiased=False)
    return x.mean(dim=0), torch.where(std < 1e-12, torch.ones_like(std), std)


def target_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy: target networks are only ever moved by `soft_update`."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, for all parameters in one foreach kernel.

    `torch._foreach_lerp_` is not public API, but it is what `torch.optim`'s own EMA helpers call, and it
    is one kernel where a loop over parameters is one per tensor; `test_agents` pins its result against
    the per-parameter formula, so a change in torch shows up there."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def as_batch_tensor(observations: object, device: torch.device) -> tuple[torch.Tensor, bool]:
    """(N, obs_dim) float tensor from one observation or a batch; flag = was a single observation."""
    x = torch.as_tensor(observations, dtype=torch.float32, device=device)
    single = x.dim() == 1
    return (x.unsqueeze(0) if single else x), single


# --------------------------------------------------------------------------------------------
# The conditional VAE (spec §2: ROMI's diverse rollout policy; spec §4: BCQ's generative model)
# --------------------------------------------------------------------------------------------
class CVAE(nn.Module):
    """q(z | c, a) and p(a | c, z) with c the conditioning state (s' reverse, s forward / BCQ).

    Encoder [c, a] -> hidden -> hidden -> (mean, log_std); decoder [c, z] -> hidden -> hidden ->
    max_action * tanh (or linear: `CVAEConfig.output`). log_std is clamped to [log_std_min, log_std_max];
    sampling clips z to [-latent_clip, latent_clip], which keeps decoded actions near the data.
    """

    def __init__(self, state_dim: int, action_dim: int, max_action: float, *, hidden_dim: int,
                 latent_dim: int | None, latent_clip: float, log_std_min: float, log_std_max: float,
                 output: str = "tanh") -> None:
        super().__init__()
        self.squash = output == "tanh"
        self.latent_dim = latent_dim or 2 * action_dim
        self.max_action = max_action
        self.latent_clip = latent_clip
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.encoder = nn.Sequential(
            nn.Linear(state_dim + action_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        )
        self.mean = OutputLinear(hidden_dim, self.latent_dim)
        self.log_std = OutputLinear(hidden_dim, self.latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(state_dim + self.latent_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            OutputLinear(hidden_dim, action_dim),
        )

    @classmethod
    def from_config(cls, state_dim: int, action_dim: int, max_action: float, config: CVAEConfig) -> CVAE:
        return cls(state_dim, action_dim, max_action, hidden_dim=config.hidden_dim, latent_dim=config.latent_dim,
                   latent_clip=config.latent_clip, log_std_min=config.log_std_min, log_std_max=config.log_std_max,
                   output=config.output)

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
        out = self.decoder(torch.cat([states, z], dim=-1))
        return self.max_action * torch.tanh(out) if self.squash else out

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
    kl_weight: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Action MSE + kl_weight * KL(q(z | s, a) || N(0, I)), the loss of spec §2 and BCQ's VAE."""
    reconstruction, mean, std = model(states, actions, generator)
    recon_loss = F.mse_loss(reconstruction, actions)
    kl = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
    loss = recon_loss + kl_weight * kl
    return loss, {"recon_loss": float(recon_loss.detach()), "kl": float(kl.detach())}
