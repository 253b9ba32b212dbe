"""Progress a person can read: durations, the dynamics epoch status, the train bar, the sweep's plan and
progress line, the dataset writer's and the report's lines, and the noise romi keeps out of the way."""

from __future__ import annotations

import io
import logging
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from romi.artifacts import ArtifactStore
from romi.config import build_run_config
from romi.progress import (
    BarReporter,
    DynamicsEpoch,
    EpochTimer,
    Reporter,
    format_duration,
    format_dynamics_epoch,
)
from romi.tune import plan as sweep_plan
from romi.tune import timing as timing_mod
from romi.tune.quiet import ANALYSIS_LOGGER, CHECKPOINT_LOGGERS, TUNE_LOGGER, quiet_driver_logs, quiet_trial_logs

TINY_DYNAMICS = {"max_epochs": 3, "batches_per_epoch": 5, "hidden_dim": 16}
TINY = {
    "gradient_steps": 120,
    "eval": {"every": 60, "episodes": 1, "last_k": 1},
    "dynamics": TINY_DYNAMICS,
    "rollout_policy": {"iterations": 20, "cvae": {"hidden_dim": 16}},
    "imagination": {"buffer_size": 1000, "shard_size": 500},
    "bcq": {"actor_hidden": [16, 16], "critic_hidden": [16, 16], "vae": {"hidden_dim": 16}, "batch_size": 16},
    "cql": {"hidden": [16, 16], "batch_size": 16, "bc_steps": 5},
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------------------------
# Pure formatting
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "text"), [
    (None, "?"), (math.inf, "?"), (-3, "0 s"), (42.4, "42 s"), (89, "89 s"), (90, "2 min"), (600, "10 min"),
    (5399, "90 min"), (5400, "1 h 30 min"), (3 * 3600 + 5 * 60, "3 h 05 min"), (50 * 3600, "2 d 2 h"),
])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_dynamics_epoch_line_with_and_without_a_cap() -> None:
    capped = DynamicsEpoch("reverse", 7, 20, 5, 2, 0.012345, 2.1)
    assert capped.eta_seconds == pytest.approx(13 * 2.1)
    assert format_dynamics_epoch(capped) == (
        "dynamics (reverse): epoch 7/20  holdout MSE 0.01235  2.1 s/epoch  ETA 27 s")
    open_ended = DynamicsEpoch("forward", 7, None, 5, 2, 0.5, 95.0)
    assert open_ended.eta_seconds is None
    assert format_dynamics_epoch(open_ended) == (
        "dynamics (forward): epoch 7, no improvement for 2 of 5  holdout MSE 0.5  95.0 s/epoch")


def test_epoch_timer_is_the_mean_since_the_start() -> None:
    clock = FakeClock()
    timer = EpochTimer(clock)
    clock.now = 3.0
    assert timer.epoch_done() == 3.0
    clock.now = 5.0
    assert timer.epoch_done() == 2.5


def test_line_reporter_throttles_epochs_but_always_shows_the_first_and_the_last() -> None:
    lines: list[str] = []
    clock = FakeClock()
    reporter = Reporter(lines.append, min_interval=10.0, clock=clock)
    for epoch in range(1, 6):
        clock.now = epoch * 4.0
        reporter.dynamics_epoch(DynamicsEpoch("reverse", epoch, 5, 5, 0, 1.0, 3.0))
    # epoch 1 (first), epoch 4 (12 s after the first line), epoch 5 (the cap)
    assert [line.split()[3] for line in lines] == ["1/5", "4/5", "5/5"]
    reporter.dynamics_done("reverse")
    reporter.dynamics_epoch(DynamicsEpoch("forward", 1, 5, 5, 0, 1.0, 3.0))
    assert lines[-1].startswith("dynamics (forward): epoch 1/5"), "the next model's first epoch is shown at once"
    reporter.gradient_steps(50, 100)
    assert len(lines) == 4, "gradient steps print nothing in a log"


