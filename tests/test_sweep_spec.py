"""Sweep files and the sweep's closing status table (no Ray needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from romi.config import build_run_config
from romi.errors import ConfigError, DatasetMissingError, UnknownTaskError
from romi.tune.spec import check_datasets, load_sweep
from romi.tune.sweep import trial_statuses

TUNE_CONFIGS = Path(__file__).resolve().parents[1] / "tune_configs"


@pytest.mark.parametrize(("name", "table", "methods"), [
    ("quick", 3, {"ROMI-BCQ", "FOMI-BCQ", "BCQ"}),
    ("reduced", 3, {"ROMI-BCQ", "FOMI-BCQ", "BCQ"}),
    ("table1", 1, {"ROMI-BCQ", "BCQ"}),
    ("table2", 2, {"ROMI-CQL", "CQL"}),
    ("table3", 3, {"ROMI-BCQ", "FOMI-BCQ", "BCQ"}),
    ("table4", 4, {"ROMI-BCQ", "ROMI-RBC-BCQ", "BCQ"}),
])
def test_every_shipped_sweep_file_validates(name: str, table: int, methods: set[str]) -> None:
    spec = load_sweep(TUNE_CONFIGS / f"{name}.yaml")
    assert spec.table == table and set(spec.methods) == methods and len(spec.seed_list) == 3
    configs = spec.trial_configs()
    assert len(configs) == len(spec.tasks) * len(spec.methods) * 3
    assert load_sweep(TUNE_CONFIGS / f"{name}.yaml", profile="quick").profile == "quick"
    if name == "reduced":  # the paper's settings but the budget: 100k steps, 4M buffer, 5k-step evaluations
        paper = build_run_config(spec.tasks[0], "ROMI-BCQ", 0, "paper")
        reduced = next(c for c in configs if c.method == "ROMI-BCQ")
        assert reduced.gradient_steps == 100_000 and paper.gradient_steps == 1_000_000
        assert reduced.model_dump(exclude={"gradient_steps", "profile", "seed"}) == paper.model_dump(
            exclude={"gradient_steps", "profile", "seed"})


@pytest.mark.parametrize(("text", "error", "needle"), [
    ("tasks: [maze2d-umaze-sparse]\nmethods: [BCQ]\nsedes: 3\n", ConfigError, "sedes"),
    ("tasks: [maze2d-umaze-sparse]\nmethods: [BQC]\n", ConfigError, "methods"),
    ("tasks: [maze2d-umaz]\nmethods: [BCQ]\n", UnknownTaskError, "maze2d-umaz"),
    ("tasks: [maze2d-umaze-sparse]\nmethods: [BCQ]\noverrides: {bcq: {batch_size: -1}}\n", ConfigError,
     "batch_size"),
    ("tasks: [maze2d-umaze-sparse\n", ConfigError, "not valid YAML"),
])
def test_bad_sweep_files_name_the_problem(tmp_path: Path, text: str, error: type[Exception], needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(error, match=needle):
        load_sweep(path)


def test_missing_datasets_are_listed_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    spec = load_sweep(TUNE_CONFIGS / "table3.yaml")
    with pytest.raises(DatasetMissingError, match=f"{len(spec.tasks)} of {len(spec.tasks)} tasks"):
        check_datasets(spec)


def _result(task: str, method: str, seed: int, metrics: dict | None, error: Exception | None = None):
    config = {"task": task, "method": method, "seed": seed} if metrics is not None or error else None
    return SimpleNamespace(config=config, metrics=metrics, error=error)


def test_trial_statuses_tell_done_unfinished_failed_and_unstarted_apart() -> None:
    spec = load_sweep(TUNE_CONFIGS / "quick.yaml")  # 10k steps per trial
    task = spec.tasks[0]
    grid = [
        _result(task, "ROMI-BCQ", 0, {"step": 10_000, "score": 55.0}),
        _result(task, "BCQ", 0, {"step": 5_000, "score": 12.0}),
        _result(task, "FOMI-BCQ", 0, {"step": 2_500, "score": 3.0}, error=RuntimeError("boom")),
        _result(task, "BCQ", 1, None),  # an interrupted sweep lists unstarted trials without config
    ]
    rows = {(r.method, r.seed): r for r in trial_statuses(spec, grid)}
    assert len(rows) == 9
    assert rows["ROMI-BCQ", 0].status == "done" and rows["ROMI-BCQ", 0].score == 55.0
    assert rows["BCQ", 0].status == "unfinished" and rows["BCQ", 0].step == 5_000
    assert rows["FOMI-BCQ", 0].status == "error"
    assert rows["BCQ", 1].status == "not started" and rows["BCQ", 1].score is None
    assert sum(r.status == "not started" for r in rows.values()) == 6
