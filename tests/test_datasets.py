from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from romi.cli import app
from romi.data.make import make_dataset
from romi.data.make.common import episode_buffer
from romi.data.minari_io import (
    dataset_dir,
    dataset_present,
    load_transitions,
    read_metadata,
    resolve_dataset_id,
)
from romi.data.minari_write import write_dataset
from romi.envs import goal_xy, maze_reward
from romi.errors import DatasetCorruptError, DatasetExistsError, DatasetMissingError, RomiError
from romi.tasks import TASKS

runner = CliRunner()


def _check_episode_structure(data) -> None:
    same_episode = data.episode_ids[1:] == data.episode_ids[:-1]
    # Within an episode, s'_t is s_{t+1}; episodes end in a terminal or a timeout, nowhere else.
    assert np.array_equal(data.next_observations[:-1][same_episode], data.observations[1:][same_episode])
    ends = np.append(~same_episode, True)
    assert np.all(data.terminals[ends] | data.timeouts[ends])
    assert not np.any((data.terminals | data.timeouts)[~ends])
    for episode in np.unique(data.episode_ids):
        rows = data.episode_ids == episode
        assert np.allclose(data.returns[rows], data.rewards[rows].sum(), rtol=1e-5, atol=1e-5)


def test_maze_dataset_loads_with_fixed_goal_rewards(umaze_dataset: str) -> None:
    task = TASKS[umaze_dataset]
    data = load_transitions(umaze_dataset)
    assert len(data) == 3_000 and data.obs_dim == 4 and data.act_dim == 2
    assert data.observations.dtype == np.float32 and data.actions.dtype == np.float32
    assert np.all(np.abs(data.actions) <= 1)
    assert not data.terminals.any(), "maze2d is a continuing task"
    _check_episode_structure(data)
    expected = maze_reward(data.next_observations[:, :2], goal_xy(task), "sparse")
    assert np.array_equal(data.rewards, expected)
    # The same dataset read by its id gives the same arrays.
    by_id = load_transitions(task.local_id)
    assert np.array_equal(by_id.observations, data.observations)


def test_dense_task_relabels_the_same_kind_of_data(umaze_dataset: str) -> None:
    make_dataset("maze2d-umaze-dense", steps=500, seed=1, ref_episodes=1)
    data = load_transitions("maze2d-umaze-dense")
    task = TASKS["maze2d-umaze-dense"]
    distance = np.linalg.norm(data.next_observations[:, :2] - goal_xy(task), axis=1)
    assert np.allclose(data.rewards, np.exp(-distance), atol=1e-6)


def test_maze_metadata_carries_local_and_d4rl_references(umaze_dataset: str) -> None:
    meta = read_metadata(TASKS[umaze_dataset].local_id)
    assert meta["ref_min_score"] < meta["ref_max_score"], "the controller must beat a random policy"
    assert meta["d4rl_ref_min_score"] == 23.85 and meta["d4rl_ref_max_score"] == 161.86
    assert meta["romi_task"] == umaze_dataset and meta["total_steps"] == 3_000
    assert "waypoint controller" in meta["description"]


def test_locomotion_random_dataset(hopper_dataset: str) -> None:
    data = load_transitions(hopper_dataset)
    assert data.obs_dim == 11 and data.act_dim == 3 and len(data) == 2_000
    assert data.terminals.any(), "a random hopper falls"
    _check_episode_structure(data)
    meta = read_metadata(TASKS[hopper_dataset].local_id)
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (-20.272305, 3234.3)


def test_antmaze_goal_segments_and_terminals(isolated_minari_store: Path) -> None:
    """A hand-made antmaze-shaped dataset: reaching the goal ends a segment and is terminal."""
    task = TASKS["antmaze-umaze"]
    goal = goal_xy(task)
    far = goal + np.array([8.0, 0.0])
    path = np.linspace(far, goal, 6)  # reaches the goal at step 5
    xy = np.concatenate([path, path[::-1], path])  # 18 positions: away and back again
    steps = len(xy) - 1
    rng = np.random.default_rng(0)
    obs = {
        "achieved_goal": xy,
        "desired_goal": np.repeat(goal[None], len(xy), 0),
        "observation": rng.normal(size=(len(xy), 27)),
    }
    trunc = np.zeros(steps, bool)
    trunc[-1] = True
    episode = episode_buffer(obs, rng.uniform(-1, 1, (steps, 8)), np.zeros(steps), np.zeros(steps, bool), trunc)
    write_dataset(task.local_id, [episode], env_id=task.env_id, eval_env=None, ref_min_score=0.0,
                  ref_max_score=1.0, description="test", extra_metadata={})
    data = load_transitions(task.name)
    assert data.obs_dim == 29
    goal_steps = np.flatnonzero(np.linalg.norm(data.next_observations[:, :2] - goal, axis=1) <= 0.5)
    assert np.array_equal(np.flatnonzero(data.terminals), goal_steps)
    assert np.array_equal(data.rewards > 0, data.terminals)
    # A new segment starts right after each goal-reaching step.
    for step in goal_steps[:-1]:
        assert data.episode_ids[step + 1] == data.episode_ids[step] + 1
    assert data.returns[data.terminals].min() >= 1