def test_bar_reporter_starts_the_step_bar_at_the_resumed_step_and_drops_finished_model_bars() -> None:
    from rich.console import Console
    from rich.progress import Progress

    clock = FakeClock()
    progress = Progress(*BarReporter.columns(), console=Console(file=io.StringIO()))
    reporter = BarReporter(progress, lambda _: None, clock=clock)
    reporter.dynamics_epoch(DynamicsEpoch("reverse", 1, None, 5, 0, 0.25, 1.5))
    (model,) = progress.tasks
    assert model.description == "dynamics (reverse)" and model.total is None
    assert model.fields["count"] == "epoch 1" and "no improvement for 0 of 5" in model.fields["status"]
    reporter.dynamics_epoch(DynamicsEpoch("forward", 2, 10, 5, 0, 0.25, 30.0))
    assert progress.tasks[1].fields["status"].endswith("30.0 s/epoch  ETA 4 min")
    reporter.dynamics_done("reverse")
    reporter.dynamics_done("forward")
    assert not progress.tasks
    reporter.gradient_steps(300, 600)
    clock.now = 10.0
    reporter.gradient_steps(350, 600)
    (steps,) = progress.tasks
    assert steps.completed == 350 and steps.total == 600 and steps.fields["count"] == "350/600"
    # 50 steps in this session took 10 s: 250 more take 50 s (the resumed 300 count for nothing)
    assert steps.fields["status"] == "ETA 50 s"
    reporter.status("score   12.0")
    assert steps.fields["status"] == "ETA 50 s  score   12.0"


# --------------------------------------------------------------------------------------------
# Dynamics training and gradient steps, through the real code
# --------------------------------------------------------------------------------------------
class Recorder(Reporter):
    def __init__(self) -> None:
        super().__init__(lambda _: None)
        self.epochs: list[DynamicsEpoch] = []
        self.steps: list[int] = []

    def dynamics_epoch(self, status: DynamicsEpoch) -> None:
        self.epochs.append(status)

    def gradient_steps(self, step: int, total: int) -> None:
        self.steps.append(step)


def test_dynamics_bar_sees_every_epoch_and_changes_no_weight(umaze_dataset: str, tmp_path: Path) -> None:
    from romi.data.minari_io import dataset_fingerprint, load_transitions, resolve_dataset_id
    from romi.imagination import build
    from romi.tasks import get_task

    task = get_task(umaze_dataset)
    dataset_id = resolve_dataset_id(task)
    data = load_transitions(dataset_id)
    identity = build.DataIdentity(dataset_id, dataset_fingerprint(dataset_id), data.obs_dim, data.act_dim)
    config = build_run_config(umaze_dataset, "ROMI-BCQ", 0, "quick", {"dynamics": TINY_DYNAMICS}).dynamics
    recorder, lines = Recorder(), []
    shown = build.dynamics_model(ArtifactStore(tmp_path / "a"), data, identity, task, "reverse", 0, config,
                                 lines.append, recorder)
    quiet = build.dynamics_model(ArtifactStore(tmp_path / "b"), data, identity, task, "reverse", 0, config)
    assert [e.epoch for e in recorder.epochs] == [1, 2, 3]
    assert all(e.max_epochs == 3 and e.seconds_per_epoch > 0 and e.holdout_mse > 0 for e in recorder.epochs)
    assert any(line.startswith("dynamics (reverse): trained in 3 epochs") for line in lines)
    for key, value in shown.state_dict().items():
        assert torch.equal(value, quiet.state_dict()[key]), f"showing progress changed {key}"


