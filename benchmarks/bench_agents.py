"""Gradient steps per second of BCQ (paper sizes, batch 100) and CQL (3 x 256, batch 256) on a
Hopper-sized problem (obs 11, act 3), beside the analytic FLOPs of one step and the machine's peak.

    python benchmarks/bench_agents.py [--steps 200]

FLOP counting: a dense layer of fan-in i and fan-out o applied to N rows costs 2*N*i*o FLOPs
forward; a trained layer's backward costs twice that (input and weight gradients). Networks that are
only evaluated (targets, samplers) cost their forward pass; networks evaluated inside another's loss
but frozen (the critic in BCQ's actor loss) cost forward + input gradient = 2x forward. Element-wise
work, Adam and the VAE's KL are ignored: they are O(parameters), not O(rows x parameters).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import itertools

from machine import peak_gflops

from romi.agents.bcq import BCQ
from romi.agents.cql import CQL
from romi.config import BCQConfig, CQLConfig
from romi.types import Batch

OBS, ACT = 11, 3


def mlp_flops(sizes: list[int], rows: int) -> float:
    """Forward FLOPs of an MLP with layer sizes [in, h1, ..., out] on `rows` rows."""
    return sum(2.0 * rows * a * b for a, b in itertools.pairwise(sizes))


def bcq_step_flops(cfg: BCQConfig) -> float:
    b, n = cfg.batch_size, cfg.target_samples
    latent, h = 2 * ACT, cfg.vae.hidden_dim
    encoder = [OBS + ACT, h, h, 2 * latent]
    decoder = [OBS + latent, h, h, ACT]
    actor = [OBS + ACT, *cfg.actor_hidden, ACT]
    critic = [OBS + ACT, *cfg.critic_hidden, 1]
    vae_train = 3 * (mlp_flops(encoder, b) + mlp_flops(decoder, b))
    target = mlp_flops(decoder, b * n) + mlp_flops(actor, b * n) + 2 * mlp_flops(critic, b * n)
    critic_train = 3 * 2 * mlp_flops(critic, b)
    actor_train = mlp_flops(decoder, b) + 3 * mlp_flops(actor, b) + 2 * mlp_flops(critic, b)
    return vae_train + target + critic_train + actor_train


def cql_step_flops(cfg: CQLConfig) -> float:
    b, n = cfg.batch_size, cfg.num_sampled_actions
    policy = [OBS, *cfg.hidden, 2 * ACT]
    critic = [OBS + ACT, *cfg.hidden, 1]
    policy_train = 3 * mlp_flops(policy, b) + 2 * 2 * mlp_flops(critic, b)  # actor loss through frozen twin Q
    samplers = mlp_flops(policy, b) + 2 * mlp_flops(policy, b * n)  # pi(s'), pi(s) and pi(s') x n
    target = 2 * mlp_flops(critic, b)
    critic_train = 3 * 2 * (mlp_flops(critic, b) + mlp_flops(critic, 3 * b * n))
    return policy_train + samplers + target + critic_train


def batch(size: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randn(size, OBS, generator=g), torch.rand(size, ACT, generator=g) * 2 - 1,
                 torch.randn(size, generator=g), torch.randn(size, OBS, generator=g), torch.zeros(size))


def steps_per_second(agent, data: Batch, steps: int) -> float:
    for _ in range(10):
        agent.update(data)
    started = time.perf_counter()
    for _ in range(steps):
        agent.update(data)
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    peak = peak_gflops()
    print(f"machine: {torch.get_num_threads()} threads, measured float32 matmul peak {peak:.1f} GFLOP/s")
    bcq_cfg = BCQConfig()
    cql_cfg = CQLConfig(bc_steps=0)
    rows = [
        ("BCQ (400-300 / VAE 750-750, batch 100)", BCQ(OBS, ACT, 1.0, bcq_cfg), batch(bcq_cfg.batch_size),
         bcq_step_flops(bcq_cfg), 40.0),
        ("CQL (3 x 256, batch 256)", CQL(OBS, ACT, 1.0, cql_cfg), batch(cql_cfg.batch_size),
         cql_step_flops(cql_cfg), 9.0),
    ]
    print(f"{'learner':42s} {'steps/s':>8s} {'target':>7s} {'GFLOP/step':>11s} {'GFLOP/s':>8s} {'% of peak':>9s}")
    for name, agent, data, flops, target in rows:
        rate = steps_per_second(agent, data, args.steps)
        achieved = rate * flops / 1e9
        print(f"{name:42s} {rate:8.1f} {target:7.0f} {flops / 1e9:11.2f} {achieved:8.1f} {100 * achieved / peak:8.0f}%")


if __name__ == "__main__":
    main()
