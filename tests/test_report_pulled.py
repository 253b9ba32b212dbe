"""Results as users pull them from a cluster: without datasets or checkpoints, read in job logs and pipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from romi.analysis import load_results
from romi.cli import app

TASK = "maze2d-umaze-sparse"


def _trial(root: Path, method: str, seed: int, steps: list[int]) -> None:
    trial = root / f"{TASK}_{method}_seed{seed}"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps(
        {"task": TASK, "method": method, "seed": seed, "profile": "quick", "sweep": "pulled"}))
    (trial / "result.json").write_text("".join(
        json.dumps({"task": TASK, "method": method, "seed": seed, "step": step, "score": 40.0 + seed + step / 100,
                    "score_local": 1.0, "return_mean": 1.0, "return_std": 0.0, "discrepancy": 0.1,
                    "steps_per_second": 30.0, "wall_time": 1.0}) + "\n" for step in steps))


def _pulled_sweep(root: Path) -> Path:
    """A sweep synced with `--exclude "*/checkpoint_*"`: trial results and the models' info, no data."""
    for method in ("ROMI-BCQ", "BCQ"):
        for seed in (0, 1):
            _trial(root, method, seed, [100, 200])
    _trial(root, "BCQ", 2, [])  # never reported an evaluation
    info = root / "artifacts" / "dynamics" / "somekey" / "info.json"
    info.parent.mkdir(parents=True)
    info.write_text("{}")
    return root


def test_step_stays_an_integer_column_when_a_trial_has_no_evaluations(tmp_path: Path) -> None:
    frame = load_results(str(_pulled_sweep(tmp_path / "pulled")))
    assert str(frame["step"].dtype) == "Int64"
    assert frame["step"].isna().sum() == 1 and frame["step"].dropna().tolist() == [100, 200] * 4


def test_report_without_the_dataset_writes_the_tables_and_skips_those_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine the results were pulled to has an empty Minari store (the session's may hold umaze).
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty-minari"))
    sweep = _pulled_sweep(tmp_path / "pulled")
    out = tmp_path / "out"
    # COLUMNS=80 is what rich assumes when stdout is not a terminal (job logs, pipes).
    result = CliRunner().invoke(app, ["report", str(sweep), "--out", str(out)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert (out / "table1.md").exists() and (out / "learning_curves.png").exists()
    assert "warning: skipped figure 3 and model accuracy for maze2d-umaze-sparse" in result.output
    assert "no dataset for task" in result.output
    assert not list(out.glob("figure3_*"))
    # Each table row stays on one line: the task and the paper's numbers at its far end together.
    rows = [line for line in result.output.splitlines() if line.startswith(f"| {TASK}")]
    assert rows and all(len(row) > 80 and row.rstrip().endswith("|") for row in rows)