def test_a_resumed_dynamics_fit_times_only_its_own_epochs(umaze_dataset: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from romi.data.minari_io import dataset_fingerprint, load_transitions, resolve_dataset_id
    from romi.imagination import build
    from romi.tasks import get_task

    class Ticking:  # every reading of the clock is 10 s after the previous one
        def __init__(self) -> None:
            self.now = -10.0

        def __call__(self) -> float:
            self.now += 10.0
            return self.now

    monkeypatch.setattr(build, "EpochTimer", lambda: EpochTimer(Ticking()))
    monkeypatch.setattr(build, "FIT_CHECKPOINT_EVERY_S", 0.0)  # save after every epoch
    task = get_task(umaze_dataset)
    dataset_id = resolve_dataset_id(task)
    data = load_transitions(dataset_id)
    identity = build.DataIdentity(dataset_id, dataset_fingerprint(dataset_id), data.obs_dim, data.act_dim)
    config = build_run_config(umaze_dataset, "ROMI-BCQ", 0, "quick", {"dynamics": TINY_DYNAMICS}).dynamics
    store = ArtifactStore(tmp_path / "artifacts")

    class StopAtTwo(Recorder):
        def dynamics_epoch(self, status: DynamicsEpoch) -> None:
            super().dynamics_epoch(status)
            if status.epoch == 2:
                raise KeyboardInterrupt

    first = StopAtTwo()
    with pytest.raises(KeyboardInterrupt):
        build.dynamics_model(store, data, identity, task, "reverse", 0, config, reporter=first)
    resumed = Recorder()
    build.dynamics_model(store, data, identity, task, "reverse", 0, config, reporter=resumed)
    assert [e.epoch for e in first.epochs] == [1, 2] and [e.epoch for e in resumed.epochs] == [3]
    assert [e.seconds_per_epoch for e in first.epochs + resumed.epochs] == [10.0, 10.0, 10.0]


def test_gradient_steps_are_reported_between_evaluations_and_from_the_resumed_step(umaze_dataset: str,
                                                                                    tmp_path: Path) -> None:
    from romi.pipeline import PROGRESS_EVERY
    from romi.train import train_run

    config = build_run_config(umaze_dataset, "BCQ", 0, "quick", TINY)

    def interrupt(record, run) -> None:
        raise KeyboardInterrupt

    first = Recorder()
    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "run", tmp_path / "artifacts", on_eval=interrupt, reporter=first)
    assert first.steps == [0, PROGRESS_EVERY], "the bar moved before the first evaluation (step 60)"
    resumed = Recorder()
    train_run(config, tmp_path / "run", tmp_path / "artifacts", reporter=resumed)
    assert resumed.steps[0] == 60, "after a resume the bar starts at the checkpoint's step"
    assert resumed.steps[1:] == [100]


# --------------------------------------------------------------------------------------------
# The sweep's plan
# --------------------------------------------------------------------------------------------
def test_expected_duration_and_evaluation_count() -> None:
    assert sweep_plan.expected_seconds([300.0, 300.0, 300.0], 100.0, 2) == 650.0  # two rounds + models / 2
    assert sweep_plan.expected_seconds([450.0, 450.0], 100.0, 2) == 500.0
    assert sweep_plan.expected_seconds([900.0], 100.0, 0) == 1000.0
    assert sweep_plan.expected_seconds([100.0, 100.0, 400.0], 0.0, 2) == 500.0  # the long one starts last
    assert sweep_plan.evaluations_between(0, 10_000, 2_500) == 4
    assert sweep_plan.evaluations_between(2_500, 10_000, 2_500) == 3
    assert sweep_plan.evaluations_between(0, 100, 30) == 4  # 30, 60, 90 and the last step
    assert sweep_plan.evaluations_between(100, 100, 30) == 0


def test_trial_work_counts_steps_evaluations_and_the_model_buffer(umaze_dataset: str) -> None:
    timing = timing_mod.LearnerTiming(seconds_per_step=0.01, seconds_per_action=0.001)
    romi = build_run_config(umaze_dataset, "ROMI-BCQ", 0, "quick", TINY)
    work = sweep_plan.trial_work(romi, 60, timing, horizon=300, imagine_seconds=1e-4, rollout_workers=2)
    assert work.name == "maze2d-umaze-sparse_ROMI-BCQ_seed0" and work.steps == 60
    assert work.seconds == pytest.approx(60 * 0.01 + 1 * 1 * 300 * 0.001 + 1000 * 1e-4 / 2)
    plain = build_run_config(umaze_dataset, "BCQ", 0, "quick", TINY)
    assert sweep_plan.trial_work(plain, 0, timing, 300, 1.0, 2).seconds == pytest.approx(120 * 0.01 + 2 * 0.3)


def test_learners_are_timed_for_real_at_the_configs_sizes(umaze_dataset: str) -> None:
    for method in ("BCQ", "CQL"):
        config = build_run_config(umaze_dataset, method, 0, "quick", TINY)
        timing = timing_mod.time_learner(config, 4, 2)
        assert 0 < timing.seconds_per_step < 1 and 0 < timing.seconds_per_action < 1
    small = build_run_config(umaze_dataset, "BCQ", 0, "quick", TINY)
    big = build_run_config(umaze_dataset, "BCQ", 0, "quick", {**TINY, "bcq": {"actor_hidden": [512, 512],
                                                                            "critic_hidden": [512, 512],
                                                                            "batch_size": 512}})
    assert timing_mod.time_learner(big, 4, 2).seconds_per_step > timing_mod.time_learner(small, 4, 2).seconds_per_step


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_trials_are_timed_on_the_cpu_of_a_driver_without_one(umaze_dataset: str) -> None:
    """A CPU-only head node plans a sweep of GPU trials (it has no GPU to time them on) instead of failing."""
    config = build_run_config(umaze_dataset, "BCQ", 0, "quick", {**TINY, "device": "cuda"})
    assert 0 < timing_mod.time_learner(config, 4, 2).seconds_per_step < 1