# --- bad input -----------------------------------------------------------------------------


def test_missing_dataset_says_how_to_get_it() -> None:
    with pytest.raises(DatasetMissingError) as info:
        load_transitions("maze2d-large-dense")
    message = str(info.value)
    assert "minari download D4RL/pointmaze/large-dense-v2" in message
    assert "romi data make maze2d-large-dense" in message
    with pytest.raises(DatasetMissingError, match="minari download"):
        resolve_dataset_id(TASKS["antmaze-large-play"])


def test_existing_dataset_is_not_overwritten_unless_asked(umaze_dataset: str) -> None:
    before = read_metadata(TASKS[umaze_dataset].local_id)
    with pytest.raises(DatasetExistsError, match="with 3,000 steps, not the 100 asked for") as info:
        make_dataset(umaze_dataset, steps=100)
    assert "--overwrite" in str(info.value)
    with pytest.raises(DatasetExistsError, match="seed 0, not 1"):
        make_dataset(umaze_dataset, steps=3_000, seed=1)
    assert read_metadata(TASKS[umaze_dataset].local_id) == before


def test_the_same_request_reuses_a_complete_dataset(umaze_dataset: str) -> None:
    """What a rerun of the quickstart relies on: `data make` with the same steps and seed is a no-op."""
    before = read_metadata(TASKS[umaze_dataset].local_id)
    summary = make_dataset(umaze_dataset, steps=3_000, seed=0)
    assert not summary.made and summary.steps == 3_000 and summary.dataset_id == TASKS[umaze_dataset].local_id
    assert read_metadata(TASKS[umaze_dataset].local_id) == before
    result = runner.invoke(app, ["data", "make", umaze_dataset, "--steps", "3000"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "already made" in result.output and "nothing to do" in result.output


def test_a_damaged_dataset_is_not_reused(isolated_minari_store: Path) -> None:
    make_dataset("maze2d-medium-sparse", steps=400, seed=0, ref_episodes=1, overwrite=True)
    data_file = dataset_dir(TASKS["maze2d-medium-sparse"].local_id) / "data" / "main_data.hdf5"
    data_file.write_bytes(data_file.read_bytes()[:1000])
    try:
        with pytest.raises(DatasetCorruptError, match="romi data make maze2d-medium-sparse --overwrite"):
            make_dataset("maze2d-medium-sparse", steps=400, seed=0)
    finally:  # the store is shared by the session: leave no damaged dataset behind
        shutil.rmtree(data_file.parent.parent)


def test_interrupted_write_leaves_nothing(isolated_minari_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import minari

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", explode)
    with pytest.raises(KeyboardInterrupt):
        make_dataset("maze2d-medium-sparse", steps=200, ref_episodes=1)
    assert not dataset_present(TASKS["maze2d-medium-sparse"].local_id)
    assert not dataset_dir(TASKS["maze2d-medium-sparse"].local_id).exists()
    assert not list(isolated_minari_store.parent.glob(".romi-staging-*"))


def _copy_dataset(source_task: str, target_task: str) -> Path:
    import shutil

    src, dst = dataset_dir(TASKS[source_task].local_id), dataset_dir(TASKS[target_task].local_id)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def test_truncated_file_is_reported_as_corrupt(umaze_dataset: str) -> None:
    dst = _copy_dataset(umaze_dataset, "maze2d-large-sparse")
    data_file = dst / "data" / "main_data.hdf5"
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    with pytest.raises(DatasetCorruptError, match="corrupt or truncated") as info:
        load_transitions("maze2d-large-sparse")
    assert "romi data make maze2d-large-sparse --overwrite" in str(info.value)


def test_metadata_promising_more_steps_is_corrupt(umaze_dataset: str) -> None:
    dst = _copy_dataset(umaze_dataset, "maze2d-large-sparse")
    meta_path = dst / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["total_steps"] += 10
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetCorruptError, match="promises"):
        load_transitions("maze2d-large-sparse")


def test_wrong_shapes_for_the_task(hopper_dataset: str) -> None:
    _copy_dataset(hopper_dataset, "walker2d-random")
    with pytest.raises(DatasetCorruptError, match="needs 17 and 6"):
        load_transitions("walker2d-random")


def test_nan_in_dataset_is_refused(isolated_minari_store: Path) -> None:
    task = TASKS["halfcheetah-random"]
    obs = np.zeros((4, 17))
    obs[2, 3] = np.nan
    episode = episode_buffer(obs, np.zeros((3, 6)), np.zeros(3), np.zeros(3, bool), np.array([0, 0, 1], bool))
    write_dataset(task.local_id, [episode], env_id=task.env_id, eval_env=None, ref_min_score=0.0,
                  ref_max_score=1.0, description="nan", extra_metadata={}, overwrite=True)
    with pytest.raises(DatasetCorruptError, match="NaN") as info:
        load_transitions(task.name)
    assert info.value.hint == "re-create it: romi data make halfcheetah-random --overwrite"


def test_recipe_less_task_explains_itself() -> None:
    with pytest.raises(RomiError, match="minari download D4RL/antmaze/large-play-v1"):
        make_dataset("antmaze-large-play", steps=10)


# --- CLI -----------------------------------------------------------------------------------


def test_cli_data_list_shows_every_task() -> None:
    result = runner.invoke(app, ["data", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in TASKS)


def test_cli_make_and_info(isolated_minari_store: Path) -> None:
    result = runner.invoke(app, ["data", "make", "maze2d-medium-dense", "--steps", "400", "--ref-episodes", "1",
                                 "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "steps 400" in result.output and "simulation" in result.output
    info = runner.invoke(app, ["data", "info", "maze2d-medium-dense"], env={"COLUMNS": "250"})
    assert info.exit_code == 0 and "local/pointmaze/medium-dense-v0" in info.output


def test_cli_unknown_task_fails_with_a_suggestion() -> None:
    result = runner.invoke(app, ["data", "make", "hoper-random"])
    assert result.exit_code == 2
    assert "unknown task" in result.output and "hopper-random" in result.output


def test_a_second_load_comes_from_the_cache_and_a_changed_file_is_read_again(
        umaze_dataset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoded-steps cache is only a faster read: same arrays, and never stale after the file changes."""
    import dataclasses
    import os

    from romi.data import minari_io

    dataset_id = TASKS[umaze_dataset].local_id
    first = load_transitions(umaze_dataset)  # fills the cache (or finds it filled)
    reads: list[str] = []
    real_read = minari_io._read_steps_from_file
    monkeypatch.setattr(minari_io, "_read_steps_from_file",
                        lambda *args: reads.append(args[0]) or real_read(*args))

    cached = load_transitions(umaze_dataset)
    assert reads == []
    for field in dataclasses.fields(first):
        assert np.array_equal(getattr(first, field.name), getattr(cached, field.name)), field.name

    # A dataset made again (here: its file touched) is read from the file, and its old cache file goes.
    old_cache = minari_io._steps_cache_file(dataset_id)
    data_file = dataset_dir(dataset_id) / "data" / "main_data.hdf5"
    stat = data_file.stat()
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    load_transitions(umaze_dataset)
    assert reads == [dataset_id]
    assert not old_cache.exists() and minari_io._steps_cache_file(dataset_id).is_file()

    # A damaged cache file is read around and replaced.
    minari_io._steps_cache_file(dataset_id).write_bytes(b"not an npz")
    again = load_transitions(umaze_dataset)
    assert reads == [dataset_id, dataset_id] and np.array_equal(again.observations, first.observations)


def test_the_fingerprint_names_what_makes_the_data_not_when_it_was_made(isolated_minari_store: Path) -> None:
    """Models are keyed by the fingerprint: the same recipe and seed made again (another machine, another
    day) must find them; another seed must not."""
    from romi.data.minari_io import dataset_fingerprint

    dataset_id = TASKS["maze2d-medium-sparse"].local_id
    make_dataset("maze2d-medium-sparse", steps=300, seed=5, ref_episodes=1)
    first = dataset_fingerprint(dataset_id)
    make_dataset("maze2d-medium-sparse", steps=300, seed=5, ref_episodes=1, overwrite=True)
    assert dataset_fingerprint(dataset_id) == first
    assert "romi_generation_seconds" in read_metadata(dataset_id)  # recorded, but not part of the identity
    make_dataset("maze2d-medium-sparse", steps=300, seed=6, ref_episodes=1, overwrite=True)
    assert dataset_fingerprint(dataset_id) != first
