"""Reverse-rollout throughput (transitions/s) for maze2d with a paper-sized `DynamicsModel` (7 members,
4 x 200 swish, obs 4, act 2, uniform rollout policy, h = 5), and the time to fill the 4M buffer.

    python benchmarks/bench_rollouts.py [--transitions 50000] [--processes 2] [--steps ensemble,routed] [--full]

Reported for start batches of 1000 (the spec's and the config's default) and 10000, with 1 and 2 torch
threads in one process, and with P processes x 1 thread generating shards in parallel (what the Ray
rollout actors do: one actor per CPU). `--full` really fills 4M transitions with P processes.

Two ways to take an imagined step are timed:
- `DynamicsModel.step` as written (spec §1: every member predicts, each row keeps one elite's sample);
- `EliteRoutedStep`, defined below: the same distribution, but each row is pushed through only the
  member it will use (rows grouped by member), so 1/7 of the FLOPs. It is a proposal for
  `DynamicsModel.step`; it draws its random numbers differently, so it changes the buffer's numbers.

FLOP counting: a dense layer of fan-in i and fan-out o costs 2*i*o FLOPs per row; element-wise work
(swish, the log-variance bounds, sampling) is ignored.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import itertools
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from machine import peak_gflops

from romi.config import DynamicsConfig, ImaginationConfig
from romi.imagination.rollout import RowSampler, generate_shard, shard_plan
from romi.models.dynamics import DynamicsModel
from romi.models.ensemble import soft_bound_logvar
from romi.models.rollout_policy import UniformRolloutPolicy
from romi.models.termination import termination_fn

OBS, ACT, HORIZON, POOL = 4, 2, 5, 1_000_000  # maze2d; the pool is the size of a maze2d-large dataset
BUFFER = ImaginationConfig().buffer_size


def flops_per_transition(config: DynamicsConfig, members: int) -> float:
    """Forward FLOPs of `members` ensemble members on one row (trunk + mean and log-variance heads)."""
    sizes = [OBS + ACT] + [config.hidden_dim] * config.hidden_layers
    trunk = sum(2.0 * a * b for a, b in itertools.pairwise(sizes))
    heads = 2 * 2.0 * config.hidden_dim * (1 + OBS)
    return members * (trunk + heads)


class EliteRoutedStep:
    """`DynamicsModel.step`'s distribution with only the chosen elite evaluated for each row."""

    def __init__(self, model: DynamicsModel) -> None:
        self.model, self.direction = model, model.direction

    def member_forward(self, member: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ensemble = self.model.ensemble
        h = x
        for layer in ensemble.hidden:
            h = F.silu(torch.addmm(layer.bias[member], h, layer.weight[member]))
        mean = torch.addmm(ensemble.mean_head.bias[member], h, ensemble.mean_head.weight[member])
        raw = torch.addmm(ensemble.logvar_head.bias[member], h, ensemble.logvar_head.weight[member])
        return mean, soft_bound_logvar(raw, ensemble.max_logvar, ensemble.min_logvar)

    @torch.no_grad()
    def step(self, states: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None):
        model = self.model
        x = model._normalise(torch.cat([states, actions], dim=-1))
        rows = x.shape[0]
        member = model.elites[torch.randint(model.elites.numel(), (rows,), device=x.device, generator=generator)]
        eps = torch.randn(rows, model.ensemble.out_dim, device=x.device, generator=generator)
        order = torch.argsort(member, stable=True)
        counts = torch.bincount(member, minlength=model.ensemble.ensemble_size).tolist()
        samples = torch.empty_like(eps)
        start = 0
        for e, count in enumerate(counts):
            if count:
                index = order[start:start + count]
                mean, logvar = self.member_forward(e, x[index])
                samples[index] = mean + torch.exp(0.5 * logvar) * eps[index]
                start += count
        return states + samples[:, 1:], samples[:, 0]


def make_model(seed: int = 0) -> DynamicsModel:
    torch.manual_seed(seed)
    model = DynamicsModel(OBS, ACT, DynamicsConfig(), "reverse").eval()
    # A trained maze2d model predicts small steps; shrink the heads so random weights do too.
    with torch.no_grad():
        model.ensemble.mean_head.weight.mul_(0.01)
    return model


def check_routed_matches_the_ensemble(model: DynamicsModel) -> None:
    routed = EliteRoutedStep(model)
    states, actions = torch.randn(64, OBS), torch.rand(64, ACT) * 2 - 1
    with torch.no_grad():
        mean, logvar = model.predict(states, actions)
        x = model._normalise(torch.cat([states, actions], dim=-1))
        for e in range(model.config.ensemble_size):
            m, lv = routed.member_forward(e, x)
            torch.testing.assert_close(m, mean[e])
            torch.testing.assert_close(lv, logvar[e])


def fill(step_kind: str, transitions: int, start_batch: int, threads: int, seed: int = 0) -> tuple[float, float]:
    """(wall, CPU) seconds to generate `transitions` reverse transitions in this process (as one shard)."""
    torch.set_num_threads(threads)
    model = make_model()
    stepper = model if step_kind == "ensemble" else EliteRoutedStep(model)
    policy = UniformRolloutPolicy([-1.0] * ACT, [1.0] * ACT)
    pool = torch.randn(POOL, OBS, generator=torch.Generator().manual_seed(1))
    is_done = termination_fn("maze2d")
    started, cpu_started = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        generate_shard(stepper, policy, pool, None, transitions, HORIZON, is_done, start_batch, seed)
    return time.perf_counter() - started, time.process_time() - cpu_started


def _shard_worker(args: tuple[str, int, int, int]) -> tuple[float, float]:
    step_kind, size, start_batch, seed = args
    return fill(step_kind, size, start_batch, threads=1, seed=seed)


def fill_in_processes(step_kind: str, transitions: int, start_batch: int, processes: int) -> tuple[float, float]:
    """(wall, summed CPU) seconds for `processes` x 1-thread workers to generate a buffer as shards."""
    plan = shard_plan(transitions, max(transitions // (4 * processes), 1), base_seed=0)
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        list(pool.map(_shard_worker, [(step_kind, 1000, start_batch, 0)] * processes))  # warm up imports
        started = time.perf_counter()
        timings = list(pool.map(_shard_worker, [(step_kind, size, start_batch, seed) for size, seed in plan]))
        return time.perf_counter() - started, sum(cpu for _, cpu in timings)


def bench_weighted_draws(rows: int = 2_000_000) -> None:
    """Return-weighted row draws: torch.multinomial vs the cumulative sum + searchsorted of RowSampler."""
    torch.set_num_threads(1)
    weights = torch.rand(rows, dtype=torch.float64)
    sampler = RowSampler.create(rows, weights)
    generator = torch.Generator().manual_seed(0)
    for n in (100, 1000):
        timings = []
        for draw in (lambda n=n: torch.multinomial(weights, n, replacement=True, generator=generator),
                     lambda n=n: sampler(n, generator)):
            draw()
            started = time.perf_counter()
            for _ in range(50):
                draw()
            timings.append((time.perf_counter() - started) / 50 * 1e6)
        print(f"  {n:5d} weighted draws from {rows:,} rows: multinomial {timings[0]:7.0f} us, "
              f"searchsorted {timings[1]:5.0f} us ({timings[0] / timings[1]:.0f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=50_000, help="per measurement (per process)")
    parser.add_argument("--steps", default="ensemble,routed", help="which steps to time: ensemble, routed")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--full", action="store_true", help=f"also fill {BUFFER:,} transitions with P processes")
    args = parser.parse_args()

    config = DynamicsConfig()
    ensemble_flops = flops_per_transition(config, config.ensemble_size)
    routed_flops = flops_per_transition(config, 1)
    default_batch = ImaginationConfig().start_batch_size
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; maze2d obs {OBS}, act {ACT}, h = {HORIZON}")
    print(f"FLOPs per transition: {ensemble_flops / 1e6:.2f} M (all {config.ensemble_size} members), "
          f"{routed_flops / 1e6:.2f} M (routed to one elite); 4M buffer = {BUFFER * ensemble_flops / 1e12:.1f} "
          f"vs {BUFFER * routed_flops / 1e12:.1f} TFLOP")
    peak = peak_gflops()  # (wall, CPU-time) GFLOP/s
    print(f"machine matmul peak now: {peak[0]:.0f} GFLOP/s wall, {peak[1]:.0f} GFLOP/s per CPU-second "
          f"({torch.get_num_threads()} threads; the machine is shared, so wall numbers vary)")
    check_routed_matches_the_ensemble(make_model())

    def report(label: str, seconds: tuple[float, float], transitions: int, flops: float) -> None:
        rate, cpu_rate = transitions / seconds[0], transitions / seconds[1]
        print(f"  {label:44s} {rate:9,.0f} transitions/s ({cpu_rate:9,.0f} per CPU-s)  "
              f"{rate * flops / 1e9:5.1f} GFLOP/s  4M buffer in {BUFFER / rate:6.1f} s")

    steps = [kind.strip() for kind in args.steps.split(",")]
    for step_kind, flops in (("ensemble", ensemble_flops), ("routed", routed_flops)):
        if step_kind not in steps:
            continue
        print(f"{'DynamicsModel.step' if step_kind == 'ensemble' else 'EliteRoutedStep (proposal)'}:")
        for start_batch in (default_batch, 10 * default_batch):
            for threads in (1, 2):
                seconds = fill(step_kind, args.transitions, start_batch, threads)
                report(f"1 process x {threads} threads, start batch {start_batch}", seconds, args.transitions,
                       flops)
            seconds = fill_in_processes(step_kind, args.transitions * args.processes, start_batch, args.processes)
            report(f"{args.processes} processes x 1 thread, start batch {start_batch}", seconds,
                   args.transitions * args.processes, flops)
    print("weighted row draws (start states, real part of batches):")
    bench_weighted_draws()
    if args.full:
        for step_kind in steps:
            wall, cpu = fill_in_processes(step_kind, BUFFER, default_batch, args.processes)
            print(f"full {BUFFER:,} buffer, {step_kind}, {args.processes} processes, start batch {default_batch}: "
                  f"{wall:.1f} s wall, {cpu:.1f} CPU-s ({BUFFER / wall:,.0f} transitions/s)")


if __name__ == "__main__":
    main()