def test_plan_counts_models_and_skips_those_in_the_store(umaze_dataset: str, tmp_path: Path) -> None:
    """The plan's artifact keys are the ones a trial builds: a model a run trained costs the plan nothing."""
    import yaml

    from romi.train import train_run
    from romi.tune.spec import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "tasks": [umaze_dataset], "methods": ["ROMI-BCQ", "FOMI-BCQ", "BCQ"],
                                    "seeds": 1, "profile": "quick", "overrides": TINY,
                                    "resources": {"cpu": 1, "rollout_workers": 0}}))
    spec = load_sweep(path)
    experiment = str(tmp_path / "sweeps" / "s")
    before = sweep_plan.make_plan(spec, experiment, total_cpus=2)
    assert len(before.trials) == 3 and before.total_steps == 3 * 120 and before.concurrency == 2
    # maze2d's paper rollout policy is uniform (nothing to train): the reverse and the forward model
    assert before.models_to_train == 2 and before.models_cached == 0 and before.model_seconds > 0
    assert set(before.steps_per_second) == {"BCQ"} and before.steps_per_second["BCQ"] > 0
    assert before.expected_seconds > 0
    text = before.describe()
    assert text.startswith("plan: 3 trials, 360 gradient steps, 2 at a time: expected duration ~")
    assert "2 models to train" in text

    config = build_run_config(umaze_dataset, "ROMI-BCQ", 0, "quick", TINY)
    train_run(config, tmp_path / "run", Path(experiment) / "artifacts")
    after = sweep_plan.make_plan(spec, experiment, total_cpus=2)
    assert after.models_to_train == 1 and after.models_cached == 1
    # (Not `after.model_seconds < before.model_seconds`: each plan times a batch afresh, and a busy
    # machine can make one model's fresh timing exceed two models' earlier one.)
    assert "1 models to train" in after.describe()


def test_an_early_stopping_fit_is_planned_at_the_epochs_finished_fits_of_its_data_took(
        umaze_dataset: str, tmp_path: Path) -> None:
    """Uncapped fits: counted at `patience + 1` epochs (a lower bound, said so) until the store has finished
    fits of the same data and config; then at their median, whatever their seed or direction."""
    import json

    import yaml

    from romi.data.minari_io import dataset_fingerprint, resolve_dataset_id
    from romi.imagination import build
    from romi.tasks import get_task
    from romi.tune.spec import load_sweep

    uncapped = {**TINY, "dynamics": {**TINY_DYNAMICS, "max_epochs": None}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "tasks": [umaze_dataset], "methods": ["ROMI-BCQ"], "seeds": [0],
                                    "profile": "quick", "overrides": uncapped,
                                    "resources": {"cpu": 1, "rollout_workers": 0}}))
    spec = load_sweep(path)
    experiment = str(tmp_path / "sweeps" / "s")
    first = sweep_plan.make_plan(spec, experiment, total_cpus=2)
    assert first.model_time_is_lower_bound and not first.model_epochs_seen
    assert "(at least: dynamics models train until early stopping)" in first.describe()

    config = build_run_config(umaze_dataset, "ROMI-BCQ", 0, "quick", uncapped).resolved()
    dataset_id = resolve_dataset_id(get_task(umaze_dataset))
    identity = build.DataIdentity(dataset_id, dataset_fingerprint(dataset_id), 4, 2)
    other = config.dynamics.model_copy(update={"hidden_dim": 32})
    store = tmp_path / "sweeps" / "s" / "artifacts" / "dynamics"
    for name, direction, seed, dynamics, epochs in (("a", "reverse", 5, config.dynamics, 30),
                                                     ("b", "forward", 6, config.dynamics, 50),
                                                     ("c", "reverse", 7, other, 99)):  # another config: ignored
        (store / name).mkdir(parents=True)
        info = {"epochs": epochs, "identity": {**identity.with_(direction, seed), "config": dynamics.model_dump()}}
        (store / name / "info.json").write_text(json.dumps(info))
    fits = ArtifactStore(store.parent).infos("dynamics")
    assert sweep_plan.trained_epochs(fits, identity, config.dynamics) == [30, 50]
    informed = sweep_plan.make_plan(spec, experiment, total_cpus=2)
    assert not informed.model_time_is_lower_bound and informed.models_to_train == 1
    assert informed.model_epochs_seen == (
        f"{dataset_id}: dynamics fits counted at 40 epochs each, the median of the 2 this store already "
        "trained on it (30-50)",)
    assert "at least" not in informed.describe() and "40 epochs" in informed.describe()


