"""`romi train`: one run, no Ray, resumable, with results on disk.

Layout of an output directory:
    config.json      the resolved RunConfig (every number the run used)
    metrics.jsonl    one evaluation per line (rewritten atomically after each)
    checkpoint.pt    the latest full state (atomic); a rerun resumes from it
    summary.json     written last: its presence means the run finished (a rerun does nothing)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from romi.artifacts import ArtifactStore
from romi.config import RunConfig, check_device_available
from romi.errors import CheckpointError, ConfigError
from romi.io import atomic_torch_save, atomic_write_json, atomic_write_text, check_writable_dir
from romi.pipeline import EvalRecord, Log, Run
from romi.progress import Reporter


def default_run_dir(root: Path, config: RunConfig) -> Path:
    return root / config.task / config.method / f"seed{config.seed}"


def check_run_inputs(config: RunConfig, out_dir: Path, artifacts_dir: Path) -> None:
    """What a run needs from this machine, refused before any work: writable directories, its device."""
    check_writable_dir(out_dir, "--out")
    check_writable_dir(artifacts_dir, "--artifacts")
    check_device_available(config.device)


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
    config_path, summary_path = out_dir / "config.json", out_dir / "summary.json"
    checkpoint_path = out_dir / "checkpoint.pt"
    check_run_inputs(config, out_dir, artifacts_dir)
    if config_path.exists() and json.loads(config_path.read_text()) != json.loads(config.to_json()):
        raise ConfigError(
            f"{out_dir} holds a run with a different config",
            "choose another --out directory, or delete that one to start over",
        )
    if summary_path.exists():
        log(f"already finished: {summary_path}")
        return json.loads(summary_path.read_text())
    # Read the checkpoint before the minutes of setup, so a damaged one is refused at once.
    state = _read_checkpoint(checkpoint_path, config) if checkpoint_path.exists() else None

    run = Run(config, ArtifactStore(artifacts_dir), log=log, reporter=reporter)
    run.setup()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, config.to_json())
    run.start_clock()
    if state is not None:
        run.load_state_dict(state)
        log(f"resumed from {checkpoint_path} at step {run.step:,}")
    for record in run.train():
        atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in run.history))
        atomic_torch_save(run.state_dict(), checkpoint_path)
        if on_eval is not None:
            on_eval(record, run)
    summary = run.summary()
    atomic_write_json(summary_path, summary)
    return summary


def _read_checkpoint(path: Path, config: RunConfig) -> dict[str, Any]:
    """The saved state of this run, or a `CheckpointError` naming the file and how to go on."""
    start_over = f"delete {path} to start this run over from step 0 (it keeps only its latest checkpoint)"
    try:
        state = torch.load(path, map_location=config.device, weights_only=False)
    except Exception as err:  # torch raises RuntimeError/EOFError/UnpicklingError/... on damaged files
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {err})",
                              start_over) from None
    if not isinstance(state, dict) or not {"config", "step", "history", "agent", "sampler"} <= set(state):
        raise CheckpointError(f"checkpoint {path} is not a romi run checkpoint", start_over)
    if json.loads(state["config"]) != json.loads(config.to_json()):
        raise CheckpointError(f"checkpoint {path} was written by a run with a different config",
                              "choose another --out directory, or " + start_over)
    return state
