"""A sweep's plan before it starts, and one line of overall progress while it runs.

The plan's expected duration is measured, not remembered: a few dozen real gradient steps of each
learner at the sweep's sizes (and a few action choices, a short real model-buffer shard, a few batches
of dynamics and rollout-policy training), timed on the driver in a couple of seconds, times what each
trial still has to do, divided by the trials that run at once. Models already in the artifact store
cost nothing. It is an estimate for a person (a busy machine or a cluster's faster nodes change it);
while the sweep runs, the ETA moves from the plan to the measured rate as steps are done.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from romi.analysis.results import load_results
from romi.artifacts import ArtifactStore
from romi.config import DynamicsConfig, RunConfig
from romi.data.minari_io import dataset_fingerprint, read_metadata
from romi.divergence import diverged_at
from romi.imagination import build
from romi.layout import trial_name
from romi.progress import format_duration
from romi.tasks import get_task
from romi.tune.spec import SweepSpec, check_datasets, trial_bundles
from romi.tune.timing import (
    LearnerTiming,
    time_dynamics_batch,
    time_imagination,
    time_learner,
    time_rollout_policy_iteration,
)
from romi.types import Log


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialWork:
    name: str
    steps: int
    """Gradient steps still to do."""
    seconds: float
    """Learner steps, evaluations and (for ROMI/FOMI) building the model buffer."""


@dataclass(frozen=True)
class SweepPlan:
    trials: tuple[TrialWork, ...]
    finished: int
    """Trials already finished (a resumed sweep): not in `trials`."""
    total_trials: int
    model_seconds: float
    """Training the dynamics models and rollout policies not yet in the artifact store."""
    models_to_train: int
    models_cached: int
    model_time_is_lower_bound: bool
    """True when a dynamics model trains until early stopping and the store has no finished fit of the
    same data and config to go by: its time is counted at `patience + 1` epochs, the fewest it can take."""
    concurrency: int
    steps_per_second: dict[str, float]
    """Measured gradient steps per second of each learner (one trial)."""
    model_epochs_seen: tuple[str, ...] = ()
    """For fits that train until early stopping, what their epochs are counted at, from the store's
    finished fits of the same data and config (see `trained_epochs`), one line per dataset."""

    @property
    def total_steps(self) -> int:
        return sum(t.steps for t in self.trials)

    @property
    def expected_seconds(self) -> float:
        return expected_seconds([t.seconds for t in self.trials], self.model_seconds, self.concurrency)

    def describe(self) -> str:
        """Two lines: the work and its expected duration, then what the estimate is made of."""
        rates = ", ".join(f"{learner} {rate:,.1f}" for learner, rate in self.steps_per_second.items())
        resumed = f" ({self.finished} of {self.total_trials} already finished)" if self.finished else ""
        models = (f"{self.models_to_train} models to train (~{format_duration(self.model_seconds)})"
                  if self.models_to_train else "no models to train")
        if self.models_cached:
            models += f", {self.models_cached} already trained"
        bound = " (at least: dynamics models train until early stopping)" if self.model_time_is_lower_bound else ""
        seen = "".join(f"\n  {line}" for line in self.model_epochs_seen)
        return (f"plan: {len(self.trials)} trials{resumed}, {self.total_steps:,} gradient steps, "
                f"{self.concurrency} at a time: expected duration ~{format_duration(self.expected_seconds)}{bound}\n"
                f"  measured gradient steps/s per trial: {rates}; {models}{seen}")


def expected_seconds(trial_seconds: Sequence[float], model_seconds: float, concurrency: int) -> float:
    """When the last trial ends: trials go to `concurrency` slots, each to the one free first (as Tune
    starts them), so 3 equal trials on 2 slots take two trials' time, not one and a half. Model training
    happens inside the trials that need it; it is shared out over the slots."""
    slots = [0.0] * max(1, concurrency)
    for seconds in trial_seconds:
        slots[slots.index(min(slots))] += seconds
    return max(slots) + model_seconds / len(slots)


def evaluations_between(done: int, total: int, every: int) -> int:
    """Evaluation points in (done, total]: every `every` steps and at the last step."""
    if total <= done:
        return 0
    return total // every - done // every + (0 if total % every == 0 else 1)


def trial_work(config: RunConfig, done: int, timing: LearnerTiming, horizon: int, imagine_seconds: float,
               rollout_workers: int) -> TrialWork:
    """What one trial still costs: its steps, its evaluations' actions and, unless it is resumed (its
    buffer is rebuilt all the same), the model buffer."""
    total = config.gradient_steps or 0
    steps = max(0, total - done)
    evals = evaluations_between(done, total, config.eval.every)
    seconds = steps * timing.seconds_per_step + evals * config.eval.episodes * horizon * timing.seconds_per_action
    if config.method_spec.direction is not None:
        seconds += config.imagination.buffer_size * imagine_seconds / max(1, rollout_workers)
    return TrialWork(trial_name(config.model_dump()), steps, seconds)


def concurrency(spec: SweepSpec, total_cpus: float, max_concurrent: int | None, trials: int) -> int:
    """Trials running at once: as many placement groups as the CPUs hold (ROMI trials also reserve their
    rollout actors' CPUs), capped by `max_concurrent` and the number of trials."""

    cpus = max(sum(b["CPU"] for b in trial_bundles(method, spec.resources)) for method in spec.methods)
    fits = max(1, int(total_cpus // max(cpus, 1e-9)))
    cap = max_concurrent or spec.max_concurrent or fits
    return max(1, min(fits, cap, max(trials, 1)))


def steps_done(experiment: str) -> dict[str, int]:
    """Trial name -> last evaluated step, of a sweep already at `experiment` (empty if none)."""

    try:
        results = load_results(experiment)
    except Exception:  # nothing there yet, or unreadable: the plan counts every step
        return {}
    if results.empty:
        return {}
    return {str(trial): int(step) for trial, step in results.groupby("trial")["step"].max().dropna().items()}


def make_plan(spec: SweepSpec, experiment: str, *, total_cpus: float, max_concurrent: int | None = None,
              resume: bool = False, log: Log = lambda _: None) -> SweepPlan:
    """The sweep's plan: measured timings times the work left (`experiment` holds what is done)."""

    datasets = check_datasets(spec)
    done = steps_done(experiment) if resume else {}
    threads = max(1, int(spec.resources.cpu))
    store = ArtifactStore(f"{experiment}/artifacts")
    log("timing the learners for the plan (a few seconds) ...")
    timings: dict[tuple[str, str], LearnerTiming] = {}
    imagine: dict[str, float] = {}
    models: dict[str, float] = {}
    cached: set[str] = set()
    lower_bound = False
    seen: dict[str, str] = {}
    finished_fits: list[dict[str, Any]] | None = None
    work: list[TrialWork] = []
    finished = 0
    for config in spec.trial_configs():
        task = get_task(config.task)
        obs_dim, act_dim = task.obs_dim, task.act_dim
        key = (config.task, config.method_spec.learner)
        if key not in timings:
            timings[key] = time_learner(config, obs_dim, act_dim, threads)
        trial = trial_work(config, done.get(trial_name(config.model_dump()), 0), timings[key],
                           task.horizon, 0.0, spec.resources.rollout_workers)
        direction = config.method_spec.direction
        if trial.steps == 0:
            finished += 1
            continue
        if direction is not None:
            if config.task not in imagine:
                imagine[config.task] = time_imagination(config, obs_dim, act_dim, task.domain, threads)
            trial = trial_work(config, done.get(trial.name, 0), timings[key], task.horizon, imagine[config.task],
                               spec.resources.rollout_workers)
            dataset_id = datasets[config.task]
            identity = build.DataIdentity(dataset_id, dataset_fingerprint(dataset_id), obs_dim, act_dim)
            rows = int(read_metadata(dataset_id).get("total_steps") or 0)
            dyn_key = build.dynamics_id(identity, direction, config.seed, config.dynamics).key
            pol_key = build.rollout_policy_id(identity, direction, config.seed, config.rollout_policy).key
            # A uniform rollout policy trains nothing: it is no model to wait for.
            artifacts = (dyn_key,) if config.rollout_policy.kind == "uniform" else (dyn_key, pol_key)
            for artifact in artifacts:
                if artifact in models or artifact in cached:
                    continue
                if store.exists(artifact):
                    cached.add(artifact)
                elif artifact == dyn_key:
                    epochs: float | None = None
                    if config.dynamics.max_epochs is None:
                        if finished_fits is None:  # read once per plan, not once per model
                            finished_fits = store.infos("dynamics")
                        history = trained_epochs(finished_fits, identity, config.dynamics)
                        if history:
                            epochs = statistics.median(history)
                            seen[dataset_id] = (
                                f"{dataset_id}: dynamics fits counted at {epochs:g} epochs each, the median of the "
                                f"{len(history)} this store already trained on it ({min(history)}-{max(history)})")
                        else:
                            lower_bound = True
                    models[artifact] = _dynamics_seconds(config.dynamics, rows, obs_dim, act_dim, threads, epochs)
                else:
                    models[artifact] = config.rollout_policy.iterations * time_rollout_policy_iteration(
                        config.rollout_policy, obs_dim, act_dim, threads)
        work.append(trial)
    rates = {learner.upper(): timing.steps_per_second for (_, learner), timing in timings.items()}
    return SweepPlan(
        trials=tuple(work), finished=finished, total_trials=finished + len(work),
        model_seconds=sum(models.values()), models_to_train=len(models), models_cached=len(cached),
        model_time_is_lower_bound=lower_bound, model_epochs_seen=tuple(seen.values()),
        concurrency=concurrency(spec, total_cpus, max_concurrent, len(work)), steps_per_second=rates,
    )


def trained_epochs(fits: list[dict[str, Any]], identity: build.DataIdentity, config: DynamicsConfig) -> list[int]:
    """Epochs each finished dynamics fit (`ArtifactStore.infos("dynamics")`) of this data (same
    fingerprint) and config took, any seed or direction: how long a fit of the same kind trains until
    early stopping, measured. (The reduced sweep's four maze2d fits took 34-62 epochs; the fewest
    possible is `patience + 1` = 6.)"""

    wanted = json.loads(json.dumps(config.model_dump()))
    return sorted(int(info["epochs"]) for info in fits
                  if "epochs" in info and info.get("identity", {}).get("fingerprint") == identity.fingerprint
                  and info["identity"].get("config") == wanted)


def _dynamics_seconds(config: DynamicsConfig, rows: int, obs_dim: int, act_dim: int, threads: int,
                      epochs: float | None = None) -> float:
    """One fit: `epochs` (default: the cap, else the fewest early stopping allows) of its batches."""
    holdout = min(max(int(config.holdout_ratio * rows), 1), config.max_holdout)
    batches = math.ceil(max(rows - holdout, 1) / config.batch_size)
    if config.batches_per_epoch is not None:
        batches = min(batches, config.batches_per_epoch)
    if epochs is None:
        epochs = config.max_epochs if config.max_epochs is not None else config.patience + 1
    return epochs * batches * time_dynamics_batch(config, obs_dim, act_dim, threads)


# --------------------------------------------------------------------------------------------
# Progress while it runs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Counts:
    done: int
    running: int
    pending: int
    failed: int
    steps: int
    total_steps: int


def count_trials(trials: list[tuple[str, int, int]]) -> Counts:
    """(Tune status, steps done, steps in total) per trial -> the counts of the progress line."""
    done = sum(status == "TERMINATED" for status, _, _ in trials)
    running = sum(status == "RUNNING" for status, _, _ in trials)
    failed = sum(status == "ERROR" for status, _, _ in trials)
    return Counts(done, running, len(trials) - done - running - failed,
                  failed, sum(min(step, total) for _, step, total in trials), sum(total for _, _, total in trials))


def eta_seconds(planned: float | None, elapsed: float, session_steps: int, planned_steps: int,
                remaining_steps: int) -> float | None:
    """Seconds left. At first the plan's (`planned` - elapsed); as this session's steps accumulate, the
    measured rate (elapsed per step, model training and evaluations included) takes over in proportion
    to the share of the planned steps done, so the ETA neither jumps nor trusts a rate measured too early."""
    plan_left = None if planned is None else max(0.0, planned - elapsed)
    if session_steps <= 0 or elapsed <= 0:
        return plan_left
    measured = remaining_steps * elapsed / session_steps
    if plan_left is None:
        return measured
    weight = min(1.0, session_steps / max(planned_steps, 1))
    return (1 - weight) * plan_left + weight * measured


def format_progress(counts: Counts, eta: float | None, elapsed: float,
                    diverged: Mapping[str, int] | None = None) -> str:
    """`sweep: 3 done, 2 running, 4 pending | 35,000 / 90,000 steps (39%) | 12 min elapsed, ETA 18 min`,
    then `| diverged: <trial> at step 55,000` for every trial whose critic left its value bound."""
    failed = f", {counts.failed} failed" if counts.failed else ""
    share = 100.0 * counts.steps / max(counts.total_steps, 1)
    line = (f"sweep: {counts.done} done, {counts.running} running, {counts.pending} pending{failed} | "
            f"{counts.steps:,} / {counts.total_steps:,} steps ({share:.0f}%) | "
            f"{format_duration(elapsed)} elapsed, ETA {format_duration(eta)}")
    if diverged:
        line += " | diverged: " + ", ".join(f"{name} at step {step:,}" for name, step in sorted(diverged.items()))
    return line


def make_progress_reporter(total_steps: dict[str, int], plan: SweepPlan | None, *, interval: float = 30.0,
                           log: Log = print, clock: Callable[[], float] = time.monotonic) -> Any:
    """Tune's legacy `ProgressReporter` printing one line of overall progress: when a trial starts or
    ends, every `interval` seconds in between, and at the end (Tune's status table is not printed)."""
    from ray.tune import ProgressReporter

    class SweepProgress(ProgressReporter):
        def __reduce__(self) -> tuple[Any, ...]:
            # Tune pickles its run config (with the reporter) into the experiment; `log` may hold a console
            # that cannot be pickled, and a restored sweep is given a fresh reporter anyway.
            return make_progress_reporter, (total_steps, plan)

        def __init__(self) -> None:
            self.setup()

        def setup(self, *args: Any, **kwargs: Any) -> None:
            self.started = clock()
            self.last_line: float | None = None
            self.last_counts: tuple[int, int, int, int] | None = None
            self.steps_at_start: int | None = None
            self.diverged: dict[str, int] = {}

        def _rows(self, trials: list[Any]) -> list[tuple[str, int, int]]:
            # Tune creates a grid's trials a few at a time: the ones it has not created yet are pending too.
            known = {trial_name(trial.config): trial for trial in trials}
            for name, trial in known.items():  # sticky: a critic that left its bound once has diverged
                step = diverged_at([trial.last_result or {}])
                if step is not None and name not in self.diverged:
                    self.diverged[name] = step
            rows = []
            for name, total in total_steps.items():
                trial = known.get(name)
                if trial is None:
                    rows.append(("PENDING", 0, total))
                else:
                    rows.append((trial.status, int((trial.last_result or {}).get("step") or 0), total))
            return rows

        def should_report(self, trials: list[Any], done: bool = False) -> bool:
            counts = count_trials(self._rows(trials))
            key = (counts.done, counts.running, counts.pending, counts.failed)
            now = clock()
            due = done or key != self.last_counts or self.last_line is None or now - self.last_line >= interval
            if due:
                self.last_counts, self.last_line = key, now
            return due

        def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
            counts = count_trials(self._rows(trials))
            if self.steps_at_start is None:
                self.steps_at_start = counts.steps  # a resumed sweep's steps were not done in this session
            elapsed = clock() - self.started
            planned = None if plan is None else plan.expected_seconds
            planned_steps = counts.total_steps - self.steps_at_start if plan is None else plan.total_steps
            finished = counts.done + counts.failed == len(total_steps)
            eta = 0.0 if done and finished else eta_seconds(planned, elapsed, counts.steps - self.steps_at_start,
                                               planned_steps, counts.total_steps - counts.steps)
            log(format_progress(counts, eta, elapsed, self.diverged))

    return SweepProgress()
