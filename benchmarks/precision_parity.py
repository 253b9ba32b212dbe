"""Learning parity of the bf16 precision switch: the slow learning test's run (ROMI-BCQ on a 100k-step
maze2d-umaze-dense dataset, quick profile, 6k gradient steps, 10 evaluation episodes every 1k steps) in
fp32 and in bf16, curves printed side by side with the fp32 seeds' spread.

    python benchmarks/precision_parity.py [--state DIR] [--seeds 0 1 2] [--bf16-seeds 0] [--steps 6000]

Every finished (precision, seed) run is appended to DIR/curves.jsonl and skipped when the command runs
again, so an interrupted comparison resumes where it stopped (each run takes minutes in fp32; bf16 takes
several times longer on a CPU that emulates it). DIR (default ~/.cache/romi/precision-parity) also keeps
the dataset and the dynamics model, which both precisions share: precision changes only the learner.
Scores are normalised with D4RL's reference returns, as in the slow test. One torch thread, as a trial.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from romi.progress import Reporter, format_duration

DEFAULT_STATE = Path.home() / ".cache" / "romi" / "precision-parity"
TASK = "maze2d-umaze-dense"


class StepLines(Reporter):
    """The base reporter's lines (model epochs), plus one line a minute on the gradient steps with an ETA:
    a bf16 run on a CPU that emulates bf16 takes an hour and more."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        super().__init__(log)
        self.first: tuple[int, float] | None = None
        """(step, time) of the first gradient-step report: the rate is measured from there."""
        self.last = 0.0

    def gradient_steps(self, step: int, total: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first, self.last = (step, now), now
        elif now - self.last >= 60:
            self.last = now
            rate = (step - self.first[0]) / (now - self.first[1])
            self.log(f"  {step:,}/{total:,} gradient steps, {rate:.2f} steps/s, "
                     f"ETA {format_duration((total - step) / rate)} (evaluations excluded)")


def run_curve(precision: str, seed: int, steps: int, artifacts: Path) -> dict[str, object]:
    from romi.artifacts import ArtifactStore
    from romi.config import build_run_config
    from romi.pipeline import Run

    every = steps // 6
    config = build_run_config(TASK, "ROMI-BCQ", seed=seed, profile="quick", overrides={
        "gradient_steps": steps, "eval": {"every": every, "episodes": 10, "last_k": 3},
        "dynamics": {"max_epochs": 10, "batches_per_epoch": 100}, "imagination": {"buffer_size": 50_000},
        "precision": precision, "data_recipe": "minari",  # the slow test's data (see tests/test_learning.py)
    })
    # Lines (at most one per 10 s) for the model's epochs and the gradient steps, with ETAs.
    def log(line: str) -> None:
        print(line, flush=True)

    run = Run(config, ArtifactStore(artifacts), log=log, reporter=StepLines(log))
    untrained = run.evaluate().score
    records = []
    for record in run.train():
        print(f"  step {record.step:,}: score {record.score:.1f} (D4RL refs)", flush=True)
        records.append(record)
    return {"precision": precision, "seed": seed, "steps": steps, "untrained": untrained,
            "steps_at": [r.step for r in records], "scores": [r.score for r in records],
            "train_seconds": records[-1].wall_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="fp32 seeds (the noise band)")
    parser.add_argument("--bf16-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--steps", type=int, default=6000)
    args = parser.parse_args()
    args.state.mkdir(parents=True, exist_ok=True)
    os.environ["MINARI_DATASETS_PATH"] = str(args.state / "minari")
    torch.set_num_threads(1)

    from romi.data.make import make_dataset

    make_dataset(TASK, steps=100_000, seed=3, ref_episodes=5, recipe="minari")  # the slow test's; kept if made
    curves_path = args.state / "curves.jsonl"
    done = [json.loads(line) for line in curves_path.read_text().splitlines()] if curves_path.exists() else []
    wanted = [("fp32", s) for s in args.seeds] + [("bf16", s) for s in args.bf16_seeds]
    for precision, seed in wanted:
        if any(c["precision"] == precision and c["seed"] == seed and c["steps"] == args.steps for c in done):
            continue
        print(f"--- ROMI-BCQ {precision} seed {seed}: {args.steps:,} gradient steps", flush=True)
        curve = run_curve(precision, seed, args.steps, args.state / "artifacts")
        with curves_path.open("a") as f:  # one line per finished run: an interrupted run leaves none
            f.write(json.dumps(curve) + "\n")
        done.append(curve)

    curves = [c for c in done if c["steps"] == args.steps]
    print(f"\nROMI-BCQ on {TASK} (100k-step local dataset), D4RL-normalised score, {args.steps:,} steps, "
          "10 episodes per point")
    for c in sorted(curves, key=lambda c: (c["precision"], c["seed"])):
        last3 = statistics.mean(c["scores"][-3:])
        points = " ".join(f"{s:6.1f}" for s in c["scores"])
        print(f"{c['precision']} seed {c['seed']}: untrained {c['untrained']:6.1f} | {points} | last 3 "
              f"{last3:6.1f} | {c['train_seconds'] / 60:.0f} min")
    for precision in ("fp32", "bf16"):
        last = [statistics.mean(c["scores"][-3:]) for c in curves if c["precision"] == precision]
        if last:
            spread = f" ± {statistics.stdev(last):.1f}" if len(last) > 1 else ""
            print(f"{precision}: last-3 mean over {len(last)} seed(s) {statistics.mean(last):.1f}{spread}")


if __name__ == "__main__":
    main()
