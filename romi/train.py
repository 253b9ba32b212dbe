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
from romi.config import RunConfig
from romi.errors import ConfigError
from romi.io import atomic_torch_save, atomic_write_json, atomic_write_text
from romi.pipeline import EvalRecord, Log, Run


def default_run_dir(root: Path, config: RunConfig) -> Path:
    return root / config.task / config.method / f"seed{config.seed}"


def train_run(
    config: RunConfig,
    out_dir: Path,
    artifacts_dir: Path,
    *,
    log: Log = print,
    on_eval: Callable[[EvalRecord, Run], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume, or skip if finished) one run; returns its summary."""
    config = config.resolved()
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path, summary_path = out_dir / "config.json", out_dir / "summary.json"
    checkpoint_path = out_dir / "checkpoint.pt"
    if config_path.exists() and json.loads(config_path.read_text()) != json.loads(config.to_json()):
        raise ConfigError(
            f"{out_dir} holds a run with a different config",
            "choose another --out directory, or delete that one to start over",
        )
    if summary_path.exists():
        log(f"already finished: {summary_path}")
        return json.loads(summary_path.read_text())
    atomic_write_text(config_path, config.to_json())

    run = Run(config, ArtifactStore(artifacts_dir), log=log)
    run.setup()
    run.start_clock()
    if checkpoint_path.exists():
        run.load_state_dict(torch.load(checkpoint_path, map_location=config.device, weights_only=False))
        log(f"resumed from {checkpoint_path} at step {run.step:,}")
    for record in run.train():
        atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in run.history))
        atomic_torch_save(run.state_dict(), checkpoint_path)
        if on_eval is not None:
            on_eval(record, run)
    summary = run.summary()
    atomic_write_json(summary_path, summary)
    return summary
