"""The Ray layer: parallel imagination actors and Tune sweeps, on a small local (multi-node) Ray."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny import TINY_TRIAL_OVERRIDES as TINY_OVERRIDES

from romi.config import DynamicsConfig, RolloutPolicyConfig
from romi.imagination.rollout import BufferRequest, build_buffer_in_process, shard_plan
from romi.imagination.workers import RayBufferBuilder
from romi.models.dynamics import DynamicsModel
from romi.models.rollout_policy import build_rollout_policy

pytestmark = pytest.mark.ray



@pytest.fixture(scope="module")
def ray_cluster(isolated_minari_store: Path):
    """A two-node local cluster (2 CPUs each), no dashboard, small object stores."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "object_store_memory": 150 * 1024**2})
    cluster.add_node(num_cpus=2, object_store_memory=150 * 1024**2)
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _model_and_policy():
    config = DynamicsConfig(hidden_dim=16, hidden_layers=2, weight_decays=(0.0, 0.0, 0.0), ensemble_size=3,
                            num_elites=2)
    torch.manual_seed(0)
    model = DynamicsModel(4, 2, config, "reverse").eval()
    policy = build_rollout_policy("uniform", 4, 2, 1.0, RolloutPolicyConfig())
    return model, policy


def _build(builder, plan):
    model, policy = _model_and_policy()
    pool = torch.as_tensor(np.random.default_rng(0).normal(size=(300, 4)), dtype=torch.float32)
    return builder(BufferRequest(model, policy, pool, None, plan, 5, "maze2d", None, 200))


def test_buffer_is_the_same_for_any_number_of_workers(ray_cluster) -> None:
    plan = shard_plan(6000, 1000, base_seed=11)
    reference = _build(build_buffer_in_process, plan)
    for workers in (1, 2, 3):
        buffer = _build(RayBufferBuilder(workers, log=lambda m: None), plan)
        assert len(buffer) == 6000
        assert torch.equal(buffer.observations, reference.observations)
        assert torch.equal(buffer.rewards, reference.rewards)


def test_a_killed_worker_is_restarted_and_the_buffer_is_complete(ray_cluster) -> None:
    import ray

    plan = shard_plan(300_000, 5000, base_seed=5)
    reference = _build(build_buffer_in_process, plan)
    killed: list[int] = []

    def kill_one_soon(workers) -> None:
        pid = ray.get(workers[0].pid.remote())

        def kill() -> None:
            time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        threading.Thread(target=kill, daemon=True).start()

    class KillingBuilder(RayBufferBuilder):
        """Kills a worker once the actors exist, before any shard is submitted (their handles are set
        by then: the first `generate` call is submitted after `workers` is filled)."""

        @property
        def workers(self) -> list:
            return self._workers

        @workers.setter
        def workers(self, handles: list) -> None:
            self._workers = handles
            if handles:
                kill_one_soon(handles)

    builder = KillingBuilder(2, log=lambda m: None)
    buffer = _build(builder, plan)
    assert killed, "the worker was not killed"
    assert len(buffer) == 300_000
    assert torch.equal(buffer.observations, reference.observations)
    pids = {s["pid"] for s in builder.stats}
    assert len(pids) == 3, "a restarted process finished the killed worker's shards"


@pytest.fixture(scope="module")
def tiny_sweep_file(tmp_path_factory: pytest.TempPathFactory, umaze_dataset: str) -> Path:
    import yaml

    path = tmp_path_factory.mktemp("sweeps") / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "tasks": [umaze_dataset], "methods": ["ROMI-BCQ", "BCQ"], "seeds": 1, "profile": "quick",
        "overrides": TINY_OVERRIDES, "resources": {"cpu": 1, "rollout_workers": 1},
    }))
    return path


