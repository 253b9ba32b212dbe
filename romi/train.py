"""`romi train`: one run, no Ray, resumable, with results on disk.

Layout of an output directory (`romi.layout`, the same files a Tune checkpoint holds):
    config.json        the resolved RunConfig (every number the run used)
    evaluations.jsonl  one evaluation per line (rewritten atomically after each)
    run.pt             the latest full state (atomic); a rerun resumes from it
    summary.json       written last: its presence means the run finished (a rerun does nothing)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from romi.artifacts import ArtifactStore
from romi.config import RunConfig, check_device_available, same_config
from romi.errors import ConfigError
from romi.io import atomic_write_json, atomic_write_text, check_free_space, check_writable_dir
from romi.layout import CONFIG_FILE, STATE_FILE, SUMMARY_FILE
from romi.locks import exclusive
from romi.pipeline import EvalRecord, Log, Run, read_state
from romi.progress import Reporter
from romi.space import CHECKPOINTS_KEPT, learner_bytes, run_bytes
from romi.tasks import get_task


def default_run_dir(root: Path, config: RunConfig) -> Path:
    return root / config.task / config.method / f"seed{config.seed}"


def check_run_inputs(config: RunConfig, out_dir: Path, artifacts_dir: Path) -> None:
    """What a run needs from this machine, refused before any work: writable directories, its device."""
    check_writable_dir(out_dir, "--out")
    check_writable_dir(artifacts_dir, "--artifacts")
    check_device_available(config.device)


def check_run_space(config: RunConfig, out_dir: Path, artifacts_dir: Path) -> None:
    """Refuse, before any model trains, a run whose checkpoints (and models) its disks cannot take."""
    task = get_task(config.task)
    check_free_space(out_dir, CHECKPOINTS_KEPT * learner_bytes(config, task), f"run {out_dir}'s checkpoints")
    if config.method_spec.direction is not None:
        check_free_space(artifacts_dir, run_bytes(config, task), "its dynamics model and rollout policy")


def train_run(
    config: RunConfig,
    out_dir: Path,
    artifacts_dir: Path,
    *,
    log: Log = print,
    on_eval: Callable[[EvalRecord, Run], None] | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Run (or resume, or skip if finished) one run; returns its summary. `reporter` hears how far the
    dynamics training and the gradient steps are (default: lines through `log`).

    Every check comes before the first write: a run that fails to start leaves its directory as it
    was (no `config.json` that would make the corrected command refuse "a different config").
    """
    config = config.resolved()
    check_run_inputs(config, out_dir, artifacts_dir)
    check_run_space(config, out_dir, artifacts_dir)
    # One writer per run directory: a second `romi train --out` the same directory is refused while the
    # first runs (else config.json could come from one run and the evaluations from the other).
    with exclusive(out_dir, f"run directory {out_dir}"):
        return _train_run_locked(config, out_dir, artifacts_dir, log=log, on_eval=on_eval, reporter=reporter)


def _train_run_locked(config: RunConfig, out_dir: Path, artifacts_dir: Path, *, log: Log,
                      on_eval: Callable[[EvalRecord, Run], None] | None, reporter: Reporter | None) -> dict[str, Any]:
    config_path, summary_path = out_dir / CONFIG_FILE, out_dir / SUMMARY_FILE
    if config_path.exists() and not same_config(json.loads(config_path.read_text()), config):
        raise ConfigError(
            f"{out_dir} holds a run with a different config",
            "choose another --out directory, or delete that one to start over",
        )
    if summary_path.exists():
        log(f"already finished: {summary_path}")
        return json.loads(summary_path.read_text())
    state = read_state(out_dir, config, f"delete {out_dir / STATE_FILE} to start this run over from step 0 "
                                        "(it keeps only its latest checkpoint)")

    run = Run(config, ArtifactStore(artifacts_dir), log=log, reporter=reporter)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, config.to_json())
    if state is not None:
        run.load_state_dict(state)
        log(f"resumed from {out_dir / STATE_FILE} at step {run.step:,}")
    for record in run.train():
        run.save(out_dir)
        if on_eval is not None:
            on_eval(record, run)
    summary = run.summary()
    atomic_write_json(summary_path, summary)
    return summary
