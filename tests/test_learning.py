"""Slow learning tests (`pytest -m slow`): the method actually learns on real, small data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from romi.config import build_run_config
from romi.data.make import make_dataset
from romi.train import train_run

pytestmark = pytest.mark.slow


@pytest.mark.xfail(strict=False, reason="open: in this short quick-profile setting ROMI-BCQ's score is still noisy "
                   "(a 6k-step run scored -15, 3, 4, -17, 1, 0); see the ROMI core issue note")
def test_romi_bcq_improves_on_maze2d_umaze(isolated_minari_store: Path, tmp_path: Path) -> None:
    """A short ROMI-BCQ run on a 100k-step maze2d-umaze dataset beats its first evaluation."""
    make_dataset("maze2d-umaze-sparse", steps=100_000, seed=3, ref_episodes=5, overwrite=True)
    config = build_run_config("maze2d-umaze-sparse", "ROMI-BCQ", seed=0, profile="quick", overrides={
        "gradient_steps": 6_000, "eval": {"every": 1_000, "episodes": 5, "last_k": 3},
        "dynamics": {"max_epochs": 10, "batches_per_epoch": 100}, "imagination": {"buffer_size": 50_000},
    })
    summary = train_run(config, tmp_path / "run", tmp_path / "artifacts", log=lambda m: None)

    scores = [json.loads(line)["score"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["last_k_score"] > scores[0] + 10, f"no improvement: {scores}"
