"""The locomotion medium family made with RLlib SAC behaviour policies, end to end at tiny scale.

One module-scoped Ray instance and one SAC run (hopper, seed 0, 16x16 networks, ~1k env steps) make
medium, medium-replay, medium-expert and expert; the other tests read that run or start small ones.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

from romi.cli import app
from romi.data.make import make_dataset
from romi.data.make.sac import (
    BehaviourRun,
    CheckpointRecord,
    Recorder,
    SACBehaviourConfig,
    ThresholdNotReachedError,
    TrainingProgress,
    UniformReplay,
    best_checkpoint,
    choose_medium,
    first_reaching,
    quiet_rllib,
    squashed_gaussian_action,
    unit_actions,
)
from romi.data.minari_io import dataset_present, load_transitions, read_metadata
from romi.errors import RomiError, UnknownTaskError
from romi.tasks import TASKS

runner = CliRunner()

# Tiny networks and budgets: every 4 env steps one update on a batch of 32 (not D4RL's 1:1 at 256).
TINY = SACBehaviourConfig(
    checkpoint_every=400, report_every=200, eval_episodes=2, learning_starts=200, hidden_sizes=(16, 16),
    batch_size=32, updates_per_step=0.25, rollout_fragment_length=4,
)
BUDGET = 1_200
FRACTION = 0.003  # threshold ~9.7: an almost untrained hopper that stands for a few steps reaches it
DATA_STEPS = 300
HOPPER = TASKS["hopper-medium"]


def _record(name: str, steps: int, ret: float) -> CheckpointRecord:
    return CheckpointRecord(name=name, env_steps=steps, eval_return=ret, eval_return_std=0.0, train_return=None,
                            training_seconds=0.0)


def _check_episode_structure(data: Any) -> None:
    same_episode = data.episode_ids[1:] == data.episode_ids[:-1]
    assert np.array_equal(data.next_observations[:-1][same_episode], data.observations[1:][same_episode])
    ends = np.append(~same_episode, True)
    assert np.all(data.terminals[ends] | data.timeouts[ends]), "every episode ends in a terminal or a timeout"
    assert not np.any((data.terminals | data.timeouts)[~ends]), "and nowhere else"
    assert np.all(np.abs(data.actions) <= 1.0)


# --------------------------------------------------------------------------------------------
# Pure functions: no Ray
# --------------------------------------------------------------------------------------------


def test_threshold_rule_picks_the_closest_checkpoint_up_to_the_first_reaching_it() -> None:
    records = [_record("c3", 300, 50.0), _record("c1", 100, 5.0), _record("c2", 200, 12.0), _record("c4", 400, 9.0)]
    assert first_reaching(records, 10.0).name == "c2", "training order, not list order or best return"
    assert first_reaching(records, 12.0).name == "c2", ">= counts"
    assert choose_medium(records, 10.0).name == "c2", "12 is closer to 10 than 5 is; c4 (9) comes after c2"
    assert choose_medium(records, 40.0).name == "c3"
    assert choose_medium(records, 8.5).name == "c2", "a tie goes to the checkpoint that reached the threshold"
    # Our Hopper-v5 run: the return jumped from 295 to 3027 between two checkpoints; 968 is about a third.
    hopper = [_record("s190", 190, 551.5), _record("s200", 200, 967.8), _record("s290", 290, 295.0),
              _record("s300", 300, 3027.2), _record("s310", 310, 1100.0)]
    assert choose_medium(hopper, 1078.1).name == "s200"
    assert best_checkpoint(records).name == "c3"
    assert first_reaching([], 1.0) is None and best_checkpoint([]) is None


def test_threshold_never_reached_names_the_best_checkpoint() -> None:
    records = [_record("step_a", 100, 5.0), _record("step_b", 200, 31.25), _record("step_c", 300, 7.0)]
    with pytest.raises(ThresholdNotReachedError) as caught:
        choose_medium(records, 1000.0, where="/runs/x")
    err = caught.value
    assert err.best is not None and err.best.name == "step_b"
    assert "step_b" in str(err) and "31.2" in str(err) and "1000.0" in str(err) and "/runs/x" in str(err)
    assert "--budget" in (err.hint or "")
    with pytest.raises(ThresholdNotReachedError, match="no checkpoint yet"):
        choose_medium([], 1.0)


def test_squashed_gaussian_action() -> None:
    low, high = np.array([-1.0, -1.0, 0.0]), np.array([1.0, 1.0, 2.0])
    inputs = np.array([0.5, -3.0, 0.0, np.log(0.1), 0.0, 10.0])  # means, log stds
    deterministic = squashed_gaussian_action(inputs, low, high)
    unit = np.tanh([0.5, -3.0, 0.0])
    assert np.allclose(deterministic, [unit[0], unit[1], 1.0 + unit[2]], atol=1e-6)
    assert deterministic.dtype == np.float32
    noise = np.array([1.0, -1.0, 1.0])
    # log std 10 is clipped to RLlib's maximum of 2.
    expected = np.tanh([0.5 + np.exp(np.log(0.1)) * 1.0, -3.0 - 1.0, 0.0 + np.exp(2.0) * 1.0])
    assert np.allclose(squashed_gaussian_action(inputs, low, high, noise),
                       [expected[0], expected[1], 1.0 + expected[2]], atol=1e-6)
    wild = squashed_gaussian_action(np.array([100.0, 100.0, 100.0, 2.0, 2.0, 2.0]), low, high, noise)
    assert np.all(wild >= low) and np.all(wild <= high)


def _recorded(steps: int, start: int = 0) -> dict[str, np.ndarray]:
    """A recording of `steps` transitions of a fake 2-d task (episodes of 3 steps, the last one terminating)."""
    recorder = Recorder(next_episode=0)
    recorder.on_reset(np.array([start, -start], dtype=np.float64))
    for t in range(start, start + steps):
        done = t % 3 == 2
        recorder.on_step(np.array([0.5, -1.0], dtype=np.float32), np.array([t + 1, -t - 1], dtype=np.float64),
                         float(t), done, False)
        if done:
            recorder.on_reset(np.array([t + 1, -t - 1], dtype=np.float64))
    return recorder.take_new()


def test_uniform_replay_holds_the_recording_and_samples_it_uniformly() -> None:
    obs_space = gym.spaces.Box(-np.inf, np.inf, (2,))
    act_space = gym.spaces.Box(np.array([-1.0, 0.0], dtype=np.float32), np.array([1.0, 2.0], dtype=np.float32))
    replay = UniformReplay(5, obs_space, act_space, seed=7)
    assert replay.add(_recorded(3)) == 3 and replay.size == 3
    assert np.array_equal(replay.columns["obs"][:3, 0], [0, 1, 2])
    assert np.array_equal(replay.columns["new_obs"][:3, 0], [1, 2, 3])
    assert np.array_equal(replay.columns["terminateds"][:3], [False, False, True])
    assert np.allclose(replay.columns["actions"][0], [0.5, -2.0]), "RLlib learns from [-1, 1] actions"
    replay.add(_recorded(4, start=3))  # 7 transitions into 5 places: the first two are gone (FIFO)
    assert replay.size == 5 and replay.added == 7
    assert sorted(replay.columns["rewards"][:5]) == [2.0, 3.0, 4.0, 5.0, 6.0]
    batch = replay.sample(20_000)
    assert {k: (v.dtype, v.shape[1:]) for k, v in batch.items()} == {
        "obs": (np.float32, (2,)), "new_obs": (np.float32, (2,)), "actions": (np.float32, (2,)),
        "rewards": (np.float32, ()), "terminateds": (np.bool_, ()), "truncateds": (np.bool_, ()),
        "n_step": (np.int64, ()), "weights": (np.float32, ()),
    }
    assert np.all(batch["new_obs"][:, 0] == batch["obs"][:, 0] + 1) and np.all(batch["n_step"] == 1)
    counts = np.unique(batch["rewards"], return_counts=True)[1]
    assert len(counts) == 5 and np.all(np.abs(counts / 20_000 - 0.2) < 0.02), "uniform over what is held"
    first = UniformReplay(100, obs_space, act_space, seed=3)
    second = UniformReplay(100, obs_space, act_space, seed=3)
    for r in (first, second):
        r.add(_recorded(50))
    assert np.array_equal(first.sample(64)["obs"], second.sample(64)["obs"]), "seeded"
    assert np.allclose(unit_actions(np.array([[0.0, 2.0]]), act_space.low, act_space.high), [[0.0, 1.0]])


def test_config_validation() -> None:
    with pytest.raises(RomiError, match="medium_fraction"):
        SACBehaviourConfig(medium_fraction=0.0)
    with pytest.raises(RomiError, match="checkpoint_every"):
        SACBehaviourConfig(checkpoint_every=0)
    with pytest.raises(RomiError, match="q_network"):
        SACBehaviourConfig(q_network="cnn")
    assert "medium_budget" not in TINY.fingerprint(), "budgets may change between invocations of one run"


def test_unknown_environment_and_task() -> None:
    with pytest.raises(RomiError, match="unknown environment 'Hopperr-v5'"):
        BehaviourRun("Hopperr-v5", 0, TINY)
    with pytest.raises(UnknownTaskError) as caught:
        make_dataset("hopper-mediumm", budget=10)
    assert "hopper-medium" in (caught.value.hint or "")
    result = runner.invoke(app, ["data", "make", "swimmer-medium", "--budget", "100"])
    assert result.exit_code == 2 and "unknown task" in result.output


def test_sac_options_rejected_for_other_recipes() -> None:
    with pytest.raises(RomiError, match="--budget only applies to the SAC-made"):
        make_dataset("hopper-random", steps=10, budget=100)
    with pytest.raises(RomiError, match="--budget, --medium-fraction only apply to the SAC-made"):
        make_dataset("hopper-random", steps=10, budget=100, medium_fraction=0.5)


# --------------------------------------------------------------------------------------------
# The whole path at tiny scale
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    import logging

    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def family(ray_local: None, isolated_minari_store: Path) -> dict[str, Any]:
    """hopper medium, medium-replay and medium-expert (+ expert) from one tiny SAC run, in three sessions."""
    logs: dict[str, list[str]] = {}
    for kind in ("medium", "medium-replay", "medium-expert"):
        lines: list[str] = []
        make_dataset(f"hopper-{kind}", steps=DATA_STEPS, seed=0, budget=BUDGET, medium_fraction=FRACTION,
                     config=TINY, log=lines.append)
        logs[kind] = lines
    run = BehaviourRun("Hopper-v5", 0, TINY)
    return {"logs": logs, "run": run, "state": json.loads(run.state_path.read_text())}


@pytest.mark.ray
def test_medium_is_chosen_by_the_threshold_rule(family: dict[str, Any]) -> None:
    run: BehaviourRun = family["run"]
    threshold = FRACTION * HOPPER.d4rl_ref_max
    medium = choose_medium(run.checkpoints, threshold)  # raises when no checkpoint reaches the threshold
    assert family["state"]["medium"] == {"checkpoint": medium.name, "threshold": threshold}
    behaviour = read_metadata(HOPPER.local_id)["romi_behaviour"]
    assert behaviour["medium"]["name"] == medium.name and behaviour["medium_threshold"] == threshold
    # The medium-expert session trained on to the budget; every checkpoint is kept and evaluated.
    steps = [c.env_steps for c in run.checkpoints]
    assert steps == sorted(steps) and steps[-1] >= BUDGET and len(steps) == BUDGET // TINY.checkpoint_every
    assert all((run.directory / "policies" / c.name).is_dir() for c in run.checkpoints)
    assert family["state"]["expert"]["checkpoint"] == best_checkpoint(run.checkpoints).name


@pytest.mark.ray
def test_all_four_datasets_load_with_episode_structure(family: dict[str, Any]) -> None:
    run: BehaviourRun = family["run"]
    medium = choose_medium(run.checkpoints, FRACTION * HOPPER.d4rl_ref_max)
    sizes = {"hopper-medium": DATA_STEPS, "hopper-medium-replay": medium.env_steps,
             "hopper-medium-expert": 2 * DATA_STEPS, "local/hopper/expert-v0": DATA_STEPS}
    for name, size in sizes.items():
        data = load_transitions(name)
        assert len(data) == size, name
        assert data.obs_dim == 11 and data.act_dim == 3
        _check_episode_structure(data)
        meta = read_metadata(name if "/" in name else TASKS[name].local_id)
        assert (meta["ref_min_score"], meta["ref_max_score"]) == (HOPPER.d4rl_ref_min, HOPPER.d4rl_ref_max)
        assert meta["total_steps"] == size


@pytest.mark.ray
def test_medium_replay_is_what_the_sac_sampled_in_order(family: dict[str, Any]) -> None:
    run: BehaviourRun = family["run"]
    medium = choose_medium(run.checkpoints, FRACTION * HOPPER.d4rl_ref_max)
    data = load_transitions("hopper-medium-replay")
    recorded = np.concatenate([np.load(run.directory / "replay" / f"{c.name}.npz")["observations"]
                               for c in run.checkpoints if c.env_steps <= medium.env_steps])
    assert np.array_equal(data.observations, recorded.astype(np.float32))
    # The SAC's first episodes start from its env runner's resets: real Hopper start states.
    assert np.all(np.abs(data.observations[0, 1:5]) < 0.01)


@pytest.mark.ray
def test_medium_expert_is_medium_then_expert(family: dict[str, Any]) -> None:
    both = load_transitions("hopper-medium-expert")
    medium = load_transitions("hopper-medium")
    expert = load_transitions("local/hopper/expert-v0")
    assert np.array_equal(both.observations[:DATA_STEPS], medium.observations)
    assert np.array_equal(both.actions[DATA_STEPS:], expert.actions)
    assert both.num_episodes == medium.num_episodes + expert.num_episodes


@pytest.mark.ray
def test_descriptions_metadata_and_progress(family: dict[str, Any]) -> None:
    run: BehaviourRun = family["run"]
    medium = choose_medium(run.checkpoints, FRACTION * HOPPER.d4rl_ref_max)
    meta = read_metadata(HOPPER.local_id)
    for needle in (medium.name, f"{medium.eval_return:.1f}", "seed 0", f"{DATA_STEPS:,} steps", "stochastically"):
        assert needle in meta["description"], needle
    assert meta["romi_recipe"] == "locomotion-sac" and meta["romi_behaviour"]["config"]["hidden_sizes"] == [16, 16]
    expert_meta = read_metadata("local/hopper/expert-v0")
    assert expert_meta["romi_behaviour"]["expert"]["name"] == family["state"]["expert"]["checkpoint"]
    medium_log = "\n".join(family["logs"]["medium"])
    assert "HOURS of CPU per environment" in medium_log, "the time budget is printed before starting"
    assert "steps/s" in medium_log and "ETA" in medium_log and "train return" in medium_log
    assert "reusing the SAC run" in "\n".join(family["logs"]["medium-replay"])
    assert any("resumed from" in line for line in family["logs"]["medium-expert"])


@pytest.mark.ray
def test_medium_data_is_deterministic_given_the_seed(family: dict[str, Any]) -> None:
    before = load_transitions("hopper-medium")
    make_dataset("hopper-medium", steps=DATA_STEPS, seed=0, budget=BUDGET, medium_fraction=FRACTION, config=TINY,
                 overwrite=True)
    after = load_transitions("hopper-medium")
    assert np.array_equal(before.observations, after.observations)
    assert np.array_equal(before.actions, after.actions)


@pytest.mark.ray
def test_threshold_never_reached_keeps_the_best_checkpoint(family: dict[str, Any]) -> None:
    run: BehaviourRun = family["run"]
    best = best_checkpoint(run.checkpoints)
    metadata_before = read_metadata(HOPPER.local_id)
    with pytest.raises(ThresholdNotReachedError) as caught:  # the run already has its whole budget: no training
        make_dataset("hopper-medium", steps=DATA_STEPS, seed=0, budget=BUDGET, medium_fraction=1.0, config=TINY,
                     overwrite=True)
    assert caught.value.best == best
    assert best.name in str(caught.value) and f"{best.eval_return:.1f}" in str(caught.value)
    assert (run.directory / "policies" / best.name).is_dir()
    assert read_metadata(HOPPER.local_id) == metadata_before, "nothing was written"


@pytest.mark.ray
def test_resume_after_interruption(ray_local: None, tmp_path: Path) -> None:
    run = BehaviourRun("Hopper-v5", 1, TINY, root=tmp_path)

    def interrupt(progress: TrainingProgress) -> None:
        if progress.env_steps >= 600:  # after the checkpoint at 400, before the one at 800
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.train(lambda checkpoints: False, budget=800, on_progress=interrupt)
    state = json.loads(run.state_path.read_text())
    assert state["env_steps"] == 400 and [c["name"] for c in state["checkpoints"]] == ["step_0000000400"]
    # A checkpoint half-written when the process died is not in state.json and must be discarded.
    stray = run.directory / "policies" / "step_0000000600"
    stray.mkdir()

    lines: list[str] = []
    again = BehaviourRun("Hopper-v5", 1, TINY, root=tmp_path)
    again.train(lambda checkpoints: False, budget=800, log=lines.append)
    assert not stray.exists()
    assert any("resumed from step_0000000400" in line and "refilled with 400 transitions" in line for line in lines)
    assert [c.env_steps for c in again.checkpoints] == [400, 800] and again.state.resumes == 1
    episodes = np.concatenate([np.load(again.directory / "replay" / f"{c.name}.npz")["episode_ids"]
                               for c in again.checkpoints])
    assert len(episodes) == 800 and np.all(np.diff(episodes) >= 0), "the recording continues in order"
    assert not (again.directory / "resume" / "step_0000000400").exists(), "only the last resume state is kept"


@pytest.mark.ray
def test_training_is_deterministic_and_fragments_end_on_checkpoints(ray_local: None, tmp_path: Path) -> None:
    # 64-step fragments do not divide the 200-step iterations: they are cut, so checkpoints still land on 400.
    config = dataclasses.replace(TINY, rollout_fragment_length=64, checkpoint_every=200, report_every=200)
    runs = []
    for name in ("a", "b"):
        run = BehaviourRun("Hopper-v5", 4, config, root=tmp_path / name)
        run.train(lambda checkpoints: False, budget=400)
        runs.append(run)
    assert [c.env_steps for c in runs[0].checkpoints] == [200, 400]
    for record_a, record_b in zip(runs[0].checkpoints, runs[1].checkpoints, strict=True):
        assert record_a.eval_return == record_b.eval_return, "same seed, same updates, same policy"
        replays = [np.load(run.directory / "replay" / f"{record_a.name}.npz") for run in runs]
        for key in ("observations", "actions", "rewards"):
            assert np.array_equal(replays[0][key], replays[1][key]), key


@pytest.mark.ray
@pytest.mark.parametrize("q_network", ["mlp", "rllib"])
def test_q_networks(ray_local: None, tmp_path: Path, q_network: str) -> None:
    config = dataclasses.replace(TINY, q_network=q_network, checkpoint_every=300, report_every=300)
    run = BehaviourRun("Hopper-v5", 5, config, root=tmp_path)
    with quiet_rllib():
        algo = run._algorithm_config("no-recorder", 300).build_algo()
    try:
        encoder = algo.learner_group._learner.module["default_policy"].qf_encoder
    finally:
        algo.stop()
    if q_network == "mlp":  # D4RL's: an MLP on concat(observation, action)
        assert [layer.in_features for layer in encoder.modules() if hasattr(layer, "in_features")] == [14, 16]
    else:
        assert type(encoder).__name__ == "TorchMultiStreamEncoder"
    run.train(lambda checkpoints: False, budget=300)  # 100 steps with updates, a checkpoint, its policy loads
    assert run.load_policy(run.checkpoints[-1]).act(np.zeros(11)).shape == (3,)


@pytest.mark.ray
def test_settings_of_an_existing_run_are_enforced(family: dict[str, Any]) -> None:
    with pytest.raises(RomiError, match="hidden_sizes"):
        BehaviourRun("Hopper-v5", 0, SACBehaviourConfig(hidden_sizes=(32, 32)))


@pytest.mark.ray
def test_cli_makes_a_medium_dataset(ray_local: None) -> None:
    # Default networks; the budget ends before learning starts, so this is quick.
    result = runner.invoke(app, ["data", "make", "walker2d-medium", "--steps", "200", "--budget", "400",
                                 "--medium-fraction", "0.0001", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "HOURS of CPU" in result.output and "steps/s" in result.output
    assert "made local/walker2d/medium-v0" in result.output
    assert dataset_present("local/walker2d/medium-v0")
    assert len(load_transitions("walker2d-medium")) == 200
