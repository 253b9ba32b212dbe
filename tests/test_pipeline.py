"""One run end to end (`romi train`'s path): every method, resume, skip, shared artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from romi.agents import learner_config
from romi.config import METHODS, build_run_config
from romi.train import train_run

TINY = {
    "gradient_steps": 60,
    "eval": {"every": 30, "episodes": 1, "last_k": 1},
    "dynamics": {"max_epochs": 2, "batches_per_epoch": 5, "hidden_dim": 32},
    "rollout_policy": {"iterations": 30, "cvae": {"hidden_dim": 32}, "rbc_hidden_dim": 32},
    "imagination": {"buffer_size": 3000, "shard_size": 1000},
    "bcq": {"actor_hidden": [32, 32], "critic_hidden": [32, 32], "vae": {"hidden_dim": 32}, "batch_size": 32},
    "cql": {"hidden": [32, 32], "batch_size": 32, "bc_steps": 10},
}


def _run(task: str, method: str, out: Path, artifacts: Path, seed: int = 0, **kwargs) -> tuple[dict, list[str]]:
    logs: list[str] = []
    config = build_run_config(task, method, seed, "quick", TINY)
    summary = train_run(config, out, artifacts, log=logs.append, **kwargs)
    return summary, logs


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_maze2d(method: str, umaze_dataset: str, tmp_path: Path) -> None:
    runs: list = []
    summary, _ = _run(umaze_dataset, method, tmp_path / "run", tmp_path / "artifacts",
                      on_eval=lambda record, run: runs.append(run))
    assert summary["steps"] == 60 and summary["method"] == method
    lines = (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [30, 60]
    assert (tmp_path / "run" / "summary.json").exists() and (tmp_path / "run" / "run.pt").exists()
    # Where the numbers were made: bit-for-bit reproducible on this kind of CPU only.
    from romi.nets import cpu_kind

    assert {json.loads(line)["cpu"] for line in lines} == {cpu_kind()} and summary["cpus"] == [cpu_kind()]
    assert cpu_kind().rsplit(", ", 1)[1] == torch.backends.cpu.get_cpu_capability()
    # The wiring itself, not log text: model rows reach the learner's batches in the configured share.
    run = runs[-1]
    batch_size = learner_config(run.config).batch_size
    assert run.sampler.num_model + run.sampler.num_real == batch_size
    if method.startswith(("ROMI", "FOMI")):
        assert run.config.model_share > 0 and run.sampler.num_model == round(run.config.model_share * batch_size)
        assert run.sampler.model is not None and len(run.sampler.model) == 3000
        assert len(run.sampler.sample()) == batch_size
    else:
        assert run.sampler.model is None and run.sampler.num_model == 0


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_hopper_random(method: str, hopper_dataset: str, tmp_path: Path) -> None:
    summary, _ = _run(hopper_dataset, method, tmp_path / "run", tmp_path / "artifacts")
    assert summary["dataset_id"] == "local/hopper/random-v0" and summary["steps"] == 60
    assert summary["method"] == method


def test_interrupted_run_resumes_exactly_and_finished_run_is_skipped(umaze_dataset: str, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    _run(umaze_dataset, "ROMI-BCQ", tmp_path / "straight", artifacts)
    straight = (tmp_path / "straight" / "evaluations.jsonl").read_text()

    def interrupt(record, run) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(umaze_dataset, "ROMI-BCQ", tmp_path / "resumed", artifacts, on_eval=interrupt)
    assert len((tmp_path / "resumed" / "evaluations.jsonl").read_text().splitlines()) == 1
    _, logs = _run(umaze_dataset, "ROMI-BCQ", tmp_path / "resumed", artifacts)
    assert any("resumed from" in line and "step 30" in line for line in logs)
    resumed = [json.loads(line) for line in (tmp_path / "resumed" / "evaluations.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in straight.splitlines()]
    strip = ("steps_per_second", "wall_time")
    assert [{k: v for k, v in r.items() if k not in strip} for r in resumed] == [
        {k: v for k, v in r.items() if k not in strip} for r in expected
    ], "a resumed run continues exactly as an uninterrupted one"
    _, logs = _run(umaze_dataset, "ROMI-BCQ", tmp_path / "resumed", artifacts)
    assert any("already finished" in line for line in logs)


def test_models_are_trained_once_and_shared(umaze_dataset: str, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    _, first = _run(umaze_dataset, "ROMI-BCQ", tmp_path / "a", artifacts)
    _, second = _run(umaze_dataset, "ROMI-CQL", tmp_path / "b", artifacts)
    assert any(line.startswith("dynamics (reverse): trained") for line in first)
    assert any(line.startswith("dynamics (reverse): loaded") for line in second)
    _, other_seed = _run(umaze_dataset, "ROMI-BCQ", tmp_path / "c", artifacts, seed=1)
    assert any(line.startswith("dynamics (reverse): trained") for line in other_seed)


def test_a_different_config_in_the_same_directory_is_refused(umaze_dataset: str, tmp_path: Path) -> None:
    from romi.errors import ConfigError

    _run(umaze_dataset, "BCQ", tmp_path / "run", tmp_path / "artifacts")
    with pytest.raises(ConfigError, match="different config"):
        _run(umaze_dataset, "BCQ", tmp_path / "run", tmp_path / "artifacts", seed=2)