def test_concurrency_follows_the_cpus_the_cap_and_the_trials(umaze_dataset: str) -> None:
    from romi.tune.spec import SweepSpec

    spec = SweepSpec(name="c", tasks=(umaze_dataset,), methods=("ROMI-BCQ", "BCQ"), seeds=3,
                     resources={"cpu": 1, "rollout_workers": 1})
    assert sweep_plan.concurrency(spec, 8, None, 6) == 4  # a ROMI trial holds 2 CPUs
    assert sweep_plan.concurrency(spec, 8, 3, 6) == 3
    assert sweep_plan.concurrency(spec, 8, None, 1) == 1
    assert sweep_plan.concurrency(spec, 1, None, 6) == 1


# --------------------------------------------------------------------------------------------
# The progress line
# --------------------------------------------------------------------------------------------
def test_counts_and_progress_line() -> None:
    counts = sweep_plan.count_trials([("TERMINATED", 100, 100), ("RUNNING", 40, 100), ("PENDING", 0, 100),
                                      ("PAUSED", 0, 100), ("ERROR", 30, 100), ("TERMINATED", 150, 100)])
    assert counts == sweep_plan.Counts(done=2, running=1, pending=2, failed=1, steps=270, total_steps=600)
    assert sweep_plan.format_progress(counts, 1800.0, 600.0) == (
        "sweep: 2 done, 1 running, 2 pending, 1 failed | 270 / 600 steps (45%) | 10 min elapsed, ETA 30 min")


def test_eta_moves_from_the_plan_to_the_measured_rate() -> None:
    assert sweep_plan.eta_seconds(1000.0, 100.0, 0, 1000, 1000) == 900.0
    assert sweep_plan.eta_seconds(None, 100.0, 0, 1000, 1000) is None
    assert sweep_plan.eta_seconds(None, 100.0, 200, 1000, 800) == 400.0
    # half the planned steps done: halfway between the plan (500 s left) and the rate (100 s for 500 steps)
    assert sweep_plan.eta_seconds(1000.0, 500.0, 500, 1000, 500) == pytest.approx(0.5 * 500 + 0.5 * 500)
    assert sweep_plan.eta_seconds(1000.0, 100.0, 500, 1000, 500) == pytest.approx(0.5 * 900 + 0.5 * 100)
    assert sweep_plan.eta_seconds(1000.0, 100.0, 1000, 1000, 0) == 0.0


def _trial(name: str, status: str, step: int | None) -> SimpleNamespace:
    task, method, seed = name.split("_")
    return SimpleNamespace(status=status, last_result={} if step is None else {"step": step},
                           config={"task": task, "method": method, "seed": int(seed.removeprefix("seed"))})


