"""The Tune trainable: one (task, method, seed) through `romi.pipeline.Run`, reported to Tune.

It is a thin layer: every evaluation is reported with a checkpoint of the whole run (`Run.save`: the
same files as a `romi train` directory, see `romi.layout`), so a trial that fails is retried from its
last evaluation with no repeated or missing evaluations, and a resumed sweep never recomputes a
finished trial. Tune's result.json is written by the driver and can lose or repeat the line reported
just before a trial fails (seen under load on 2 cores); the checkpointed `evaluations.jsonl` is
complete by construction, and `romi.analysis.load_results` prefers it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from romi.artifacts import ArtifactStore
from romi.config import build_run_config
from romi.imagination.rollout import build_buffer_in_process
from romi.layout import trial_name
from romi.pipeline import Run, read_state

__all__ = ["romi_trainable", "trial_name"]


def romi_trainable(trial: dict[str, Any]) -> None:
    """Tune function trainable. `trial` holds task, method, seed, profile, overrides, artifacts, workers."""
    from ray import tune

    from romi.imagination.workers import RayBufferBuilder
    from romi.tune.coordination import RayBuildLock
    from romi.tune.quiet import quiet_trial_logs

    quiet_trial_logs()

    context = tune.get_context()
    torch.set_num_threads(trial_threads(context.get_trial_resources().bundles))
    config = build_run_config(trial["task"], trial["method"], trial["seed"], trial["profile"], trial["overrides"])
    if context.get_trial_resources().required_resources.get("GPU", 0) > 0:
        config = config.model_copy(update={"device": "cuda"})
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # read before the minutes of setup: a damaged one is refused at once
        with checkpoint.as_directory() as directory:
            state = read_state(Path(directory), config,
                               f"trial {trial_name(trial)} cannot continue from {checkpoint.path}: rerun the "
                               "sweep with --overwrite to start it over (its trained models are kept)")
    lock = RayBuildLock(owner=context.get_trial_id()) if trial.get("coordinated", True) else None
    artifacts = ArtifactStore(trial["artifacts"], lock=lock)
    # No more actors than the trial's placement group has bundles for (one is the trial's own): a
    # sweep resumed after preflight lowered rollout_workers must not wait forever for a missing bundle.
    bundles = len(context.get_trial_resources().bundles)
    workers = min(int(trial.get("rollout_workers", 0)), max(0, bundles - 1))
    builder = RayBufferBuilder(workers, log=print) if workers > 0 else build_buffer_in_process
    run = Run(config, artifacts, buffer_builder=builder, log=print)
    if state is not None:
        run.load_state_dict(state)
        print(f"resumed from step {run.step:,}")

    for record in run.train():
        with tempfile.TemporaryDirectory() as directory:
            run.save(Path(directory))
            # `timesteps_total` is what Tune's TensorBoard logger uses as the x-axis (else training_iteration).
            tune.report({**run.history[-1], "timesteps_total": record.step},
                        checkpoint=tune.Checkpoint.from_directory(directory))
        _maybe_fail_once(trial, run.step)


def trial_threads(bundles: list[dict[str, float]]) -> int:
    """Torch threads for a trial: the CPUs of its own bundle (the first; the others are its rollout actors',
    each of which sets its own). One thread per CPU given, never more: oversubscribed BLAS threads slow
    small matmuls 2-100x, and two 1-CPU trials on a 2-core node then each run at about one core's rate."""
    return max(1, int(bundles[0].get("CPU", 1))) if bundles else 1


def _maybe_fail_once(trial: dict[str, Any], step: int) -> None:
    """Fault-injection for tests: `fail_once_at_step` raises once, after that step's checkpoint."""
    fail_at = trial.get("fail_once_at_step")
    if fail_at is None or step != fail_at:
        return
    marker = Path(trial["artifacts"]) / f".failed-once-{trial_name(trial)}"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError(f"injected failure at step {step}")
