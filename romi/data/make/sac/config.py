"""How a SAC behaviour run is trained and its policies chosen (defaults: D4RL's SAC, where RLlib allows)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from romi.errors import ConfigError


@dataclass(frozen=True)
class SACBehaviourConfig:
    """How behaviour policies are trained and chosen. Defaults follow D4RL's SAC (rlkit) where RLlib allows."""

    medium_fraction: float = 1 / 3
    """medium = of the checkpoints up to the first whose eval return reaches this fraction of D4RL's expert
    reference return, the one closest to it (`closest_up_to_first_reaching`)."""
    expert_fraction: float = 1.0
    """Training for `expert` stops early at a checkpoint whose eval return reaches this fraction of the
    expert reference ("converged"); otherwise it runs to the budget. expert = the best checkpoint."""
    medium_budget: int = 1_000_000
    """At most this many SAC env steps to find the medium policy (then: a clear error, best kept)."""
    expert_budget: int = 1_000_000
    """SAC env steps for the expert policy (D4RL trained ~1M steps)."""
    checkpoint_every: int = 10_000
    """Env steps between checkpoints: each is evaluated, saved, and may become medium or expert."""
    report_every: int = 1_000
    """Env steps per RLlib training iteration, i.e. between progress lines."""
    eval_episodes: int = 10
    """Deterministic-policy episodes per checkpoint evaluation (fixed start seeds: returns comparable)."""
    learning_starts: int = 5_000
    """Env steps before the first update, sampled by the initial (untrained, stochastic) policy: RLlib's SAC has
    no uniform-random warm-up. They are the start of medium-replay, as the warm-up was in D4RL's."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layers of the policy and of each Q-function."""
    q_network: str = "mlp"
    """"mlp": D4RL's (rlkit's) Q-function, an MLP on concat(observation, action); "rllib": RLlib's default
    multi-stream Q (an MLP per input, then fusion layers of the same sizes: ~9x the parameters, ~4x slower runs)."""
    batch_size: int = 256
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    updates_per_step: float = 1.0
    """Learner updates of `batch_size` per env step, on average (D4RL's SAC: 1)."""
    rollout_fragment_length: int = 1000
    """Env steps the policy takes between rounds of updates (`updates_per_step` x as many updates follow them),
    as rlkit's 1000 exploration steps then 1000 updates per train loop; cut to end on `report_every`.
    Measured A/B, hopper, 256x256, batch 256, one update per env step, steps/s on the 2-core machine with both
    cores running other jobs (two runs each, interleaved):
        RLlib's replay buffer + RLlib's Q, fragment 1 (the previous default):   7.5, 8.2
        ours + RLlib's Q (q_network="rllib"), fragment 1 / 32 / 1000:           11.5, 12.2 / 12.2, 12.6 / 12.2, 13.1
        ours + D4RL's Q (q_network="mlp"), fragment 1 / 1000:                   39.7, 43.9 / 46.2, 51.3"""
    replay_capacity: int = 1_000_000
    torch_threads: int = 1

    def __post_init__(self) -> None:
        positive = ("medium_budget", "expert_budget", "checkpoint_every", "report_every", "eval_episodes",
                    "batch_size", "replay_capacity", "torch_threads", "rollout_fragment_length")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"SAC behaviour config: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.medium_fraction <= 1 or self.expert_fraction <= 0:
            raise ConfigError(
                f"SAC behaviour config: medium_fraction must be in (0, 1] and expert_fraction > 0, got "
                f"{self.medium_fraction} and {self.expert_fraction}"
            )
        if self.q_network not in ("mlp", "rllib"):
            raise ConfigError(f"SAC behaviour config: q_network must be 'mlp' or 'rllib', got {self.q_network!r}")
        if self.updates_per_step <= 0 or self.learning_starts < 0 or not self.hidden_sizes:
            raise ConfigError(
                "SAC behaviour config: needs updates_per_step > 0, learning_starts >= 0 and non-empty hidden_sizes"
            )

    def fingerprint(self) -> dict[str, Any]:
        """The settings that define the run itself; budgets and thresholds may change between invocations."""
        free = {"medium_fraction", "expert_fraction", "medium_budget", "expert_budget", "checkpoint_every",
                "report_every", "torch_threads"}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if k not in free}


def default_behaviour_root() -> Path:
    """Beside the Minari store (so tests that isolate the store isolate this too)."""
    from romi.data.minari_io import datasets_root

    return datasets_root().parent / "romi-behaviour"