def test_progress_reporter_prints_one_line_on_changes_and_at_an_interval() -> None:
    import ray.cloudpickle

    totals = {"t_A_seed0": 100, "t_A_seed1": 100, "t_B_seed0": 100}
    lines: list[str] = []
    clock = FakeClock()
    reporter = sweep_plan.make_progress_reporter(totals, None, interval=30.0, log=lines.append, clock=clock)
    reporter.setup(start_time=0.0)
    trials = [_trial("t_A_seed0", "RUNNING", None), _trial("t_A_seed1", "PENDING", None)]
    assert reporter.should_report(trials)
    reporter.report(trials, False)
    assert lines == ["sweep: 0 done, 1 running, 2 pending | 0 / 300 steps (0%) | 0 s elapsed, ETA ?"], \
        "a trial Tune has not created yet is pending"
    clock.now = 10.0
    trials[0].last_result = {"step": 50}
    assert not reporter.should_report(trials), "no new line for a step alone within the interval"
    clock.now = 40.0
    assert reporter.should_report(trials)
    reporter.report(trials, False)
    assert lines[-1] == "sweep: 0 done, 1 running, 2 pending | 50 / 300 steps (17%) | 40 s elapsed, ETA 3 min"
    trials[0].status, trials[0].last_result = "TERMINATED", {"step": 100}
    clock.now = 41.0
    assert reporter.should_report(trials), "a trial that ends is news"
    # Tune pickles its run config with the reporter; a log holding a console must not break that.
    console_log = io.StringIO().write
    copy = ray.cloudpickle.loads(ray.cloudpickle.dumps(
        sweep_plan.make_progress_reporter(totals, None, log=console_log)))
    assert copy.should_report(trials)


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------
def test_ray_noise_filters_drop_only_the_noise(caplog: pytest.LogCaptureFixture) -> None:
    quiet_trial_logs()
    quiet_trial_logs()  # idempotent
    quiet_driver_logs()
    assert sum(type(f).__name__ == "DropMessages" for f in logging.getLogger(CHECKPOINT_LOGGERS[0]).filters) == 1
    # Listen on the loggers themselves, enabled at INFO: an earlier test of the session (Ray, RLlib) may
    # have raised their levels, disabled them or turned off their propagation to caplog's root handler.
    loggers = [logging.getLogger(name) for name in (CHECKPOINT_LOGGERS[0], TUNE_LOGGER, ANALYSIS_LOGGER)]
    saved = [(logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.addHandler(caplog.handler)
        logger.setLevel(logging.INFO)
        logger.disabled = False
    with caplog.at_level(logging.INFO):
        logging.getLogger(CHECKPOINT_LOGGERS[0]).info("Checkpoint successfully created at: Checkpoint(path=/x)")
        logging.getLogger(CHECKPOINT_LOGGERS[0]).info("Uploading checkpoint files")
        logging.getLogger(TUNE_LOGGER).warning('Experiment has been interrupted, but the most recent state was '
                                               'saved.\nResume experiment with: Tuner.restore(path="/x", ...)')
        logging.getLogger(TUNE_LOGGER).warning("Stop signal received (e.g. via SIGINT/Ctrl+C)")
        missing = ("Failed to fetch metrics for 1 trial(s):\n- t_BCQ_seed0: FileNotFoundError('Could not fetch "
                   "metrics for t_BCQ_seed0: both result.json and progress.csv were not found at /x')")
        logging.getLogger(ANALYSIS_LOGGER).warning(missing)
        broken = "Failed to fetch metrics for 1 trial(s):\n- t_CQL_seed0: JSONDecodeError('Expecting value')"
        logging.getLogger(ANALYSIS_LOGGER).warning(broken)
    for logger, (level, disabled) in zip(loggers, saved, strict=True):
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
        logger.disabled = disabled
    messages = list(dict.fromkeys(r.getMessage() for r in caplog.records))  # once, if it also propagated
    assert messages == ["Uploading checkpoint files", "Stop signal received (e.g. via SIGINT/Ctrl+C)", broken]


def test_the_adroit_notice_is_not_printed_once_romi_is_imported(tmp_path: Path) -> None:
    def stderr_of(code: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                              check=True).stderr

    if "AdroitHand" not in stderr_of("import gymnasium_robotics"):
        pytest.skip("this gymnasium-robotics prints no Adroit notice")
    assert "AdroitHand" not in stderr_of("import romi, gymnasium_robotics")
    assert "AdroitHand" not in stderr_of("import romi.envs; romi.envs.register_robotics_envs()")


def test_pyproject_licence_is_an_spdx_string() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"


# --------------------------------------------------------------------------------------------
# The dataset writer and the report
# --------------------------------------------------------------------------------------------
def test_dataset_writer_says_what_it_does_after_the_simulation(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from romi.data.make import make_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    lines: list[str] = []
    make_dataset("maze2d-umaze-sparse", steps=500, seed=0, ref_episodes=1, log=lines.append)
    assert lines[0].startswith("measuring reference scores: 1 episodes each")
    assert lines[1].startswith("writing 500 steps (") and str(tmp_path / "datasets") in lines[1]
    assert lines[2].startswith("wrote local/pointmaze/umaze-d4rl-v0 in ")
    lines.clear()
    assert not make_dataset("maze2d-umaze-sparse", steps=500, seed=0, ref_episodes=1, log=lines.append).made
    assert lines == [f"checking the existing local/pointmaze/umaze-d4rl-v0 at {tmp_path / 'datasets'}/local/pointmaze/"
                     "umaze-d4rl-v0 (readable, finite, the task's sizes) ..."]
