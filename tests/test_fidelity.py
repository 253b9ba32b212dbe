"""Checks that the wiring matches the paper's (and the official code's) choices, through the real code
paths: which real-data sampling each table cell uses, what a learner's batches are made of, where
reverse rollouts start, and the D4RL-protocol maze evaluation env the local refs are measured on."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from romi.artifacts import ArtifactStore
from romi.config import METHOD_TABLE, build_run_config
from romi.envs import cell_to_xy, free_cells, make_eval_env, xy_to_cell
from romi.imagination.rollout import BufferRequest, build_buffer_in_process
from romi.pipeline import Run
from romi.tasks import TASKS, get_task
from romi.tune.spec import load_sweep
from romi.types import Batch

TABLE_FILES = sorted((Path(__file__).parents[1] / "tune_configs").glob("table[1-4].yaml"))
TINY = {
    "gradient_steps": 40,
    "eval": {"every": 40, "episodes": 1, "last_k": 1},
    "dynamics": {"max_epochs": 2, "batches_per_epoch": 5, "hidden_dim": 32},
    "rollout_policy": {"iterations": 30, "cvae": {"hidden_dim": 32}, "rbc_hidden_dim": 32},
    "imagination": {"buffer_size": 2000, "shard_size": 1000},
    "bcq": {"actor_hidden": [32, 32], "critic_hidden": [32, 32], "vae": {"hidden_dim": 32}, "batch_size": 40},
    "cql": {"hidden": [32, 32], "batch_size": 40, "bc_steps": 10},
}


# --- 1. the baselines are the paper's baselines ---------------------------------------------------
def test_every_cell_of_the_four_tables_samples_real_data_as_the_paper_did() -> None:
    assert len(TABLE_FILES) == 4
    cells = 0
    for path in TABLE_FILES:
        for config in load_sweep(path).trial_configs():
            romi_or_fomi = METHOD_TABLE[config.method].direction is not None
            expected = romi_or_fomi and get_task(config.task).paper.return_weighted
            assert config.return_weighted is expected, f"{path.name}: {config.task} {config.method}"
            assert config.method_label == config.method and not config.deviations()
            cells += 1
    # Antmaze and locomotion baselines are the cells the old default got wrong: make sure they are here.
    assert cells == (12 * 2 + 12 * 2 + 12 * 3 + 6 * 3) * 3


def test_a_deviation_from_the_paper_is_labelled() -> None:
    weighted = build_run_config("antmaze-umaze", "BCQ", overrides={"return_weighted": True})
    assert weighted.return_weighted and weighted.method_label == "BCQ (rw)"
    uniform = build_run_config("hopper-medium", "ROMI-CQL", overrides={"return_weighted": False})
    assert uniform.method_label == "ROMI-CQL (uniform)" and "paper: true" in uniform.deviations()["uniform"]
    bf16 = build_run_config("hopper-medium", "CQL", overrides={"precision": "bf16"})
    assert bf16.method_label == "CQL (bf16)" and bf16.deviations() == {"bf16": "precision=bf16 (paper: fp32)"}


@pytest.mark.parametrize("value", ["1", "maybe", "[true]"])
def test_return_weighted_must_be_a_bool(value: str) -> None:
    from romi.cli import app

    result = CliRunner().invoke(app, ["train", "--task", "hopper-random", "--method", "BCQ",
                                      "--set", f"return_weighted={value}"])
    assert result.exit_code == 2 and "return_weighted" in result.output and "fix" in result.output


def _setup(task: str, method: str, tmp_path: Path, **overrides: object) -> tuple[Run, list[BufferRequest]]:
    requests: list[BufferRequest] = []

    def builder(request: BufferRequest) -> Batch:
        requests.append(request)
        return build_buffer_in_process(request)

    config = build_run_config(task, method, 0, "quick", {**TINY, **overrides})
    run = Run(config, ArtifactStore(tmp_path / "artifacts"), buffer_builder=builder)
    return run, requests


def _episode_counts(run: Run, draws: int) -> np.ndarray:
    rows = torch.cat([run.sampler.real_rows(run.sampler.num_real, run.sampler.generator) for _ in range(draws)])
    return np.bincount(run.data.episode_ids[rows.numpy()], minlength=run.data.num_episodes)


def test_baselines_sample_real_data_uniformly(hopper_dataset: str, tmp_path: Path) -> None:
    """Drawn rows per episode follow episode lengths; with return weighting on, the worst episode vanishes
    (so the test can tell the two apart)."""
    run, _ = _setup(hopper_dataset, "BCQ", tmp_path)
    assert run.config.return_weighted is False
    counts = _episode_counts(run, 1500)
    lengths = np.bincount(run.data.episode_ids, minlength=run.data.num_episodes)
    expected = counts.sum() * lengths / lengths.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = len(counts) - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof), f"chi2 {chi2:.0f} for {dof} degrees of freedom: not uniform"
    worst = int(np.argmin(run.data.returns[np.searchsorted(run.data.episode_ids, np.arange(len(counts)))]))
    assert counts[worst] > 0

    weighted, _ = _setup(hopper_dataset, "BCQ", tmp_path, return_weighted=True)
    assert _episode_counts(weighted, 300)[worst] == 0


# --- 5. what the learner's batches are made of ----------------------------------------------------
def _real_row_keys(run: Run) -> set[bytes]:
    data = run.data
    return {np.concatenate([o, a, n]).tobytes()
            for o, a, n in zip(data.observations, data.actions, data.next_observations, strict=True)}


def _imagined_rows_per_batch(run: Run) -> list[int]:
    """Trains the run and counts, in every batch the learner saw, the rows that are not dataset rows."""
    seen: list[int] = []
    real = _real_row_keys(run)
    update = run.agent.update

    def spy(batch):
        rows = torch.cat([batch.observations, batch.actions, batch.next_observations], dim=1).numpy()
        seen.append(sum(row.tobytes() not in real for row in rows))
        return update(batch)

    run.agent.update = spy  # type: ignore[method-assign]
    for _ in run.train():
        pass
    return seen


@pytest.mark.parametrize(("method", "overrides", "imagined"), [
    ("ROMI-BCQ", {}, 28),  # umaze share 0.7 of 40 rows
    ("FOMI-BCQ", {"model_share": 0.25}, 10),
    ("ROMI-BCQ", {"model_share": 0.0}, 0),
    ("BCQ", {}, 0),
])
def test_learner_batches_hold_the_configured_share_of_imagined_rows(
    method: str, overrides: dict, imagined: int, umaze_dataset: str, tmp_path: Path
) -> None:
    run, _ = _setup(umaze_dataset, method, tmp_path, **overrides)
    counts = _imagined_rows_per_batch(run)
    assert len(counts) == 40 and set(counts) == {imagined}


def test_reverse_rollouts_start_from_non_terminal_dataset_observations(hopper_dataset: str, tmp_path: Path) -> None:
    run, requests = _setup(hopper_dataset, "ROMI-CQL", tmp_path)
    (request,) = requests
    data = run.data
    assert torch.equal(request.start_pool, torch.as_tensor(data.observations))
    assert data.terminals.any(), "the test needs falls in the data"
    falls = {row.tobytes() for row in data.next_observations[data.terminals]}
    assert not falls & {row.tobytes() for row in request.start_pool.numpy()}
    # ... and every imagined reverse trajectory ends in one of them: first-step rows have s' in the pool.
    pool = {row.tobytes() for row in data.observations}
    buffer = build_buffer_in_process(request)
    in_pool = np.array([row.tobytes() in pool for row in buffer.next_observations.numpy()])
    assert in_pool.mean() > 0.15  # h = 5: about a fifth of the rows are first steps


# --- 2. the D4RL-protocol maze evaluation env -----------------------------------------------------
def test_maze2d_eval_resets_follow_d4rl() -> None:
    """Uniform over every free cell, the goal cell included, +-0.1 around its centre, velocity ~ N(0, 0.1^2)."""
    task = TASKS["maze2d-umaze-sparse"]
    env = make_eval_env(task)
    cells, offsets, velocities = [], [], []
    for seed in range(1400):
        obs, _ = env.reset(seed=seed)
        cell = xy_to_cell(task, obs[:2])
        cells.append(cell)
        offsets.append(obs[:2] - cell_to_xy(task, cell))
        velocities.append(obs[2:])
    counts = Counter(cells)
    assert set(counts) == set(free_cells(task)) and task.goal_cell in counts
    assert all(abs(n - 200) < 60 for n in counts.values()), counts
    assert np.abs(offsets).max() <= 0.1 + 1e-6 and np.abs(offsets).max() > 0.09
    assert np.std(velocities) == pytest.approx(0.1, rel=0.1)
    first, _ = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    assert np.array_equal(first, again)
    assert env.spec is not None and env.spec.max_episode_steps == 300


def test_local_maze_dataset_recovers_the_env_its_refs_were_measured_on(umaze_dataset: str) -> None:
    import minari

    from romi.data.minari_io import read_metadata

    task = get_task(umaze_dataset)
    meta = read_metadata(task.local_id)
    assert meta["romi_maze_recipe"] == "d4rl" and meta["romi_recipe_version"] == 1
    assert meta["romi_eval_env_version"] == 2
    recovered = minari.load_dataset(task.local_id).recover_environment(eval_env=True)
    assert recovered.spec is not None and recovered.spec.max_episode_steps == task.horizon
    ours = make_eval_env(task)
    a, _ = recovered.reset(seed=3)
    b, _ = ours.reset(seed=3)
    assert np.array_equal(a, b)
    action = np.array([0.3, -0.2], dtype=np.float32)
    (obs_a, reward_a, *_), (obs_b, reward_b, *_) = recovered.step(action), ours.step(action)
    assert np.array_equal(obs_a, obs_b) and reward_a == reward_b
    assert json.loads(meta["eval_env_spec"])["kwargs"] == {"task": task.name}


def test_maze_datasets_default_to_d4rls_sizes() -> None:
    from romi.data.make.locomotion import data_steps

    sizes = {name: data_steps(TASKS[name], None) for name in TASKS if name.startswith("maze2d")}
    assert sizes == {"maze2d-umaze-sparse": 1_000_000, "maze2d-umaze-dense": 1_000_000,
                     "maze2d-medium-sparse": 2_000_000, "maze2d-medium-dense": 2_000_000,
                     "maze2d-large-sparse": 4_000_000, "maze2d-large-dense": 4_000_000}


def _outdated_d4rl_dataset() -> Path:
    """The default (d4rl) umaze-dense dataset, made and then marked as made by a recipe version 0."""
    from romi.data.make import make_dataset
    from romi.data.minari_io import dataset_dir

    make_dataset("maze2d-umaze-dense", steps=400, seed=0, ref_episodes=1)
    path = dataset_dir("local/pointmaze/umaze-dense-d4rl-v0") / "data" / "metadata.json"
    meta = json.loads(path.read_text())
    meta["romi_recipe_version"] = 0
    path.write_text(json.dumps(meta))
    return path


def test_a_maze_dataset_from_the_old_recipe_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from romi.cli import app
    from romi.data.make import make_dataset
    from romi.data.minari_io import dataset_dir, load_transitions
    from romi.errors import DatasetOutdatedError

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    # A dataset from before recipes had names (no `romi_maze_recipe`) was made by the Minari recipe; one
    # from its version 1 (refs on gymnasium's resets) is refused with the command that makes it again.
    make_dataset("maze2d-umaze-dense", steps=400, seed=0, ref_episodes=1, recipe="minari")
    path = dataset_dir("local/pointmaze/umaze-dense-v0") / "data" / "metadata.json"
    meta = json.loads(path.read_text())
    meta.pop("romi_recipe_version")
    meta.pop("romi_maze_recipe")
    path.write_text(json.dumps(meta))
    with pytest.raises(DatasetOutdatedError) as info:
        load_transitions("maze2d-umaze-dense", recipe="minari")
    assert "romi data make maze2d-umaze-dense --recipe minari --overwrite" in str(info.value)
    path = _outdated_d4rl_dataset()
    with pytest.raises(DatasetOutdatedError) as info:
        load_transitions("maze2d-umaze-dense")
    assert "romi data make maze2d-umaze-dense --overwrite" in str(info.value)
    before = path.read_text()
    result = CliRunner().invoke(app, ["train", "--task", "maze2d-umaze-dense", "--method", "BCQ", "--profile",
                                      "quick", "--out", str(tmp_path / "run")], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "romi data make maze2d-umaze-dense --overwrite" in result.output
    assert path.read_text() == before
    shown = CliRunner().invoke(app, ["data", "info", "maze2d-umaze-dense"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0 and "outdated" in shown.output and "D4RL's 68.54 / 193.66" in shown.output


def test_bcq_behaviour_vae_decodes_through_tanh_as_the_authors_and_linear_only_when_asked() -> None:
    """The authors' BCQ decodes `max_action * tanh(d3(a))`; d3rlpy 2.8.1's BCQ returns the decoder's linear
    output (its `VAEDecoder` squashes only when `with_squash=False`, and BCQ calls it with the default True).
    That one difference is what separates d3rlpy's non-diverging BCQ from the authors' and romi's on the
    maze data (analysis/results/baselines/): romi keeps the authors', and offers d3rlpy's as a labelled option."""
    import torch

    from romi.config import build_run_config
    from romi.nets import CVAE

    states = torch.randn(64, 4)
    for output, inside in (("tanh", True), ("linear", False)):
        torch.manual_seed(0)
        vae = CVAE(4, 2, 1.0, hidden_dim=16, latent_dim=None, latent_clip=0.5, log_std_min=-4.0, log_std_max=15.0,
                   output=output)
        with torch.no_grad():
            vae.decoder[-1].weight.mul_(100.0)  # a decoder pushed hard towards the box's edges
            actions = vae.decode(states)
        assert bool((actions.abs() <= 1.0).all()) is inside
    paper = build_run_config("maze2d-umaze-sparse", "BCQ", 0, "paper")
    assert paper.bcq.vae.output == "tanh" and paper.method_label == "BCQ"
    linear = build_run_config("maze2d-umaze-sparse", "BCQ", 0, "paper", {"bcq": {"vae": {"output": "linear"}}})
    assert linear.method_label == "BCQ (linear VAE)"
