"""Keep a sweep's finished trials as small run directories that can be committed.

A long reproduction outlives the machine it started on; its Tune storage (checkpoints, artifacts) is
large and stays outside the repository. `export_finished` writes each *finished* trial as a `romi
train`-style run directory (`config.json` with every resolved number, `evaluations.jsonl` with every
evaluation, `summary.json` last), which `load_results` and `romi report` read like any run, so a
report can be rebuilt from the repository alone. A maze2d trial also keeps its trained policy's
Figure 3 episodes (`policy_episodes.npz`, run from its last checkpoint), so the figure survives the
checkpoint. Exports are never overwritten: a trial already exported is skipped, and each directory
appears atomically (written beside, then renamed). The sweep's manifest (the trials it asks for) is
kept too, under `manifests/<sweep>/`, so a report on the exports alone still marks the cells whose
trials have not finished yet as incomplete instead of presenting one seed as the whole row.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from romi.analysis.policy_episodes import run_policy_episodes
from romi.analysis.results import _find_trials, _read_text, latest_run_state
from romi.config import RunConfig, build_run_config, load_run_config, saved_config
from romi.errors import ConfigError
from romi.io import atomic_dir, atomic_write_json, atomic_write_text
from romi.layout import (
    CONFIG_FILE,
    EVALUATIONS_FILE,
    MANIFEST_FILE,
    POLICY_EPISODES_FILE,
    SUMMARY_FILE,
    evaluation_lines,
    read_evaluation_lines,
    trial_name,
)
from romi.pipeline import cpus_of
from romi.storage import filesystem
from romi.tasks import get_task


@dataclass(frozen=True)
class Exported:
    written: list[Path]
    already: list[Path]
    unfinished: list[str]
    notes: list[str] = field(default_factory=list)
    """What an export had to leave out, and why (a maze2d trial without a checkpoint: no Figure 3 policy)."""
    manifest: Path | None = None
    """Where the sweep's manifest was kept (None: the sweep has none, e.g. one run before manifests)."""


MANIFESTS_DIR = "manifests"


def export_finished(sweep: str, out: Path, *, code_commit: str | None = None) -> Exported:
    """Write every finished trial of the Tune experiment at `sweep` under `out/<trial name>/`."""
    fs, root = filesystem(sweep)
    trials = [t for t in _find_trials(fs, root) if t.sweep != "train"]  # a run directory already is an export
    _refuse_other_runs_of_the_same_trials(trials, out)  # before anything is written, the manifest included
    manifest = _export_manifest(fs, root, out)
    written, already, unfinished, notes = [], [], [], []
    for trial in trials:
        if trial.status != "finished":
            unfinished.append(f"{trial.name} ({trial.status}, {len(trial.records)} evaluations)")
            continue
        target = out / trial.name
        if (target / SUMMARY_FILE).exists():
            already.append(target)
            continue
        identity = trial.identity
        # The config the trial ran, as its checkpoint saved it: re-resolving the sweep's overrides with this
        # code would let a later change of a default rewrite what a committed trial says it ran.
        state = latest_run_state(fs, trial.directory)
        if state is not None:
            config = load_run_config(state["config"])
        else:
            config = build_run_config(identity["task"], identity["method"], identity["seed"], identity["profile"],
                                      trial.config.get("overrides") or {})
            notes.append(f"{trial.name}: no checkpoint, so its config.json is its sweep's overrides resolved by "
                         "this version of romi, not the config it saved")
        records = trial.records
        scores = [float(r["score"]) for r in records]
        local = [float(r["score_local"]) for r in records]
        k = config.eval.last_k
        summary = {
            "task": config.task, "method": config.method, "seed": config.seed,
            "method_label": config.method_label, "deviations": config.deviations(),
            "dataset_id": records[-1].get("dataset_id"), "steps": int(records[-1]["step"]),
            "final_score": scores[-1], "last_k_score": float(np.mean(scores[-k:])),
            "final_score_local": local[-1], "last_k_score_local": float(np.mean(local[-k:])),
            "wall_time": records[-1].get("wall_time"), "exported_from": f"{sweep.rstrip('/')}/{trial.name}",
            "code_commit": code_commit, "cpus": cpus_of(records),
        }
        # Figure 3 is drawn for maze2d tasks only, so only their policies are run (3 short episodes each).
        maze2d = get_task(config.task).domain == "maze2d"
        if maze2d and state is None:
            notes.append(f"{trial.name}: no checkpoint, so Figure 3 will not show its policy")
        staging = out / f".{trial.name}.{uuid.uuid4().hex[:8]}"
        try:
            atomic_write_text(staging / CONFIG_FILE, config.to_json())
            atomic_write_text(staging / EVALUATIONS_FILE, evaluation_lines(records))
            if maze2d and state is not None:
                run_policy_episodes(state).save(staging / POLICY_EPISODES_FILE)
            atomic_write_json(staging / SUMMARY_FILE, summary)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        written.append(target)
    return Exported(written, already, unfinished, notes, manifest)


