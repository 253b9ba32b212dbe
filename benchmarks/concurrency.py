"""Trials per hour of a sweep at `--max-concurrent 1` and at 2 (or more) on this machine: whether
one-CPU trials side by side each keep about the rate of a trial alone (their torch threads follow
their CPU bundle, `romi.tune.trainable.trial_threads`).

    python benchmarks/concurrency.py [--trials 4] [--steps 1000] [--concurrency 1 2] [--method BCQ]

Each setting runs the same small sweep through `romi sweep` on the local Ray instance from scratch (its
own storage in a temporary directory): `--trials` seeds of `--method` on maze2d-umaze-sparse, the quick
profile's networks, `--steps` gradient steps and one 2-episode evaluation per trial. The wall time
includes everything a real sweep pays (Ray start, dataset load per trial, evaluation), so trials/hour is
what a user gets for trials of this length; the per-trial steps/s column is the learners' own rate.
Needs the local dataset (`romi data make maze2d-umaze-sparse`) and an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def run_sweep(workdir: Path, trials: int, steps: int, method: str, concurrency: int) -> tuple[float, list[float]]:
    name = f"concurrency{concurrency}"
    spec = {
        "name": name, "description": f"benchmarks/concurrency.py, --max-concurrent {concurrency}",
        "tasks": ["maze2d-umaze-sparse"], "methods": [method], "seeds": trials, "profile": "quick",
        "overrides": {"gradient_steps": steps, "eval": {"every": steps, "episodes": 2, "last_k": 1}},
        "resources": {"cpu": 1, "gpu": 0, "rollout_workers": 0},
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    storage = workdir / "sweeps"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "romi", "sweep", str(path), "--storage", str(storage),
                    "--max-concurrent", str(concurrency)], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    rates = [json.loads(result.read_text().splitlines()[-1])["steps_per_second"]  # Tune's per-trial log
             for result in (storage / name).glob("*/result.json")]
    return wall, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--method", default="BCQ")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for concurrency in args.concurrency:
            print(f"--max-concurrent {concurrency}: {args.trials} {args.method} trials x {args.steps:,} steps ...",
                  flush=True)
            wall, rates = run_sweep(Path(tmp), args.trials, args.steps, args.method, concurrency)
            if len(rates) != args.trials:
                raise SystemExit(f"expected {args.trials} finished trials, found {len(rates)}")
            rows.append((concurrency, wall, rates))
    print(f"\n{'max-concurrent':>14} {'wall':>8} {'trials/hour':>12} {'steps/s per trial (mean, min)':>30}")
    for concurrency, wall, rates in rows:
        print(f"{concurrency:>14} {wall:7.0f}s {args.trials * 3600 / wall:12.1f} "
              f"{statistics.mean(rates):21.1f} {min(rates):8.1f}")
    base = rows[0]
    for concurrency, wall, rates in rows[1:]:
        print(f"--max-concurrent {concurrency} vs {base[0]}: {base[1] / wall:.2f}x trials/hour, each trial at "
              f"{statistics.mean(rates) / statistics.mean(base[2]):.2f}x the rate of a trial alone")


if __name__ == "__main__":
    main()
