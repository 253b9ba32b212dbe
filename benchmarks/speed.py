"""The whole speed table in one command: the machine's matmul peak (fp32 and bf16), BCQ and CQL gradient
steps at paper sizes, a dynamics-ensemble training epoch on 1M transitions, and reverse-rollout
throughput, each in fp32 and in bf16 (`precision: bf16`, `romi.nets.compute_precision`) beside the
fraction of the fp32 peak it reaches. The README's Speed section is this command's output.

    python benchmarks/speed.py [--threads 1] [--task maze2d-umaze-sparse]

Everything is timed with `--threads` torch threads (default 1: what a Tune trial with one CPU gets) on
random data at the sizes of the task's paper profile; the cost of a step does not depend on the numbers
in it. Run it on an idle machine: a background job sharing the cores makes every row slower, the OpenMP
ones (threads > 1) much slower. Where the CPU has no native bf16 matmul (avx512_bf16 / AMX), torch
emulates it, several times slower than fp32, and the table marks the bf16 rows so. The dynamics and
rollout bf16 rows time the models' forward passes under autocast: runs train and imagine in fp32.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_agents import bcq_step_flops, cql_step_flops
from machine import peak_gflops, time_call

from romi.config import build_run_config
from romi.nets import has_native_bf16
from romi.tasks import get_task
from romi.tune.timing import time_dynamics_batch, time_imagination, time_learner

LABEL = 62
"""Width of the row-name column."""
DYNAMICS_ROWS = 1_000_000
"""Transitions of a D4RL maze2d / locomotion dataset: what one dynamics epoch passes over."""


def bf16_matmul_gflops(n: int = 1024) -> float:
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    wall, _ = time_call(lambda: a @ b)
    return 2 * n**3 / wall / 1e9


def dynamics_flops_per_batch(hidden: int, layers: int, members: int, batch: int, in_dim: int, out_dim: int) -> float:
    """Forward + backward (~3x forward; no input gradient at the first layer) of every member on one batch."""
    sizes = [in_dim] + [hidden] * layers
    forward = sum(2.0 * batch * a * b for a, b in itertools.pairwise(sizes)) + 2 * 2.0 * batch * hidden * out_dim
    return members * (3 * forward - 2.0 * batch * in_dim * hidden)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a one-CPU trial)")
    parser.add_argument("--task", default="maze2d-umaze-sparse", help="whose paper profile sets the sizes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    obs_dim, act_dim = task.obs_dim, task.act_dim
    started = time.perf_counter()

    peak, _ = peak_gflops()
    bf16 = bf16_matmul_gflops()
    capability = torch.backends.cpu.get_cpu_capability()
    native_bf16 = has_native_bf16(torch.device("cpu"))
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability {capability}, load average "
          f"{load:.2f}; sizes of {task.name}'s paper profile (obs {obs_dim}, act {act_dim})")
    print(f"{'row':{LABEL}} {'rate':>22} {'GFLOP/s':>8} {'% of fp32 peak':>9}")
    print(f"{'matmul peak, fp32 (1024^3)':{LABEL}} {'':>22} {peak:8.1f} {100:8.0f}%")
    emulated = "" if native_bf16 else "  (emulated)"
    print(f"{'matmul, bf16 (1024^3)' + emulated:{LABEL}} {'':>22} {bf16:8.1f} {100 * bf16 / peak:8.0f}%")

    rows: list[tuple[str, str, float]] = []
    fp32_rates: dict[str, float] = {}
    romi = build_run_config(task.name, "ROMI-BCQ", 0, "paper", {})
    dyn = romi.dynamics
    for precision in ("fp32", "bf16"):
        tag = "" if precision == "fp32" else f", bf16{emulated}"
        for method in ("BCQ", "CQL"):
            config = build_run_config(task.name, method, 0, "paper", {"precision": precision})
            timing = time_learner(config, obs_dim, act_dim, args.threads)
            learner = config.bcq if method == "BCQ" else config.cql
            step_flops = bcq_step_flops if method == "BCQ" else cql_step_flops
            flops = sum(step_flops(learner, obs_dim, act_dim).values())  # type: ignore[arg-type]
            rate = timing.steps_per_second
            fp32_rates.setdefault(method, rate)
            versus = "" if precision == "fp32" else f" ({rate / fp32_rates[method]:.2f}x)"
            rows.append((f"{method} gradient step (batch {learner.batch_size}){tag}", f"{rate:.1f} steps/s{versus}",
                         flops * rate / 1e9))

        batch_s = time_dynamics_batch(dyn, obs_dim, act_dim, args.threads, precision)  # type: ignore[arg-type]
        train_rows = DYNAMICS_ROWS - min(int(dyn.holdout_ratio * DYNAMICS_ROWS), dyn.max_holdout)
        epoch_s = batch_s * -(-train_rows // dyn.batch_size)
        flops = dynamics_flops_per_batch(dyn.hidden_dim, dyn.hidden_layers, dyn.ensemble_size, dyn.batch_size,
                                         obs_dim + act_dim, 1 + obs_dim)
        rows.append((f"dynamics epoch ({dyn.ensemble_size} x {dyn.hidden_layers} x {dyn.hidden_dim}, 1M rows){tag}",
                     f"{epoch_s:.0f} s/epoch", flops / batch_s / 1e9))

        seconds_per_transition = time_imagination(romi, obs_dim, act_dim, task.domain, args.threads,
                                                  precision)  # type: ignore[arg-type]
        trunk = [obs_dim + act_dim] + [dyn.hidden_dim] * dyn.hidden_layers
        forward = 2.0 * sum(a * b for a, b in itertools.pairwise(trunk))
        forward += 2 * 2.0 * dyn.hidden_dim * (1 + obs_dim)
        rows.append((f"reverse rollouts (horizon {romi.imagination.horizon}){tag}",
                     f"{1 / seconds_per_transition:,.0f} transitions/s",
                     dyn.ensemble_size * forward / seconds_per_transition / 1e9))
    for label, rate, gflops in rows:
        print(f"{label:{LABEL}} {rate:>22} {gflops:8.1f} {100 * gflops / peak:8.0f}%")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