def _refuse_other_runs_of_the_same_trials(trials: list[Any], out: Path) -> None:
    """An export is never rewritten, so a finished trial whose export holds *another* run of it (the sweep was
    started over with --overwrite, or the directory is a leftover without its summary) is refused up front,
    naming both, instead of being kept as "already there" beside the new run's manifest."""
    problems = []
    for trial in trials:
        target = out / trial.name
        if trial.status != "finished" or not target.exists():
            continue
        if not (target / SUMMARY_FILE).is_file():
            problems.append(f"{target} exists but holds no finished export (no {SUMMARY_FILE})")
            continue
        kept = read_evaluation_lines((target / EVALUATIONS_FILE).read_text()) if (
            target / EVALUATIONS_FILE).is_file() else []
        if [_scores(r) for r in kept] != [_scores(r) for r in trial.records]:
            problems.append(f"{target} holds another run of {trial.name} (its evaluations differ from the sweep's)")
    if problems:
        raise ConfigError("cannot export: " + "; ".join(problems),
                          "move those directories away (exports are never overwritten), then export again")


def _scores(record: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies one evaluation of one run: its step and scores (not its timing)."""
    return tuple(record.get(k) for k in ("step", "score", "score_local", "return_mean"))


def _export_manifest(fs: Any, root: str, out: Path) -> Path | None:
    """Copy the sweep's manifest to `out/manifests/<sweep name>/` (replacing an older copy: a resumed sweep
    rewrites its manifest, and the newest one says what the sweep asks for)."""
    text = _read_text(fs, f"{root.rstrip('/')}/{MANIFEST_FILE}")
    if text is None:
        return None
    try:
        name = json.loads(text)["spec"]["name"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"the sweep's manifest {root.rstrip('/')}/{MANIFEST_FILE} is corrupt",
                          "move it away and export again (a report then cannot tell which trials are missing); "
                          "the sweep's next `romi sweep ... --resume` writes it anew") from None
    target = out / MANIFESTS_DIR / str(name) / MANIFEST_FILE
    atomic_write_text(target, text)
    return target


def export_models(sweep: str, out: Path) -> Exported:
    """Copy the sweep's finished models (dynamics ensembles, rollout policies) to `out/<kind>/<key>/`.

    Models are keyed by what they were trained on (dataset fingerprint, direction, seed, config), so a
    copy placed back into any sweep's `artifacts/` is found and reused there instead of trained again:
    the way a long reproduction keeps hours of dynamics training across machines. Unfinished fits
    (`.partial/`) are not models and stay behind; a model already in `out` is left as it is.
    """
    import pyarrow.fs

    fs, root = filesystem(sweep)
    artifacts = f"{root.rstrip('/')}/artifacts"
    selector = pyarrow.fs.FileSelector(artifacts, recursive=True, allow_not_found=True)
    written, already = [], []
    for info in fs.get_file_info(selector):
        relative = info.path[len(artifacts):].strip("/").split("/")
        if info.base_name != "info.json" or len(relative) != 3 or relative[0].startswith("."):
            continue  # a model is complete when its info.json is there (written last)
        kind, key = relative[0], relative[1]
        target = out / kind / key
        if (target / "info.json").exists():
            already.append(target)
            continue
        source = f"{artifacts}/{kind}/{key}"
        def copy(staging: Path, source: str = source) -> None:
            staging.mkdir(parents=True)
            pyarrow.fs.copy_files(source, str(staging), source_filesystem=fs,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())

        atomic_dir(target, copy)
        written.append(target)
    return Exported(written, already, [])


def finished_exports(configs: Iterable[RunConfig], directory: Path) -> list[str]:
    """The names of the trials among `configs` that `romi export` kept finished in `directory`.

    What lets a sweep on a new machine (its Tune storage gone with the old one) skip the trials already
    done instead of running them again (`romi sweep --exported DIR`). An export counts when it is the same
    trial: every resolved config value equal and every gradient step done. The same trial exported with a
    different config can never be the sweep's result, nor be replaced by it (exports are never
    overwritten), so it is refused before anything runs.
    """
    if not directory.is_dir():
        problem = "is a file, not a directory" if directory.exists() else "does not exist"
        raise ConfigError(f"exported trials directory {directory} {problem}",
                          "give the directory `romi export --out` wrote, or drop --exported")
    finished = []
    for config in configs:
        name = trial_name(config.model_dump())
        folder = directory / name
        if not (folder / SUMMARY_FILE).is_file():  # written last: without it, nothing was kept
            continue
        kept = _read_exported_config(folder / CONFIG_FILE)
        differences = _differences(kept.model_dump(), config.model_dump())
        if differences:
            raise ConfigError(
                f"{folder} is trial {name} run with another config ({'; '.join(differences[:5])}"
                f"{'; ...' if len(differences) > 5 else ''}): the sweep would run it again and could not export it",
                "move that directory away, or give the sweep the config it was run with")
        summary = _read_json(folder / SUMMARY_FILE)
        if int(summary.get("steps") or 0) >= (config.gradient_steps or 0):
            finished.append(name)
    return finished


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"exported file {path} cannot be read: {err}",
                          "export that trial again (`romi export`), or move its directory away") from None
    if not isinstance(value, dict):
        raise ConfigError(f"exported file {path} is not a JSON object",
                          "export that trial again (`romi export`), or move its directory away")
    return value


def _read_exported_config(path: Path) -> RunConfig:
    try:
        return RunConfig.model_validate(saved_config(_read_json(path)))
    except ValidationError as err:
        raise ConfigError(f"exported config {path} is not a config of this romi version: "
                          f"{err.errors()[0]['msg']} at {'.'.join(map(str, err.errors()[0]['loc']))}",
                          "export that trial again with this version, or move its directory away") from None


def _differences(kept: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> list[str]:
    """`key: kept -> wanted` for every (nested) value that differs."""
    found = []
    for key in sorted(set(kept) | set(wanted)):
        a, b = kept.get(key), wanted.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found
