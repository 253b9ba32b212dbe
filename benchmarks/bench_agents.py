"""Gradient steps per second of BCQ (paper sizes, batch 100) and CQL (3 x 256, batch 256) on a
Hopper-sized problem (obs 11, act 3, random data), beside the analytic FLOPs of one step and the
fraction of the machine's measured matmul peak that this achieves.

    python benchmarks/bench_agents.py [--steps 100] [--threads N] [--learner bcq|cql|both]

Timing: steps/s by the wall clock and by this process's CPU time. On a machine shared with other jobs
the wall clock counts time spent descheduled; with --threads 1, CPU time estimates an idle core.

FLOP counting (multiply-adds x 2; only matmuls, i.e. O(rows x parameters) work):
  * a dense layer with fan-in i and fan-out o on N rows costs 2 N i o forward;
  * backward of a *trained* layer costs 2 N i o for the weight gradient plus 2 N i o for the input
    gradient, except that no input gradient is formed for a first layer whose input needs none
    (autograd skips it), so "backward ~ 2 x forward" minus that first-layer term;
  * a *frozen* network that a loss differentiates through (BCQ's Q1 in the actor loss, CQL's twin Q in
    the policy loss) costs forward + input gradients of every layer (its input, the action, needs one);
  * networks only evaluated (targets, samplers under no_grad) cost their forward pass.
Element-wise work (ReLU, tanh, losses), Adam, soft target updates and biases are ignored: they are
O(parameters) or O(rows x width), not O(rows x width^2).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import peak_gflops

from romi.agents.bcq import BCQ
from romi.agents.cql import CQL
from romi.config import BCQConfig, CQLConfig
from romi.types import Batch

OBS, ACT = 11, 3


def forward_flops(sizes: Sequence[int], rows: int) -> float:
    """Forward FLOPs of an MLP with layer sizes [in, h1, ..., out] on `rows` rows."""
    return sum(2.0 * rows * a * b for a, b in itertools.pairwise(sizes))


def trained_flops(sizes: Sequence[int], rows: int, input_grad: bool = False) -> float:
    """Forward + weight gradients + input gradients (the first layer's only if `input_grad`)."""
    first = 2.0 * rows * sizes[0] * sizes[1]
    return 3 * forward_flops(sizes, rows) - (0.0 if input_grad else first)


def frozen_grad_flops(sizes: Sequence[int], rows: int) -> float:
    """Forward + input gradients of every layer, no weight gradients."""
    return 2 * forward_flops(sizes, rows)


def bcq_step_flops(cfg: BCQConfig, obs: int = OBS, act: int = ACT) -> dict[str, float]:
    b, n = cfg.batch_size, cfg.target_samples
    latent, h = cfg.vae.latent_dim or 2 * act, cfg.vae.hidden_dim
    encoder = [obs + act, h, h, 2 * latent]  # the mean and log_std heads counted as one layer
    decoder = [obs + latent, h, h, act]
    actor = [obs + act, *cfg.actor_hidden, act]
    critic = [obs + act, *cfg.critic_hidden, 1]
    return {
        # encoder input needs no gradient; the decoder's does (z is reparameterised through the encoder)
        "vae train": trained_flops(encoder, b) + trained_flops(decoder, b, input_grad=True),
        "vae decode (n per s' + 1 per s)": forward_flops(decoder, b * n + b),
        "target actor + twin target Q": forward_flops(actor, b * n) + 2 * forward_flops(critic, b * n),
        "twin critic train": 2 * trained_flops(critic, b),
        "actor train (through frozen Q1)": trained_flops(actor, b) + frozen_grad_flops(critic, b),
    }


def cql_step_flops(cfg: CQLConfig, obs: int = OBS, act: int = ACT) -> dict[str, float]:
    b, k = cfg.batch_size, 3 * cfg.num_sampled_actions
    policy = [obs, *cfg.hidden, 2 * act]
    critic = [obs + act, *cfg.hidden, 1]
    return {
        # one policy pass at s (trained) and one at s' (sampler): every action drawn reuses them
        "policy at s (train) + at s'": trained_flops(policy, b) + forward_flops(policy, b),
        "policy loss through frozen twin Q": 2 * frozen_grad_flops(critic, b),
        "twin target Q": 2 * forward_flops(critic, b),
        "twin critic train (data + 30 sampled)": 2 * trained_flops(critic, b + b * k),
    }


def random_batch(size: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randn(size, OBS, generator=g), torch.rand(size, ACT, generator=g) * 2 - 1,
                 torch.randn(size, generator=g), torch.randn(size, OBS, generator=g), torch.zeros(size))


def steps_per_second(agent: BCQ | CQL, data: Batch, steps: int) -> tuple[float, float]:
    """(wall, CPU-time) gradient steps per second after 5 warm-up steps."""
    for _ in range(5):
        agent.update(data)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        agent.update(data)
    return steps / (time.perf_counter() - wall0), steps / (time.process_time() - cpu0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--learner", choices=("bcq", "cql", "both"), default="both")
    parser.add_argument("--breakdown", action="store_true", help="print the FLOPs of each part of a step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    bcq_cfg, cql_cfg = BCQConfig(), CQLConfig(bc_steps=0)  # CQL past its BC phase: the costlier policy loss
    rows = []
    if args.learner in ("bcq", "both"):
        rows.append(("BCQ (400-300, VAE 750-750, batch 100)", lambda: BCQ(OBS, ACT, 1.0, bcq_cfg),
                     bcq_cfg.batch_size, bcq_step_flops(bcq_cfg), 40.0))
    if args.learner in ("cql", "both"):
        rows.append(("CQL (3 x 256, batch 256)", lambda: CQL(OBS, ACT, 1.0, cql_cfg),
                     cql_cfg.batch_size, cql_step_flops(cql_cfg), 9.0))

    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    peak_wall, peak_cpu = peak_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load}; "
          f"matmul peak {peak_wall:.1f} GFLOP/s wall, {peak_cpu:.1f} GFLOP/s per CPU-second")
    print(f"{'learner':38s} {'target':>6s} {'steps/s':>8s} {'(cpu)':>7s} {'GFLOP/step':>10s} "
          f"{'GFLOP/s':>8s} {'(cpu)':>7s} {'%peak':>6s} {'(cpu)':>6s}")
    for name, make, batch_size, parts, target in rows:
        flops = sum(parts.values())
        wall, cpu = steps_per_second(make(), random_batch(batch_size), args.steps)
        g_wall, g_cpu = wall * flops / 1e9, cpu * flops / 1e9
        print(f"{name:38s} {target:6.0f} {wall:8.1f} {cpu:7.1f} {flops / 1e9:10.2f} {g_wall:8.1f} {g_cpu:7.1f} "
              f"{100 * g_wall / peak_wall:5.0f}% {100 * g_cpu / peak_cpu:5.0f}%")
        if args.breakdown:
            for part, value in parts.items():
                print(f"    {part:44s} {value / 1e9:6.3f} GFLOP ({100 * value / flops:4.1f}%)")


if __name__ == "__main__":
    main()
