"""Every evaluation of every trial as one tidy DataFrame.

Reads Tune experiment directories (`<storage>/<sweep>/<trial>/`: `params.json`, the latest
`checkpoint_*/evaluations.jsonl`, and `result.json` for what came after it), as written by `romi sweep`,
and `romi train` run directories (`config.json`, `evaluations.jsonl`), from a
local path or any URI pyarrow understands (`s3://`, `gs://`, ...). Partially finished sweeps load
too: every trial is `finished`, `stopped` (evaluated, then interrupted or still running: its step says
where), `failed` or `not started`; trials a sweep asks for but never started come from the sweep's
manifest (`romi_sweep.json`, written by `romi sweep` before its first trial).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from romi.divergence import HIGH_KEY, LOW_KEY, Q_KEY, diverged_at, task_bound
from romi.errors import ResultsNotFoundError, RomiError
from romi.layout import (
    CONFIG_FILE,
    EVALUATIONS_FILE,
    MANIFEST_FILE,
    STATE_FILE,
    STATUSES,
    SUMMARY_FILE,
    TrialStatus,
    evaluation_lines_cut,
    read_evaluation_lines,
)
from romi.storage import filesystem, is_remote

__all__ = ["STATUSES", "headline", "load_results", "summarize_trials"]

IDENTITY = ["sweep", "trial", "task", "method", "seed", "profile"]
METRICS = ["step", "score", "score_local", "return_mean", "return_std", "discrepancy", "steps_per_second",
           "wall_time"]
BOUNDS = [LOW_KEY, HIGH_KEY]
"""The value bound each evaluation was judged by (`romi.divergence`; NaN in records from before it)."""
LABELS = ["method_label", "dataset_id"]
"""Per-record strings: the method as tables name it (`BCQ (rw)` off the paper's settings) and the data."""
HEADLINE = ["score_headline", "normalised_with"]
"""The score tables and figures show: for home-made `local/...` datasets the one normalised with the
dataset's own refs (measured on our evaluation env, so 0 = random and 100 = the data's expert there);
for official datasets the D4RL-normalised one. `normalised_with` says which ('local refs' / 'D4RL refs')."""


def headline(score: pd.Series, score_local: pd.Series, dataset_id: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(score_headline, normalised_with) per row: see `HEADLINE`."""
    local = dataset_id.fillna("").astype(str).str.startswith("local/")
    return score_local.where(local, score), local.map({True: "local refs", False: "D4RL refs"})


@dataclass(frozen=True)
class _Trial:
    sweep: str
    name: str
    identity: dict[str, Any]
    records: list[dict[str, Any]]
    status: TrialStatus
    config: dict[str, Any]
    directory: str = ""
    """Where the trial's files are, on its filesystem ("" for a trial a manifest asks for but never started)."""


def _read_bytes(fs: Any, path: str) -> bytes | None:
    import pyarrow.fs

    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read()


def _read_text(fs: Any, path: str) -> str | None:
    raw = _read_bytes(fs, path)
    return None if raw is None else raw.decode()


def checkpoint_dirs(fs: Any, directory: str) -> list[str]:
    """A Tune trial's `checkpoint_<n>` directories, oldest first."""
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(directory, allow_not_found=True)
    return sorted(info.path for info in fs.get_file_info(selector)
                  if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_"))


def latest_run_state(fs: Any, directory: str) -> dict[str, Any] | None:
    """A trial's run state (`run.pt`): a Tune trial's latest checkpoint's, or a `romi train` directory's
    own; None when it has neither (e.g. an exported trial)."""
    import torch

    checkpoints = checkpoint_dirs(fs, directory)
    raw = _read_bytes(fs, f"{checkpoints[-1] if checkpoints else directory}/{STATE_FILE}")
    return None if raw is None else torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)


def _tune_records(fs: Any, directory: str) -> list[dict[str, Any]]:
    """A Tune trial's evaluations: the history saved in its latest checkpoint (complete by construction,
    see `romi.tune.trainable`) merged with result.json (which may hold a later line,
    or lose or repeat the one reported just before a failure); one record per step, the last one kept."""
    checkpoints = checkpoint_dirs(fs, directory)
    saved = read_evaluation_lines(_read_text(fs, f"{checkpoints[-1]}/{EVALUATIONS_FILE}")) if checkpoints else []
    by_step: dict[Any, dict[str, Any]] = {}
    for record in [*saved, *read_evaluation_lines(_read_text(fs, f"{directory}/result.json"))]:
        by_step[record.get("step")] = record
    return sorted(by_step.values(), key=lambda record: float(record.get("step") or 0))


def _failed_last(fs: Any, directory: str) -> bool:
    """Whether a Tune trial's last word is a failure: it has an `error.txt` and reported nothing after it.
    A trial Tune restarted from its checkpoint after a failure (a worker lost, Ray's keepalive) keeps the
    old `error.txt` while it trains on; its `result.json` is then the newer file."""
    import pyarrow.fs

    error, result = fs.get_file_info([f"{directory}/error.txt", f"{directory}/result.json"])
    if error.type == pyarrow.fs.FileType.NotFound:
        return False
    return result.type == pyarrow.fs.FileType.NotFound or error.mtime >= result.mtime


def _find_trials(fs: Any, root: str) -> Iterable[_Trial]:
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True)
    markers = [info.path for info in fs.get_file_info(selector)
               if info.base_name in ("params.json", CONFIG_FILE) and info.type == pyarrow.fs.FileType.File]
    for marker in sorted(markers):
        directory = marker.rsplit("/", 1)[0]
        if "/artifacts/" in directory + "/" or "/checkpoint_" in directory:
            continue
        if marker.endswith("params.json"):  # a Tune trial
            params = json.loads(_read_text(fs, marker) or "{}")
            if "task" not in params or "method" not in params:
                continue
            records = _tune_records(fs, directory)
            errored = _failed_last(fs, directory)
            sweep = params.get("sweep") or directory.rsplit("/", 2)[-2]
            config = params
        else:  # a `romi train` run directory
            config = json.loads(_read_text(fs, marker) or "{}")
            if "task" not in config or "method" not in config:
                continue
            text = _read_text(fs, f"{directory}/{EVALUATIONS_FILE}")
            records = read_evaluation_lines(text)
            errored = False
            sweep = "train"
            # Finished: its summary was written (last) and every evaluation line is whole; a file cut mid-line
            # makes it `stopped` at its last whole evaluation, never `finished` there.
            if _read_text(fs, f"{directory}/{SUMMARY_FILE}") is not None and records and not evaluation_lines_cut(
                    text):
                records[-1]["done_fraction"] = 1.0
        done = bool(records) and float(records[-1].get("done_fraction", 0.0)) >= 1.0
        status = "failed" if errored and not done else "finished" if done else "stopped" if records else "not started"
        if status == "stopped" and marker.endswith("params.json") and _driver_alive(fs, directory.rsplit("/", 1)[0]):
            status = "running"
        identity = {"task": config["task"], "method": config["method"], "seed": int(config.get("seed", 0)),
                    "profile": config.get("profile", "paper")}
        yield _Trial(sweep, directory.rsplit("/", 1)[-1], identity, records, status, config, directory)


def _driver_alive(fs: Any, experiment: str) -> bool:
    """Whether a `romi sweep` driver on this machine is running the sweep at `experiment` (it holds the
    sweep's lock, `romi.locks`): only a local sweep can tell."""
    import pyarrow.fs

    from romi.locks import held

    return isinstance(fs, pyarrow.fs.LocalFileSystem) and held(Path(experiment))


def _manifest_trials(fs: Any, root: str) -> Iterable[_Trial]:
    """The trials each sweep manifest under `root` asks for (found or not)."""
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.base_name != MANIFEST_FILE or info.type != pyarrow.fs.FileType.File:
            continue
        manifest = json.loads(_read_text(fs, info.path) or "{}")
        spec = manifest.get("spec", {})
        for trial in manifest.get("trials", []):
            identity = {"task": trial["task"], "method": trial["method"], "seed": int(trial["seed"]),
                        "profile": spec.get("profile", "paper")}
            config = {**identity, "overrides": spec.get("overrides") or {}}
            yield _Trial(spec.get("name") or info.path.rsplit("/", 2)[-2], trial["trial"], identity, [],
                         "not started", config)


def check_sweep_paths(sweeps: tuple[str, ...]) -> None:
    """Local sweep paths must be existing directories (URIs are read as they are). A missing one is a
    mistake (often a relative path read from another working directory: a notebook's is its own folder),
    not an empty sweep."""
    for sweep in sweeps:
        if is_remote(sweep):
            continue
        path = Path(sweep.removeprefix("file://")).expanduser()
        if not path.exists():
            where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
            raise ResultsNotFoundError(f"{path} does not exist{where}",
                                       "give a sweep directory written by `romi sweep` (e.g. runs/sweeps/quick) "
                                       "or a run directory of `romi train`")
        if not path.is_dir():
            raise RomiError(f"{path} is a file, not a sweep directory",
                            f"give the directory that holds the sweep's trials (e.g. {path.parent})")


def _key(trial: _Trial, sweep: str) -> tuple[str, str, str, int]:
    return sweep, trial.identity["task"], trial.identity["method"], trial.identity["seed"]


def load_results(*paths: str) -> pd.DataFrame:
    """One row per evaluation of every trial under `paths` (sweep dirs, storage roots or run dirs).

    Columns: sweep, trial, task, method, seed, profile, status, method_label, dataset_id,
    score_headline and normalised_with (see `HEADLINE`), step, score (D4RL-normalised), score_local,
    return_mean, return_std, discrepancy, steps_per_second, wall_time, the training losses as `train/...`
    (`train/q_mean`: the critics' mean Q on the batches since the previous evaluation), the value bound
    each evaluation was judged by (`value_bound_low`, `value_bound_high`; NaN in records from before it
    was measured) and the trial's config overrides as `config/...`. A local path that does not exist raises
    `ResultsNotFoundError` (a `FileNotFoundError`).
    """
    check_sweep_paths(tuple(str(path) for path in paths))
    rows: list[dict[str, Any]] = []
    for path in paths:
        fs, root = filesystem(str(path))
        found = list(_find_trials(fs, root))
        # A manifest's trial is found when its sweep has it, or when it was exported (`romi export`
        # keeps the manifest beside the exported run directories, which no longer know their sweep).
        seen = {_key(t, t.sweep if t.sweep != "train" else "*") for t in found}
        unstarted = [t for t in _manifest_trials(fs, root) if not {_key(t, t.sweep), _key(t, "*")} & seen]
        for trial in [*found, *unstarted]:
            overrides = trial.config.get("overrides") or {}
            flat_overrides = pd.json_normalize(overrides, sep=".").to_dict("records")[0] if overrides else {}
            base = {"sweep": trial.sweep, "trial": trial.name, **trial.identity, "status": trial.status,
                    **{f"config/{k}": v for k, v in flat_overrides.items()}}
            if not trial.records:
                rows.append({**base, "step": np.nan})
            for record in trial.records:
                row = dict(base)
                for key, value in record.items():
                    if key in METRICS or key in LABELS or key in BOUNDS or key.startswith("train/"):
                        row[key] = value
                rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*IDENTITY, "status", *LABELS, *HEADLINE, *METRICS])
    for column in METRICS:
        if column not in frame:
            frame[column] = np.nan
    for column in LABELS:
        if column not in frame:
            frame[column] = None
    for column in BOUNDS:
        if column not in frame:
            frame[column] = np.nan
    # Records written before method labels existed (and trials with no evaluation yet) carry none:
    # their method ran with the paper's settings unless a `config/` override says otherwise.
    frame["method_label"] = frame["method_label"].fillna(frame["method"])
    frame["score_headline"], frame["normalised_with"] = headline(frame["score"], frame["score_local"],
                                                                 frame["dataset_id"])
    frame["seed"] = frame["seed"].astype(int)
    # A trial without evaluations has no step (NaN): a nullable integer keeps `step` integral anyway.
    frame["step"] = frame["step"].astype("Int64")
    ordered = [*IDENTITY, "status", *LABELS, *HEADLINE, *METRICS]
    rest = sorted(c for c in frame.columns if c not in ordered)
    return frame[ordered + rest].sort_values(["sweep", "task", "method", "seed", "step"]).reset_index(drop=True)


