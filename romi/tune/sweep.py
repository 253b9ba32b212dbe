"""`romi sweep`: a sweep file -> a Ray Tune experiment, on the local Ray instance or a cluster.

The experiment lives at `<storage>/<sweep name>/`: Tune's own trial directories (result.json,
progress.csv, params.json, checkpoints; readable by `Tuner.restore`, `ExperimentAnalysis` and
TensorBoard) and `artifacts/`, the dynamics models and rollout policies shared by its trials.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from romi.errors import PreflightError
from romi.layout import MANIFEST_FILE, TrialStatus, trial_name
from romi.locks import exclusive
from romi.storage import absolute, filesystem
from romi.tune import preflight
from romi.tune.cluster_checks import check_cluster
from romi.tune.plan import SweepPlan, make_plan, make_progress_reporter
from romi.tune.quiet import quiet_driver_logs
from romi.tune.spec import SweepSpec, check_datasets, trial_bundles  # noqa: F401 (callers import check_datasets)
from romi.tune.trainable import romi_trainable

DEFAULT_STORAGE = "runs/sweeps"


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address is None:
        # The embedded local instance: small object store, no dashboard, quiet.
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                 object_store_memory=int(os.environ.get("ROMI_OBJECT_STORE_BYTES", 2 * 1024**3)))
        return
    try:
        ray.init(address=address)
    except ConnectionError as err:
        raise PreflightError(
            f"cannot connect to a Ray cluster at --address {address}: {err}",
            "start the cluster (`ray start --head`), give its head's host:port, or drop --address for local Ray",
        ) from None


def _start_over(experiment: str) -> None:
    """`--overwrite`: remove the sweep's trials and Tune state; keep `artifacts/` (models keyed by their
    dataset, seed and config, so reusing them changes no result)."""
    import pyarrow.fs

    fs, path = filesystem(experiment)
    for info in fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True)):
        if info.base_name == "artifacts":
            continue
        if info.type == pyarrow.fs.FileType.Directory:
            fs.delete_dir(info.path)
        else:
            fs.delete_file(info.path)


def write_manifest(spec: SweepSpec, experiment: str) -> None:
    fs, path = filesystem(experiment)
    fs.create_dir(path, recursive=True)
    trials = [{"trial": trial_name(c.model_dump()), "task": c.task, "method": c.method, "seed": c.seed,
               "gradient_steps": c.gradient_steps} for c in spec.trial_configs()]
    text = json.dumps({"spec": spec.model_dump(mode="json"), "trials": trials}, indent=2)
    with fs.open_output_stream(f"{path}/{MANIFEST_FILE}") as stream:
        stream.write(text.encode())


def build_tuner(spec: SweepSpec, storage: str = DEFAULT_STORAGE, *, resume: bool = False,
                max_concurrent: int | None = None, stop: Any = None, extra: dict[str, Any] | None = None,
                plan: SweepPlan | None = None, log: Callable[[str], None] = print) -> Any:
    """The `ray.tune.Tuner` of a sweep (restored from `storage` when `resume`).

    `stop` is a Tune stopper; `extra` adds keys to every trial's config (tests inject failures); `plan`
    gives the progress line its expected duration until the measured rate takes over.
    """
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from romi.tune.coordination import start_coordinator

    # Tune's legacy output engine takes a custom reporter (the newer one ignores reporters): romi's prints
    # one line of overall progress instead of Tune's status table.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A trial checkpoints at every evaluation; Tune's warning that experiment snapshots are frequent says
    # nothing the user can act on (romi keeps 2 checkpoints per trial on purpose).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    quiet_driver_logs()
    total_steps = {trial_name(c.model_dump()): c.gradient_steps or 0 for c in spec.trial_configs()}
    reporter = make_progress_reporter(total_steps, plan, log=log)
    storage_uri = absolute(storage)
    experiment = f"{storage_uri.rstrip('/')}/{spec.name}"
    start_coordinator()
    resources = spec.resources
    # Per trial, from its method: plain BCQ/CQL never build a model buffer, so they hold no rollout CPUs.
    trainable = tune.with_resources(
        romi_trainable, lambda config: tune.PlacementGroupFactory(trial_bundles(config["method"], resources)))

    if resume and tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
        # A restored Tuner keeps the reporter it was saved with (none of the user's choosing): give it ours.
        if getattr(tuner, "_local_tuner", None) is not None:  # (Ray client mode has no local tuner)
            tuner._local_tuner._run_config.progress_reporter = reporter
        return tuner

    if resume:
        print(f"nothing to resume at {experiment}: starting the sweep")
    cells = trial_cells(spec)
    param_space = {
        # Task, method and seed come from the search algorithm's list of trials (below), one point per
        # trial, not from a product grid: a sweep may exclude single trials (finished elsewhere).
        "task": None,
        "method": None,
        "seed": None,
        "profile": spec.profile,
        "overrides": spec.overrides,
        "artifacts": f"{experiment}/artifacts",
        "rollout_workers": resources.rollout_workers,
        "sweep": spec.name,
        "table": spec.table,
        **(extra or {}),
    }
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=cells,
                                             max_concurrent=max_concurrent or spec.max_concurrent or 0),
            num_samples=len(cells),
            trial_name_creator=lambda trial: trial_name(trial.config),
            trial_dirname_creator=lambda trial: trial_name(trial.config),
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=storage_uri,
            stop=stop,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            progress_reporter=reporter,
            verbose=1,
        ),
    )


def trial_cells(spec: SweepSpec) -> list[dict[str, Any]]:
    """The sweep's trials as Tune points to evaluate: one {task, method, seed} each, in the spec's order."""
    return [{"task": c.task, "method": c.method, "seed": c.seed} for c in spec.trial_configs()]


def run_sweep(spec: SweepSpec, storage: str = DEFAULT_STORAGE, *, address: str | None = None,
              resume: bool = False, overwrite: bool = False, max_concurrent: int | None = None,
              num_cpus: int | None = None, plan_only: bool = False, log: Callable[[str], None] = print) -> Any:
    """Preflight, start (or attach to) Ray, run the sweep; returns Tune's `ResultGrid`.

    Nothing is written and no trial starts until every check of `romi.tune.preflight` has passed. A spec
    whose every trial is excluded runs nothing (an empty list). `plan_only`: log the plan (trials, steps,
    measured speed on this cluster, expected duration; with `resume`, of the work left) and return an
    empty list, having written nothing to the storage.
    """
    if not spec.trial_configs():
        log(f"sweep {spec.name}: nothing to run (every trial is excluded: {', '.join(spec.exclude)})")
        return []
    experiment = preflight.before_ray(spec, storage, address=address, num_cpus=num_cpus, resume=resume,
                                      overwrite=overwrite, log=log)
    if plan_only:
        return _run(spec, storage, experiment, address=address, num_cpus=num_cpus, resume=resume,
                    overwrite=overwrite, max_concurrent=max_concurrent, plan_only=True, log=log)
    # One driver per sweep: a second `romi sweep` of it on this machine is refused while the first runs, and
    # `romi report` sees the lock held and calls the unfinished trials running, not stopped.
    with exclusive(Path(experiment), f"sweep {experiment}"):
        return _run(spec, storage, experiment, address=address, num_cpus=num_cpus, resume=resume,
                    overwrite=overwrite, max_concurrent=max_concurrent, plan_only=False, log=log)


def _run(spec: SweepSpec, storage: str, experiment: str, *, address: str | None, num_cpus: int | None,
         resume: bool, overwrite: bool, max_concurrent: int | None, plan_only: bool,
         log: Callable[[str], None]) -> Any:
    if plan_only and address is None:  # a local plan needs no Ray: the machine's own resources
        cluster = preflight.local_resources(num_cpus)
    else:
        init_ray(address, num_cpus)
        cluster = preflight.cluster_resources()
    spec = preflight.check_resources(spec, cluster, local=address is None, log=log)
    if not plan_only:
        check_cluster(spec, absolute(storage))  # every node sees the storage and has the data, before any trial
        if overwrite:
            _start_over(experiment)
        write_manifest(spec, experiment)
    plan = make_plan(spec, experiment, total_cpus=cluster.total_cpu,
                     max_concurrent=max_concurrent, resume=resume and not overwrite, log=log)
    log(plan.describe())
    if plan_only:
        return []
    tuner = build_tuner(spec, storage, resume=resume, max_concurrent=max_concurrent, plan=plan, log=log)
    return tuner.fit()


@dataclass(frozen=True)
class TrialOutcome:
    """Where one trial of a sweep stands after `run_sweep` returns (possibly interrupted)."""

    task: str
    method: str
    seed: int
    step: int | None
    score: float | None
    status: TrialStatus
    reason: str = ""
    """For a failed trial whose cause romi knows how to fix (a full disk), one line: what and the fix."""


def failure_reason(error: BaseException | None) -> str:
    """One line for a trial error romi knows the fix of, else "" (its traceback, printed above, says more).
    Tune wraps the trial's exception, so the cause is read from the text it carries."""
    text = str(error or "")
    if "no space left" in text.lower() or "disk quota exceeded" in text.lower():
        return ("no space left on the disk of its storage or artifacts: free space there (or give --storage a disk "
                "with room), then rerun with --resume; it continues from its last checkpoint")
    return ""


def trial_statuses(spec: SweepSpec, grid: Iterable[Any]) -> list[TrialOutcome]:
    """One row per trial of the spec, matched to its Tune result by name. An interrupted sweep's
    grid also holds trials that never started (no metrics): they must not read as finished."""
    results = {trial_name(r.config): r for r in grid if r.config}
    rows = []
    for config in spec.trial_configs():
        result = results.get(trial_name(config.model_dump()))
        metrics = (result.metrics or {}) if result is not None else {}
        step = metrics.get("step")
        reason = ""
        if result is not None and result.error is not None:
            status, reason = "failed", failure_reason(result.error)
        elif step is not None and step >= (config.gradient_steps or 0):
            status = "finished"
        else:
            status = "stopped" if step is not None else "not started"
        rows.append(TrialOutcome(config.task, config.method, config.seed, step, metrics.get("score"), status, reason))
    return rows