def _result_lines(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def test_a_plan_only_sweep_prints_the_plan_and_writes_nothing(ray_cluster, tiny_sweep_file, tmp_path) -> None:
    from romi.tune.spec import load_sweep
    from romi.tune.sweep import run_sweep

    lines: list[str] = []
    assert run_sweep(load_sweep(tiny_sweep_file), str(tmp_path / "storage"), address="auto", plan_only=True,
                     log=lines.append) == []
    plan = next(line for line in lines if line.startswith("plan: "))
    assert plan.startswith("plan: 2 trials, 200 gradient steps, ") and "1 models to train" in plan
    assert not any(line.startswith("sweep: ") for line in lines), "no trial ran"
    assert not (tmp_path / "storage").exists(), "no manifest, no experiment directory"


def test_tiny_sweep_end_to_end_then_resume_recomputes_nothing(ray_cluster, tiny_sweep_file, tmp_path) -> None:
    from romi.analysis.results import load_results
    from romi.tune.spec import load_sweep
    from romi.tune.sweep import run_sweep

    spec = load_sweep(tiny_sweep_file)
    lines: list[str] = []
    grid = run_sweep(spec, str(tmp_path), address="auto", log=lines.append)
    assert len(grid) == 2 and all(r.error is None for r in grid)
    # The plan before the first trial, then one progress line at a time (Tune's table is not printed).
    plan = next(line for line in lines if line.startswith("plan: "))
    assert plan.startswith("plan: 2 trials, 200 gradient steps, ") and "expected duration ~" in plan
    assert "measured gradient steps/s per trial: BCQ " in plan and "1 models to train" in plan
    progress = [line for line in lines if line.startswith("sweep: ")]
    assert lines.index(plan) < lines.index(progress[0])
    assert progress[-1].startswith("sweep: 2 done, 0 running, 0 pending | 200 / 200 steps (100%)")
    assert progress[-1].endswith("ETA 0 s")
    trials = sorted((tmp_path / "tiny").glob("maze2d-*"))
    assert [t.name for t in trials] == ["maze2d-umaze-sparse_BCQ_seed0", "maze2d-umaze-sparse_ROMI-BCQ_seed0"]
    for trial in trials:
        assert [r["step"] for r in _result_lines(trial)] == [50, 100]
    assert list((tmp_path / "tiny" / "artifacts" / "dynamics").glob("*/info.json")), "models live with the sweep"
    frame = load_results(str(tmp_path / "tiny"))
    assert set(frame["method"]) == {"ROMI-BCQ", "BCQ"} and len(frame) == 4
    assert (frame["status"] == "finished").all()

    from romi.analysis.report import make_report

    report = make_report(str(tmp_path / "tiny"), out=tmp_path / "report")
    names = {f.name for f in report.files}
    assert {"figure3_maze2d-umaze-sparse.png", "model_accuracy_maze2d-umaze-sparse.png", "table3.md",
            "claims.md", "imagined_maze2d-umaze-sparse.md"} <= names
    assert all(f.stat().st_size > 0 for f in report.files)

    # Exported, the trials keep their policies' Figure 3 episodes (the same as from the checkpoint), so
    # the report, figures included, is rebuilt from the export and its models alone.
    from romi.analysis.export import export_finished, export_models
    from romi.analysis.plots import trained_policy_episodes
    from romi.analysis.policy_episodes import FIGURE3_EPISODES, PolicyEpisodes
    from romi.layout import POLICY_EPISODES_FILE

    exported = export_finished(str(tmp_path / "tiny"), tmp_path / "kept" / "trials")
    export_models(str(tmp_path / "tiny"), tmp_path / "kept" / "models")
    assert len(exported.written) == 2 and not exported.notes
    for trial in trials:
        kept = PolicyEpisodes.load(tmp_path / "kept" / "trials" / trial.name / POLICY_EPISODES_FILE)
        live = trained_policy_episodes(trial)
        assert live is not None and kept.step == live.step == 100 and len(kept.trajectories) == FIGURE3_EPISODES
        np.testing.assert_array_equal(kept.returns, live.returns)
        # The config it ran, as its checkpoint saved it (not its sweep's overrides resolved again by this code).
        from romi.analysis.results import latest_run_state
        from romi.storage import filesystem

        saved = latest_run_state(*filesystem(str(trial)))["config"]
        assert json.loads((tmp_path / "kept" / "trials" / trial.name / "config.json").read_text()) == json.loads(saved)
        for a, b in zip(kept.trajectories, live.trajectories, strict=True):
            np.testing.assert_array_equal(a, b)
    rebuilt = make_report(str(tmp_path / "kept" / "trials"), out=tmp_path / "rebuilt",
                          models=tmp_path / "kept" / "models")
    assert {"figure3_maze2d-umaze-sparse.png", "model_accuracy_maze2d-umaze-sparse.png",
            "imagined_maze2d-umaze-sparse.csv", "policy_ends_maze2d-umaze-sparse.csv",
            } <= {f.name for f in rebuilt.files}
    for table in ("imagined_maze2d-umaze-sparse.csv", "model_accuracy_maze2d-umaze-sparse.csv",
                  "policy_ends_maze2d-umaze-sparse.csv"):  # episodes from the checkpoint, then from the export
        assert (tmp_path / "rebuilt" / table).read_text() == (tmp_path / "report" / table).read_text(), (
            f"{table}: the same models, the same numbers")
    accuracy = pd.read_csv(tmp_path / "rebuilt" / "model_accuracy_maze2d-umaze-sparse.csv")
    assert set(zip(accuracy["direction"], accuracy["seed"], strict=True)) == {("reverse", 0)}  # BCQ has none
    assert list(accuracy["steps"]) == [1, 2, 3, 4, 5] and (accuracy["p10"] <= accuracy["median"]).all()
    # A second finished seed (here: seed 0's exports relabelled) gets its own Figure 3.
    import shutil

    for trial in trials:
        twin = tmp_path / "kept" / "trials" / trial.name.replace("seed0", "seed1")
        shutil.copytree(tmp_path / "kept" / "trials" / trial.name, twin)
        config = json.loads((twin / "config.json").read_text())
        (twin / "config.json").write_text(json.dumps({**config, "seed": 1}))
    two_seeds = make_report(str(tmp_path / "kept" / "trials"), out=tmp_path / "two",
                            models=tmp_path / "kept" / "models")
    assert {"figure3_maze2d-umaze-sparse.png", "figure3_maze2d-umaze-sparse_seed1.png"} <= {
        f.name for f in two_seeds.files}

    before = {t.name: (t / "result.json").read_text() for t in trials}
    lines.clear()
    run_sweep(spec, str(tmp_path), address="auto", resume=True, log=lines.append)
    plan = next(line for line in lines if line.startswith("plan: "))
    assert plan.startswith("plan: 0 trials (2 of 2 already finished), 0 gradient steps")
    assert {t.name: (t / "result.json").read_text() for t in trials} == before, "finished trials were recomputed"

    # A new machine: empty storage, the exports kept. The finished exported trial is not run again; the
    # other (as if it had not been exported) runs alone, with the same numbers.
    from romi.analysis.export import finished_exports

    kept = finished_exports(spec.trial_configs(), tmp_path / "kept" / "trials")
    assert kept == ["maze2d-umaze-sparse_ROMI-BCQ_seed0", "maze2d-umaze-sparse_BCQ_seed0"]
    elsewhere = spec.model_copy(update={"exclude": tuple(kept[:1])})
    lines.clear()
    grid = run_sweep(elsewhere, str(tmp_path / "machine2"), address="auto", log=lines.append)
    assert len(grid) == 1 and grid[0].config["method"] == "BCQ" and grid[0].error is None
    assert next(line for line in lines if line.startswith("plan: ")).startswith("plan: 1 trials, 100 gradient steps")
    assert [t.name for t in (tmp_path / "machine2" / "tiny").glob("maze2d-*")] == ["maze2d-umaze-sparse_BCQ_seed0"]
    again = load_results(str(tmp_path / "machine2" / "tiny"))
    first = frame[frame["method"] == "BCQ"]
    assert again["score"].tolist() == first["score"].tolist(), "the same config and seed give the same numbers"
    everything_kept = spec.model_copy(update={"exclude": tuple(kept)})
    assert run_sweep(everything_kept, str(tmp_path / "machine3"), log=lines.append) == []


def test_a_failing_trial_resumes_from_its_checkpoint(ray_cluster, tiny_sweep_file, tmp_path) -> None:
    from romi.tune.spec import load_sweep
    from romi.tune.sweep import build_tuner, check_datasets

    spec = load_sweep(tiny_sweep_file).model_copy(update={"methods": ("BCQ",), "name": "flaky"})
    check_datasets(spec)
    grid = build_tuner(spec, str(tmp_path), extra={"fail_once_at_step": 50}).fit()
    assert grid[0].error is None
    from romi.analysis.results import load_results

    results = load_results(str(tmp_path / "flaky"))
    assert results["step"].tolist() == [50, 100], "no repeated or missing evaluations"
    saved = sorted((tmp_path / "flaky" / "maze2d-umaze-sparse_BCQ_seed0").glob("checkpoint_*/evaluations.jsonl"))
    assert [json.loads(line)["step"] for line in saved[-1].read_text().splitlines()] == [50, 100]
    assert any(tmp_path.glob("flaky/artifacts/.failed-once-*")), "the failure was injected"


def test_an_interrupted_sweep_resumes_the_rest(ray_cluster, tiny_sweep_file, tmp_path) -> None:
    """Ctrl-C the driver once the first trial has finished; --resume runs the rest, keeps the first."""
    import subprocess
    import sys

    from romi.tune.spec import load_sweep
    from romi.tune.sweep import build_tuner

    script = (
        "import sys; from romi.tune.spec import load_sweep; from romi.tune.sweep import run_sweep; "
        f"run_sweep(load_sweep({str(tiny_sweep_file)!r}).model_copy(update={{'name': 'interrupted'}}), "
        f"{str(tmp_path)!r}, address={ray_cluster.address!r}, max_concurrent=1)"
    )
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = tmp_path / "interrupted"
    deadline = time.time() + 180
    first: Path | None = None
    while first is None and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
        for trial in root.glob("maze2d-*"):
            if (trial / "result.json").exists() and len(_result_lines(trial)) == 2:
                first = trial
    assert first is not None, "the first trial never finished"
    driver.send_signal(signal.SIGINT)
    driver.wait(timeout=120)
    finished_text = (first / "result.json").read_text()
    from romi.analysis.results import load_results, summarize_trials

    # The report sees both trials of the interrupted sweep, the unfinished one included (from the manifest
    # when it never started), each with its true status.
    statuses = dict(summarize_trials(load_results(str(root))).set_index("trial")["status"])
    assert len(statuses) == 2 and statuses[first.name] == "finished", statuses
    assert set(statuses.values()) - {"finished"} <= {"stopped", "not started"}

    spec = load_sweep(tiny_sweep_file).model_copy(update={"name": "interrupted"})
    grid = build_tuner(spec, str(tmp_path), resume=True).fit()
    assert len(grid) == 2 and all(r.error is None for r in grid)
    assert (first / "result.json").read_text() == finished_text, "the finished trial was recomputed"
    for trial in root.glob("maze2d-*"):
        assert [r["step"] for r in _result_lines(trial)] == [50, 100]


def test_a_trial_bigger_than_the_local_cluster_is_refused_before_any_trial(ray_cluster, tiny_sweep_file,
                                                                           tmp_path) -> None:
    """Tune would leave such trials PENDING forever; the preflight names the setting (nodes have 2 CPUs)."""
    from romi.errors import PreflightError
    from romi.tune.spec import load_sweep
    from romi.tune.sweep import run_sweep

    spec = load_sweep(tiny_sweep_file)
    big = spec.model_copy(update={"resources": spec.resources.model_copy(update={"cpu": 3.0})})
    with pytest.raises(PreflightError, match="largest node has 2") as info:
        run_sweep(big, str(tmp_path), address=None)
    assert "resources.cpu" in (info.value.hint or "")
    assert not list(tmp_path.iterdir()), "nothing written"
