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
    ("reduced-dense", 3, {"ROMI-BCQ", "FOMI-BCQ", "BCQ"}),
    ("table1", 1, {"ROMI-BCQ", "BCQ"}),
    ("table2", 2, {"ROMI-CQL", "CQL"}),
    ("table3", 3, {"ROMI-BCQ", "FOMI-BCQ", "BCQ"}),
    ("table4", 4, {"ROMI-BCQ", "ROMI-RBC-BCQ", "BCQ"}),
    ("baselines-d4rl", 3, {"BCQ"}),
    ("baselines-minari", 3, {"BCQ"}),
])
def test_every_shipped_sweep_file_validates(name: str, table: int, methods: set[str]) -> None:
    spec = load_sweep(TUNE_CONFIGS / f"{name}.yaml")
    assert spec.table == table and set(spec.methods) == methods and len(spec.seed_list) == 3
    configs = spec.trial_configs()
    assert len(configs) == len(spec.tasks) * len(spec.methods) * 3
    assert load_sweep(TUNE_CONFIGS / f"{name}.yaml", profile="quick").profile == "quick"
    recipes = {c.data_recipe for c in configs if c.task.startswith("maze2d")}
    assert recipes <= ({"minari"} if name == "baselines-minari" else {"d4rl"}), "the paper's data unless named"
    if name.startswith("reduced"):  # the paper's settings but the budget: 100k steps, 4M buffer, 5k-step evaluations
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
    assert rows["ROMI-BCQ", 0].status == "finished" and rows["ROMI-BCQ", 0].score == 55.0
    assert rows["BCQ", 0].status == "stopped" and rows["BCQ", 0].step == 5_000
    assert rows["FOMI-BCQ", 0].status == "failed"
    assert rows["BCQ", 1].status == "not started" and rows["BCQ", 1].score is None
    assert sum(r.status == "not started" for r in rows.values()) == 6


def test_excluded_trials_leave_the_grid_and_the_tune_cells() -> None:
    from romi.tune.sweep import trial_cells

    spec = load_sweep(TUNE_CONFIGS / "reduced.yaml")
    task = spec.tasks[0]
    done = f"{task}_ROMI-BCQ_seed0"
    narrowed = spec.model_copy(update={"exclude": (done,)})
    names = [f"{c.task}_{c.method}_seed{c.seed}" for c in narrowed.trial_configs()]
    assert len(names) == 8 and done not in names
    cells = trial_cells(narrowed)
    assert [f"{c['task']}_{c['method']}_seed{c['seed']}" for c in cells] == names
    assert {"task": task, "method": "ROMI-BCQ", "seed": 1} in cells