def summarize_trials(results: pd.DataFrame, last_k: int = 1) -> pd.DataFrame:
    """One row per trial: its status, last step, final score and the mean of its last `last_k` scores.

    `headline_score` is the mean of the last `last_k` headline scores (see `HEADLINE`); `last_k_score`
    and `last_k_score_local` are the same with D4RL's and with the dataset's own refs. `headline_swing`
    is the std (ddof 0, as the tables') of those last `last_k` headline scores: how far one policy's score
    moves from one evaluation to the next late in training (NaN for `last_k` 1), to set beside the
    differences between methods.
    """
    if results.empty:
        return pd.DataFrame()
    keys = ["sweep", "trial", "task", "method", "seed"]

    def tail_mean(column: pd.Series) -> float:
        return float(column.tail(last_k).mean())

    def tail_std(column: pd.Series) -> float:
        return float(column.tail(last_k).std(ddof=0)) if last_k > 1 else float("nan")

    trials = results.groupby(keys, sort=True).agg(status=("status", "first"), method_label=("method_label", "last"))
    evaluated = results.dropna(subset=["score"]).sort_values([*keys, "step"]).groupby(keys, sort=True).agg(
        normalised_with=("normalised_with", "last"),
        headline_score=("score_headline", tail_mean),
        headline_swing=("score_headline", tail_std),
        steps=("step", "last"),
        evaluations=("score", "size"),
        final_score=("score", "last"),
        last_k_score=("score", tail_mean),
        final_score_local=("score_local", "last"),
        last_k_score_local=("score_local", tail_mean),
        discrepancy=("discrepancy", "last"),
        wall_time=("wall_time", "last"),
    )
    summary = trials.join(evaluated).join(divergence(results)).reset_index()
    summary["evaluations"] = summary["evaluations"].fillna(0).astype(int)  # a trial with none joins as NaN
    return summary


