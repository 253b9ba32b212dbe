"""Does a run's gradient step get slower as it trains? Times the same learner restored from checkpoints
taken at different steps of one run, in one fresh process, side by side, and counts the subnormal floats
(|x| < 1.18e-38, not zero) in each checkpoint's networks and optimizer state.

    MINARI_DATASETS_PATH=... python benchmarks/checkpoint_speed.py RUN_A.pt RUN_B.pt [--steps 300] [--flush-denormal]

Why: the reduced sweep's trials ran ~250 s per 5k steps early and ~300-340 s late, on both CPU kinds, with
the same code and batch shapes throughout. If a late checkpoint is slower here too (a fresh process, no
allocator history), the cost is in the learner's state, and subnormal numbers are the usual suspect:
Adam's moments of a weight whose gradient is always zero (a dead ReLU unit) decay geometrically and
come to rest at the smallest subnormal, which x86 handles in slow microcode on some CPUs unless
flush-to-zero is on (`torch.set_flush_denormal(True)`). Rounds alternate between the checkpoints so a
busy machine slows all of them alike; the figure is the median round.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from romi.artifacts import ArtifactStore
from romi.config import RunConfig
from romi.pipeline import Run

SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def subnormal_share(state: object) -> tuple[int, int]:
    """(subnormal floats, all floats) in the float32 tensors of a nested state dict."""
    if isinstance(state, torch.Tensor):
        if state.dtype != torch.float32:
            return 0, 0
        magnitude = state.abs()
        return int(((magnitude > 0) & (magnitude < SMALLEST_NORMAL)).sum()), state.numel()
    if isinstance(state, dict):
        parts = [subnormal_share(v) for v in state.values()]
    elif isinstance(state, (list, tuple)):
        parts = [subnormal_share(v) for v in state]
    else:
        return 0, 0
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="run.pt files of one run")
    parser.add_argument("--steps", type=int, default=300, help="gradient steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flush-denormal", action="store_true", help="time with flush-to-zero on as well")
    args = parser.parse_args()
    torch.set_num_threads(1)

    states = [torch.load(path, map_location="cpu", weights_only=False) for path in args.checkpoints]
    subnormals = [subnormal_share(state["agent"]) for state in states]
    config = RunConfig.model_validate(json.loads(states[0]["config"]))
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(config, ArtifactStore(Path(tmp)))
    # Steps draw their batches from the run's own sampler, as in a trial; the sampling is timed apart.
    started = time.perf_counter()
    for _ in range(args.steps):
        run.sampler.sample()
    sample_ms = (time.perf_counter() - started) / args.steps * 1e3
    modes = [False, True] if args.flush_denormal else [False]
    times: dict[tuple[int, bool], list[float]] = {}
    for _ in range(args.rounds):
        for flush in modes:
            torch.set_flush_denormal(flush)
            for index, state in enumerate(states):
                # each round starts from the checkpoint itself (a copy: loading may share the optimizer's
                # moment tensors with `state`, and the steps would change them in place)
                run.agent.load_state_dict(copy.deepcopy(state["agent"]))
                started = time.perf_counter()
                for _ in range(args.steps):
                    run.agent.update(run.sampler.sample())
                times.setdefault((index, flush), []).append((time.perf_counter() - started) / args.steps)
    torch.set_flush_denormal(False)
    print(f"{config.task} {config.method} seed {config.seed}: {args.steps} gradient steps per round, "
          f"median of {args.rounds} rounds, 1 thread, CPU {torch.backends.cpu.get_cpu_capability()}; "
          f"drawing a batch alone: {sample_ms:.2f} ms")
    for index, (path, state) in enumerate(zip(args.checkpoints, states, strict=True)):
        sub, total = subnormals[index]
        row = f"  step {state['step']:>7,}  subnormal {sub:>9,} of {total:,} ({sub / total:.2%})"
        for flush in modes:
            ms = statistics.median(times[(index, flush)]) * 1e3
            row += f"  {'ftz ' if flush else ''}{ms:6.1f} ms/step ({1e3 / ms:5.1f} steps/s)"
        print(row + f"  [{path}]")


if __name__ == "__main__":
    main()