def test_a_sweep_file_cannot_exclude_a_trial_it_does_not_have(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text("tasks: [maze2d-umaze-sparse]\nmethods: [BCQ]\nseeds: 2\n"
                    "exclude: [maze2d-umaze-sparse_BCQ_seed1, maze2d-umaze-sparse_BCQ_seed7]\n")
    with pytest.raises(ConfigError, match="maze2d-umaze-sparse_BCQ_seed7, not a trial of this sweep"):
        load_sweep(path)


def _export(directory: Path, config, steps: int) -> Path:
    """A trial directory as `romi export` writes it (config, then summary last)."""
    import json

    folder = directory / f"{config.task}_{config.method}_seed{config.seed}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(config.to_json())
    (folder / "summary.json").write_text(json.dumps({"steps": steps, "final_score": 1.0}))
    return folder


def test_finished_exports_are_the_same_trials_with_every_step_done(tmp_path: Path) -> None:
    from romi.analysis.export import finished_exports

    spec = load_sweep(TUNE_CONFIGS / "reduced.yaml")
    configs = {(c.method, c.seed): c for c in spec.trial_configs()}
    _export(tmp_path, configs["ROMI-BCQ", 0], 100_000)
    _export(tmp_path, configs["BCQ", 2], 100_000)
    _export(tmp_path, configs["FOMI-BCQ", 1], 55_000)  # not finished: runs again
    (tmp_path / f"{spec.tasks[0]}_BCQ_seed1").mkdir()  # no summary.json: nothing was kept
    assert finished_exports(spec.trial_configs(), tmp_path) == [
        f"{spec.tasks[0]}_ROMI-BCQ_seed0", f"{spec.tasks[0]}_BCQ_seed2"]


def test_an_export_of_the_same_trial_with_another_config_is_refused(tmp_path: Path) -> None:
    from romi.analysis.export import finished_exports

    spec = load_sweep(TUNE_CONFIGS / "reduced.yaml")
    config = spec.trial_configs()[0]
    other = config.model_copy(update={"model_share": 0.5})
    _export(tmp_path, other, 100_000)
    with pytest.raises(ConfigError, match=r"another config \(model_share: 0.5 -> 0.7\)"):
        finished_exports(spec.trial_configs(), tmp_path)
    (tmp_path / f"{config.task}_{config.method}_seed0" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        finished_exports(spec.trial_configs(), tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        finished_exports(spec.trial_configs(), tmp_path / "nowhere")


def test_the_committed_reduced_exports_are_skipped_by_the_reduced_sweep() -> None:
    """The repository's own case: the reduced run's finished trials match the sweep files it ran (on the
    Minari recipe's data, which configs saved before `data_recipe` existed are read as); the shipped
    reduced sweep, on D4RL's recipe, is another run and would refuse to mistake them for its own."""
    from romi.analysis.export import finished_exports
    from romi.errors import ConfigError

    run = Path(__file__).resolve().parents[1] / "analysis" / "results" / "reduced"
    # Its sweep files are records of what ran at 9142e54, before recipes had names: the Minari one's data.
    configs = [c.model_copy(update={"data_recipe": "minari"})
               for c in load_sweep(run / "sweeps" / "reduced-seed0.yaml").trial_configs()]
    assert "maze2d-umaze-sparse_FOMI-BCQ_seed0" in finished_exports(configs, run / "trials")
    with pytest.raises(ConfigError, match="data_recipe: 'minari' -> 'd4rl'"):
        finished_exports(load_sweep(TUNE_CONFIGS / "reduced.yaml").trial_configs(), run / "trials")


def test_romi_sweep_skips_the_trials_finished_in_exported(tmp_path: Path) -> None:
    """On a new machine the committed exports stand in for the lost storage: nothing finished runs again."""
    import ray
    import yaml
    from typer.testing import CliRunner

    from romi.cli import app

    kept = Path(__file__).resolve().parents[1] / "analysis" / "results" / "reduced" / "trials"
    path = tmp_path / "seed0.yaml"
    path.write_text(yaml.safe_dump({"tasks": ["maze2d-umaze-sparse"], "methods": ["ROMI-BCQ"], "seeds": [0],
                                    "profile": "reduced", "resources": {"cpu": 1, "rollout_workers": 0},
                                    "overrides": {"data_recipe": "minari"}}))
    result = CliRunner().invoke(app, ["sweep", str(path), "--storage", str(tmp_path / "s"), "--exported", str(kept)],
                                env={"COLUMNS": "300"})
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "1 trial(s) finished in" in text and "not run again: maze2d-umaze-sparse_ROMI-BCQ_seed0" in text
    assert "nothing to run" in text
    assert not ray.is_initialized() and not (tmp_path / "s").exists()


def test_the_reduced_runs_narrowed_sweep_files_are_the_reduced_sweep_exactly() -> None:
    """analysis/results/reduced/sweeps/ holds the grids run after a machine change (the pinned code has no
    --exported): with the trial finished before it, they cover the reduced sweep, with its configs. A file
    may list a trial again only when it is a re-run after another machine change (the seed-2 file), and no
    trial is exported from two sweeps: nothing finished runs twice."""
    import json

    results = Path(__file__).resolve().parents[1] / "analysis" / "results" / "reduced"
    spec = load_sweep(TUNE_CONFIGS / "reduced.yaml")
    # The run was the reduced sweep on the Minari recipe's data (the only recipe then).
    reduced = {f"{c.task}_{c.method}_seed{c.seed}": c.model_copy(update={"data_recipe": "minari"})
               for c in spec.trial_configs()}
    reruns = {"reduced-romi-fomi-seed2"}  # after the 2026-12-05 machine change
    covered = ["maze2d-umaze-sparse_ROMI-BCQ_seed0"]  # finished before the change (trials/)
    grids: dict[str, set[str]] = {"reduced": {"maze2d-umaze-sparse_ROMI-BCQ_seed0"}}
    for path in sorted((results / "sweeps").glob("*.yaml")):
        grids[path.stem] = set()
        for config in load_sweep(path).trial_configs():
            config = config.model_copy(update={"data_recipe": "minari"})  # what they meant at 9142e54
            name = f"{config.task}_{config.method}_seed{config.seed}"
            grids[path.stem].add(name)
            assert config == reduced[name], f"{path.name}: {name} differs from the reduced sweep's"
            if path.stem not in reruns:
                covered.append(name)
    assert sorted(covered) == sorted(reduced)
    assert reruns <= set(grids) and all(grids[r] <= set(reduced) for r in reruns)
    for run in sorted((results / "trials").glob("*_seed*")):
        sweep = Path(json.loads((run / "summary.json").read_text())["exported_from"]).parent.name
        assert run.name in grids[sweep], f"{run.name} exported from {sweep}, whose grid does not hold it"
        assert not any(run.name in grids[r] for r in reruns if r != sweep), f"{run.name} would run twice"


def test_a_local_plan_starts_no_ray(tmp_path: Path, umaze_dataset: str) -> None:
    """`romi sweep --plan` on the local instance reads the machine's resources instead of starting Ray
    (a second, not Ray's ~10 s), and still sizes the plan by them: 2 one-CPU trials on 2 CPUs, 2 at a time."""
    import ray
    import yaml
    from tiny import TINY_TRIAL_OVERRIDES
    from typer.testing import CliRunner

    from romi.cli import app

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"tasks": [umaze_dataset], "methods": ["BCQ"], "seeds": 2, "profile": "quick",
                                    "overrides": TINY_TRIAL_OVERRIDES, "resources": {"cpu": 1, "rollout_workers": 0}}))
    result = CliRunner().invoke(app, ["sweep", str(path), "--storage", str(tmp_path / "s"), "--plan",
                                      "--num-cpus", "2"], env={"COLUMNS": "300"})
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "plan: 2 trials, " in text and "2 at a time" in text
    assert not ray.is_initialized() and not (tmp_path / "s").exists()
    one = CliRunner().invoke(app, ["sweep", str(path), "--storage", str(tmp_path / "s"), "--plan", "--num-cpus", "1"],
                             env={"COLUMNS": "300"})
    assert one.exit_code == 0 and "1 at a time" in " ".join(one.output.split()), one.output


def test_local_resources_count_this_processs_cores() -> None:
    import os

    from romi.tune.preflight import local_resources

    mine = local_resources()
    assert mine.total_cpu == mine.max_node_cpu == len(os.sched_getaffinity(0)) and mine.total_gpu >= 0
    assert local_resources(num_cpus=3).total_cpu == 3