DIVERGENCE = ["diverged_at_step", "q_peak", "value_bound_high", "bound_from"]
"""`summarize_trials`' divergence columns: the step at which the trial's mean Q first left its value bound
(NaN: never), the largest mean Q it reported, the upper bound, and where the bound came from ('run': the
records carry it; 'task': records from before it was measured, judged by the task's reward range;
'' where neither is known)."""


def divergence(results: pd.DataFrame) -> pd.DataFrame:
    """Per trial (index sweep, trial, task, method, seed): the `DIVERGENCE` columns (`romi.divergence`)."""
    keys = ["sweep", "trial", "task", "method", "seed"]
    rows = {}
    for key, trial in results.dropna(subset=["step"]).sort_values([*keys, "step"]).groupby(keys, sort=True):
        records = trial.to_dict("records")
        gamma = _gamma(trial)
        fallback = task_bound(str(key[2]), gamma)
        carried = trial[HIGH_KEY].notna().any()
        step = diverged_at(records, fallback)
        high = trial[HIGH_KEY].dropna().max() if carried else (fallback.high if fallback else np.nan)
        q = trial[Q_KEY] if Q_KEY in trial else pd.Series(dtype=float)
        rows[key] = {"diverged_at_step": np.nan if step is None else step,
                     "q_peak": float(q.max()) if q.notna().any() else np.nan, "value_bound_high": high,
                     "bound_from": "run" if carried else "task" if fallback else ""}
    index = pd.MultiIndex.from_tuples(list(rows), names=keys) if rows else pd.MultiIndex.from_arrays(
        [[]] * len(keys), names=keys)
    return pd.DataFrame(list(rows.values()), index=index, columns=DIVERGENCE)


def _gamma(trial: pd.DataFrame) -> float:
    """The trial's discount: an override's, else the paper's 0.99 (BCQ's and CQL's)."""
    for column in ("config/bcq.gamma", "config/cql.gamma"):
        if column in trial and trial[column].notna().any():
            return float(trial[column].dropna().iloc[0])
    return 0.99
