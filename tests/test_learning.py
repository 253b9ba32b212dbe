"""Slow learning tests (`pytest -m slow`): the method actually learns on real, small data.

Why the dense umaze task: in a run this short (6k gradient steps, ~6 min on one core) the sparse
reward of maze2d-umaze has not propagated back from the goal yet (Q-values grow by roughly one
soft-target time constant, 1/tau = 200 steps, per step of the horizon), so sparse scores are still
noise. The dense reward exp(-distance) gives every step a signal, and the improvement over the
untrained policy is large and reliable. Measured in this setting (1 torch thread, the seed streams of
`romi.rng`): seed 0, the one tested, untrained 6.5 -> -4.4, 0.3, 14.0, 55.8, 52.6, 33.1 (last 3: 47.2,
margin 26 over the bar; plain BCQ on the same data and steps: last 3 10.2). Before the streams were
split (stop 21), seed 0 gave last 3 13.4 from -17.7 and seed 1 ~35 from -25.6. Deterministic on CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from romi.artifacts import ArtifactStore
from romi.config import RunConfig, build_run_config
from romi.data.make import make_dataset
from romi.pipeline import Run

pytestmark = pytest.mark.slow


def test_romi_bcq_improves_on_maze2d_umaze_dense(isolated_minari_store: Path, tmp_path: Path) -> None:
    """A short ROMI-BCQ run on a 100k-step maze2d-umaze dataset beats the untrained policy clearly.

    Plain BCQ runs on the same data for the same steps and its curve is printed beside ROMI-BCQ's, so
    the gap between them is visible in the CI log; the bar is on ROMI-BCQ against the untrained policy
    (at 6k steps the gap between the two methods is not reliable enough to assert).
    """
    # The Minari recipe's data, on which the numbers in the module docstring were measured; the test's bar
    # has not been measured on the (default) D4RL recipe's data yet.
    make_dataset("maze2d-umaze-dense", steps=100_000, seed=3, ref_episodes=5, overwrite=True, recipe="minari")
    common = {"gradient_steps": 6_000, "eval": {"every": 1_000, "episodes": 10, "last_k": 3},
              "data_recipe": "minari"}
    romi = build_run_config("maze2d-umaze-dense", "ROMI-BCQ", seed=0, profile="quick", overrides={
        **common, "dynamics": {"max_epochs": 10, "batches_per_epoch": 100}, "imagination": {"buffer_size": 50_000},
    })
    bcq = build_run_config("maze2d-umaze-dense", "BCQ", seed=0, profile="quick", overrides=common)
    # One thread, as a Tune trial has: float sums then match the measured runs on any machine of this kind.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores, start = _train_and_score(romi, tmp_path)
        bcq_scores, _ = _train_and_score(bcq, tmp_path)
    finally:
        torch.set_num_threads(threads)

    assert len(scores) == 6 and all(np.isfinite(scores)) and len(bcq_scores) == 6
    last = float(np.mean(scores[-3:]))
    print(f"last 3 mean (D4RL refs): ROMI-BCQ {last:.1f}, BCQ {np.mean(bcq_scores[-3:]):.1f}")
    assert last > start + 15, f"no improvement over the untrained policy ({start:.1f}): {scores}"


def _train_and_score(config: RunConfig, tmp_path: Path) -> tuple[list[float], float]:
    """Scores normalised with D4RL's refs: fixed constants, so the bar does not move with the local refs."""
    run = Run(config, ArtifactStore(tmp_path / "artifacts"))
    start = run.evaluate().score  # the untrained agent, on the same evaluation protocol
    scores = [record.score for record in run.train()]
    print(f"{config.method}: untrained {start:.1f}; scores at 1k..6k steps {[round(s, 1) for s in scores]}")
    return scores, start
