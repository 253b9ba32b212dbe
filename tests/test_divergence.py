"""Critic divergence is measured in every run and flagged everywhere a result is shown (`romi.divergence`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from romi.analysis import load_results, paper_table, summarize_trials
from romi.analysis.claims import check_claims
from romi.analysis.report import make_report
from romi.config import build_run_config
from romi.divergence import MARK, ValueBound, diverged_at
from romi.train import train_run
from romi.tune.plan import Counts, format_progress

TASK = "maze2d-umaze-sparse"


# ---- the bound and the rule ---------------------------------------------------------------------
def test_value_bound_of_sparse_maze_rewards_is_zero_to_a_hundred() -> None:
    assert ValueBound.of(0.0, 1.0, 0.99) == ValueBound(0.0, pytest.approx(100.0))
    assert ValueBound.of(-2.0, 3.0, 0.9) == ValueBound(pytest.approx(-20.0), pytest.approx(30.0))
    assert ValueBound.of(0.5, 1.0, 0.5) == ValueBound(0.0, 2.0), "0 is reachable after a terminal state"
    assert ValueBound.of(0.0, 1.0, 1.0).high == math.inf
    with pytest.raises(ValueError):
        ValueBound.of(1.0, 0.0, 0.99)


@given(st.floats(-10, 10), st.floats(0, 10), st.floats(0.01, 0.999))
def test_the_bound_contains_every_discounted_return_of_its_rewards(low: float, width: float, gamma: float) -> None:
    bound = ValueBound.of(low, low + width, gamma)
    rng = np.random.default_rng(0)
    rewards = rng.uniform(low, low + width, size=(8, 200))
    ends = rng.integers(1, 200, size=8)  # terminal after `end` steps: nothing more is earned
    for row, end in zip(rewards, ends, strict=True):
        value = float((row[:end] * gamma ** np.arange(end)).sum())
        assert bound.low - 1e-9 <= value <= bound.high + 1e-9


def test_diverged_at_is_the_first_evaluation_outside_the_bound_and_sticks() -> None:
    bound = {"value_bound_low": 0.0, "value_bound_high": 100.0}
    records = [{"step": s, "train/q_mean": q, **bound} for s, q in ((5, 10.0), (10, 99.0), (15, 150.0), (20, 90.0))]
    assert diverged_at(records) == 15
    assert diverged_at(records[:2]) is None
    assert diverged_at([{"step": 5, "train/q_mean": -3.0, **bound}]) == 5, "below the lower bound counts too"
    old = [{"step": 5, "train/q_mean": 150.0}]  # written before bounds were recorded
    assert diverged_at(old) is None and diverged_at(old, ValueBound(0.0, 100.0)) == 5


# ---- a run records it -----------------------------------------------------------------------------
class QLearner:
    """A learner that reports a mean Q of `growth` x its step (and acts by doing nothing)."""

    def __init__(self, growth: float) -> None:
        self.growth, self.step = growth, 0

    def update(self, batch: Any) -> dict[str, float]:
        self.step += 1
        return {"critic_loss": 1.0, "q_mean": self.growth * self.step}

    def act(self, observations: np.ndarray) -> np.ndarray:
        return np.zeros((*np.shape(observations)[:-1], 2), dtype=np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]


@pytest.mark.parametrize(("growth", "flagged"), [(4.0, 60), (0.1, None)])
def test_a_run_whose_q_passes_the_bound_is_flagged_in_its_records_and_summary(
        growth: float, flagged: int | None, umaze_dataset: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("romi.pipeline.make_agent", lambda *args, **kwargs: QLearner(growth))
    config = build_run_config(umaze_dataset, "BCQ", 0, "quick",
                              {"gradient_steps": 90, "eval": {"every": 30, "episodes": 1, "last_k": 1}})
    logs: list[str] = []
    summary = train_run(config, tmp_path / "run", tmp_path / "artifacts", log=logs.append)
    records = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    # maze2d-sparse rewards are 0/1 and gamma 0.99: Q must stay in [0, 100]; 4 x step averages 182 over steps 31-60.
    assert {(r["value_bound_low"], round(r["value_bound_high"], 6)) for r in records} == {(0.0, 100.0)}
    assert summary["diverged_at_step"] == flagged and summary["value_bound"] == [0.0, pytest.approx(100.0)]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["diverged_at_step"] == flagged
    assert any(line.startswith("value bound: Q in [0, 100]") for line in logs)


# ---- every reader shows it ------------------------------------------------------------------------
def _trial(root: Path, method: str, seed: int, q_per_step: float, final: float, bounded: bool = True) -> None:
    trial = root / f"{TASK}_{method}_seed{seed}"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({"task": TASK, "method": method, "seed": seed, "profile": "quick",
                                                   "sweep": "synthetic", "overrides": {}}))
    bound = {"value_bound_low": 0.0, "value_bound_high": 100.0} if bounded else {}
    lines = [json.dumps({
        "task": TASK, "method": method, "seed": seed, "step": step, "score": final, "score_local": final,
        "return_mean": 1.0, "return_std": 0.0, "discrepancy": 0.1, "steps_per_second": 1.0, "wall_time": 1.0,
        "train/q_mean": q_per_step * step, "done_fraction": step / 300, "dataset_id": "local/pointmaze/umaze-v0",
        "method_label": method, **bound}) for step in (100, 200, 300)]
    (trial / "result.json").write_text("\n".join(lines) + "\n")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "synthetic"
    for seed in (0, 1):
        _trial(root, "ROMI-BCQ", seed, 0.2, 120.0 + seed)  # Q 60 at the end: healthy
        _trial(root, "FOMI-BCQ", seed, 0.2, 20.0 + seed)
        _trial(root, "BCQ", seed, 0.4 + 0.2 * seed, 30.0 + seed)  # 120 at 300 / 120 at 200: past 100
    return root


def test_summary_tables_claims_and_trials_csv_flag_a_diverged_baseline(sweep: Path, tmp_path: Path) -> None:
    summary = summarize_trials(load_results(str(sweep))).set_index(["method", "seed"])
    assert summary.loc[("BCQ", 0), "diverged_at_step"] == 300 and summary.loc[("BCQ", 1), "diverged_at_step"] == 200
    assert summary.loc[("ROMI-BCQ", 0), ["diverged_at_step"]].isna().all()
    assert summary.loc[("BCQ", 1), "q_peak"] == pytest.approx(180.0)

    table = paper_table(load_results(str(sweep)), 3)
    shown = table.display("markdown")
    assert shown.loc[TASK, "BCQ"].endswith(MARK) and not shown.loc[TASK, "ROMI-BCQ"].endswith(MARK)
    assert "BCQ seeds 0, 1 (at 300, 200 steps" not in table.to_markdown()  # steps shown in thousands
    assert f"{MARK} diverged critic" in table.to_markdown() and "BCQ seeds 0, 1" in table.to_markdown()

    claims = check_claims(summarize_trials(load_results(str(sweep))), {3: table}).set_index("claim")
    over_bcq = claims.loc[claims.index.str.startswith("ROMI-BCQ scores above BCQ")].iloc[0]
    assert over_bcq["verdict"].startswith("not counted: BCQ diverged in 2 of 2 seeds")
    over_fomi = claims.loc[claims.index.str.startswith("ROMI-BCQ scores above FOMI-BCQ")].iloc[0]
    assert over_fomi["verdict"] == "holds", "a comparison between two healthy learners still counts"

    report = make_report(str(sweep), out=tmp_path / "report", figures=True)
    trials = (tmp_path / "report" / "trials.csv").read_text()
    assert "diverged_at_step" in trials.splitlines()[0]
    assert (tmp_path / "report" / "q_curves.png") in report.files


def test_records_from_before_the_bound_are_judged_by_the_tasks_reward_range(tmp_path: Path) -> None:
    _trial(tmp_path / "old", "BCQ", 0, 0.4, 30.0, bounded=False)
    summary = summarize_trials(load_results(str(tmp_path / "old")))
    assert summary["diverged_at_step"].iloc[0] == 300 and summary["bound_from"].iloc[0] == "task"


def test_the_sweep_progress_line_names_diverged_trials() -> None:
    counts = Counts(done=1, running=1, pending=0, failed=0, steps=150, total_steps=200)
    line = format_progress(counts, 60.0, 60.0, {"maze2d-umaze-sparse_BCQ_seed0": 55_000})
    assert line.endswith("| diverged: maze2d-umaze-sparse_BCQ_seed0 at step 55,000")
    assert "diverged" not in format_progress(counts, 60.0, 60.0, {})
