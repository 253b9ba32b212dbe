"""Read Minari datasets into `Transitions` (writing home-made ones: `romi.data.minari_write`).

Official datasets are read with Minari's own storage classes under their official ids; home-made
ones live under `local/...` in the same store (`MINARI_DATASETS_PATH`, default ~/.minari/datasets),
so the official path never picks up home-made data. A decoded copy of each dataset is cached beside
the store (`steps_cache_dir`), so only the first load pays Minari's per-episode reading.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from romi.data.transitions import Transitions, episode_returns
from romi.envs import flatten_maze_observation, goal_xy, maze_reward
from romi.errors import DatasetCorruptError, DatasetMissingError, DatasetOutdatedError
from romi.io import atomic_save_npz
from romi.tasks import DATASET_TO_TASK, TaskSpec, get_task

DataSource = Literal["auto", "official", "local"]
_META = "metadata.json"
_DATA = "main_data.hdf5"


def datasets_root() -> Path:
    """The Minari store, as Minari itself resolves it. A store path that is a file can hold no dataset:
    refused here, so `data list` does not call every dataset absent, `train` does not say to make one and
    `data make` does not simulate for minutes before it fails."""
    root = Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))
    if root.exists() and not root.is_dir():
        raise DatasetMissingError(f"the Minari store {root} (MINARI_DATASETS_PATH) is a file, not a directory",
                                  "point MINARI_DATASETS_PATH at a directory (it is made if missing)")
    return root


def dataset_dir(dataset_id: str) -> Path:
    return datasets_root() / dataset_id


def dataset_present(dataset_id: str) -> bool:
    data = dataset_dir(dataset_id) / "data"
    return (data / _META).is_file()


def dataset_size_bytes(dataset_id: str) -> int:
    root = dataset_dir(dataset_id)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def read_metadata(dataset_id: str) -> dict[str, Any]:
    path = dataset_dir(dataset_id) / "data" / _META
    if not path.is_file():
        raise DatasetMissingError(f"dataset {dataset_id!r} is not in the Minari store at {datasets_root()}")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetCorruptError(
            f"dataset {dataset_id!r}: metadata at {path} is unreadable ({err})", _recreate_hint(dataset_id)
        ) from err


FINGERPRINT_KEYS = ("dataset_id", "total_steps", "total_episodes", "minari_version", "romi_recipe",
                    "romi_recipe_version", "romi_seed", "romi_behaviour", "romi_data_steps_per_policy")
"""What determines a dataset's content. A home-made dataset is a deterministic function of its recipe
(and version), seed and behaviour policies, so the same dataset made again, on any machine, has the same
fingerprint and the models trained on it (keyed by it) stay valid; wall times are not part of it."""


def dataset_fingerprint(dataset_id: str, metadata: dict[str, Any] | None = None) -> str:
    """What identifies a dataset's content for artifact keys (`FINGERPRINT_KEYS` of its metadata). The maze
    recipe's name is in it through the dataset id, which differs per recipe (`TaskSpec.data_recipes`)."""
    meta = read_metadata(dataset_id) if metadata is None else metadata
    return json.dumps({k: meta.get(k) for k in FINGERPRINT_KEYS}, sort_keys=True)


@dataclass(frozen=True)
class Dataset:
    """What a run trains on, read once by the data layer: the dataset a task resolves to, its
    transitions, what identifies its content, and the returns its scores are normalised with."""

    id: str
    task: TaskSpec
    transitions: Transitions
    fingerprint: str
    """`dataset_fingerprint`: models trained on this data are keyed by it."""
    local_refs: tuple[float, float]
    """(random, expert) returns measured on this dataset's own simulator (home-made datasets); D4RL's
    for a dataset that does not carry its own."""

    @property
    def d4rl_refs(self) -> tuple[float, float]:
        """D4RL's (random, expert) returns for the task: the paper's normalisation."""
        return self.task.d4rl_ref_min, self.task.d4rl_ref_max


def load_dataset(task: TaskSpec, source: DataSource = "auto", recipe: str | None = None) -> Dataset:
    """The task's `Dataset` from the source asked for (auto: the official one when present; local data
    made by `recipe`, None: the task's default recipe)."""
    dataset_id = resolve_dataset_id(task, source, recipe)
    transitions = load_transitions(dataset_id)
    meta = read_metadata(dataset_id)
    local_refs = dataset_refs(dataset_id, meta, task)
    return Dataset(dataset_id, task, transitions, dataset_fingerprint(dataset_id, meta), local_refs)


def dataset_refs(dataset_id: str, meta: dict[str, Any], task: TaskSpec) -> tuple[float, float]:
    """The (random, expert) returns a dataset's scores are normalised with: its own (home-made datasets must
    carry them: they were measured on our evaluation env), or D4RL's for an official one that has none."""
    if dataset_id.startswith("local/"):
        return check_refs(dataset_id, meta.get("ref_min_score"), meta.get("ref_max_score"))
    return check_refs(dataset_id, meta.get("ref_min_score", task.d4rl_ref_min),
                      meta.get("ref_max_score", task.d4rl_ref_max))


def check_refs(dataset_id: str, ref_min: object, ref_max: object) -> tuple[float, float]:
    """A dataset's (random, expert) reference returns, refused before any training when no score could be
    normalised with them: missing, not numbers, NaN/inf, or equal (a zero-width scale)."""
    try:
        low, high = float(ref_min), float(ref_max)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high)) or low == high:
        raise DatasetCorruptError(
            f"dataset {dataset_id!r} has reference scores random {ref_min!r} / expert {ref_max!r}, which cannot "
            "normalise a score (they must be two different finite numbers)", _recreate_hint(dataset_id))
    return low, high


def _recreate_hint(dataset_id: str) -> str:
    if dataset_id.startswith("local/") and dataset_id in DATASET_TO_TASK:
        task = get_task(DATASET_TO_TASK[dataset_id])
        recipe = next((r for r, i in task.data_recipes if i == dataset_id and r != task.default_data_recipe), None)
        flag = f" --recipe {recipe}" if recipe else ""
        return f"re-create it: romi data make {task.name}{flag} --overwrite"
    return f"delete {dataset_dir(dataset_id)} and download it again: minari download {dataset_id}"


def check_recipe_current(dataset_id: str, metadata: dict[str, Any]) -> None:
    """Refuse a home-made maze dataset made by an older version of its recipe (`romi.data.make.maze`).

    Local maze scores are normalised with the dataset's own refs; the Minari recipe's version 1 measured
    them with gymnasium's resets, not D4RL's (`romi.envs.MAZE_EVAL_ENV_VERSION`), so a score computed with
    them would not be comparable with a fresh dataset's. Datasets from before recipes had names were made
    by the Minari recipe.
    """
    if metadata.get("romi_recipe") != "maze":
        return
    from romi.data.make.maze import RECIPE_VERSIONS, recipe_of

    recipe = recipe_of(metadata)
    version, current = int(metadata.get("romi_recipe_version", 1)), RECIPE_VERSIONS[recipe]
    if version < current:
        raise DatasetOutdatedError(
            f"dataset {dataset_id!r} was made by version {version} of the {recipe!r} maze recipe, whose data or "
            f"reference scores differ from version {current}'s (the current one)",
            _recreate_hint(dataset_id),
        )


def resolve_dataset_id(task: TaskSpec, source: DataSource = "auto", recipe: str | None = None) -> str:
    """Which dataset a task trains on: the official one when present (auto), else the local twin made by
    `recipe` (None: the task's default recipe). Asking for a non-default recipe means local data."""
    local_id = task.local_dataset_id(recipe)
    if recipe is not None and recipe != task.default_data_recipe:
        source = "local"
    official_ok = task.official_id is not None and dataset_present(task.official_id)
    local_ok = dataset_present(local_id)
    if source == "official" or (source == "auto" and official_ok):
        if official_ok:
            return task.official_id  # type: ignore[return-value]
    elif local_ok:
        return local_id
    raise DatasetMissingError(f"no dataset for task {task.name!r} in {datasets_root()}",
                              _missing_hint(task, source, recipe))


def _missing_hint(task: TaskSpec, source: DataSource, recipe: str | None = None) -> str:
    ways = []
    if task.official_id is not None and source != "local":
        ways.append(f"on a connected machine run `minari download {task.official_id}` and copy the store here")
    if task.recipe is not None and source != "official":
        flag = f" --recipe {recipe}" if recipe is not None and recipe != task.default_data_recipe else ""
        ways.append(f"make the local equivalent: `romi data make {task.name}{flag}`")
    if not ways:
        return "this task has no dataset that can be had this way; see `romi data info " + task.name + "`"
    return " or ".join(ways)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Steps:
    """A dataset's episodes laid end to end, exactly as its file holds them.

    Minari stores one more observation than steps per episode, so `observations` has
    `lengths.sum() + len(lengths)` rows; the step arrays have `lengths.sum()`.
    """

    observations: dict[str, np.ndarray] | np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    lengths: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        obs = self.observations
        arrays = {f"observations/{k}": v for k, v in obs.items()} if isinstance(obs, dict) else {"observations": obs}
        return {**arrays, "actions": self.actions, "rewards": self.rewards, "terminations": self.terminations,
                "truncations": self.truncations, "lengths": self.lengths}

    @classmethod
    def from_arrays(cls, arrays: Any) -> _Steps:
        keys = list(arrays.keys())
        obs: dict[str, np.ndarray] | np.ndarray = (
            arrays["observations"] if "observations" in keys
            else {k.split("/", 1)[1]: arrays[k] for k in keys if k.startswith("observations/")})
        return cls(obs, *(arrays[k] for k in ("actions", "rewards", "terminations", "truncations", "lengths")))


def _num_rows(obs: Any) -> int:
    """Rows of an observation array, or of any leaf of a (nested) dict of them."""
    return _num_rows(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)


def _concat_observations(parts: list[Any]) -> dict[str, np.ndarray] | np.ndarray:
    if isinstance(parts[0], dict):
        return {key: _concat_observations([part[key] for part in parts]) for key in parts[0]}  # type: ignore[misc]
    return np.concatenate([np.asarray(part) for part in parts])


def _read_steps_from_file(dataset_id: str, metadata: dict[str, Any]) -> _Steps:
    """Every episode through Minari's own storage classes (its decoding of spaces), laid end to end.

    Minari reads an episode at a time (~2 ms each: ~30 s for D4RL's 13k maze2d episodes), which is
    why `load_transitions` keeps the result in a cache beside the store.
    """
    from minari.dataset.minari_storage import MinariStorage

    data_path = dataset_dir(dataset_id) / "data"
    try:
        storage = MinariStorage.read(data_path)
        episodes = list(storage.get_episodes(range(storage.total_episodes)))
    except Exception as err:  # h5py raises OSError/KeyError/ValueError on truncated or damaged files
        raise DatasetCorruptError(
            f"dataset {dataset_id!r} at {data_path} is corrupt or truncated ({type(err).__name__}: {err})",
            _recreate_hint(dataset_id),
        ) from err
    if not episodes:
        raise DatasetCorruptError(f"dataset {dataset_id!r} has no episodes", _recreate_hint(dataset_id))
    lengths = np.array([len(ep["rewards"]) for ep in episodes], dtype=np.int64)
    if int(lengths.sum()) != metadata.get("total_steps", lengths.sum()) or len(episodes) != metadata.get(
            "total_episodes", len(episodes)):
        raise DatasetCorruptError(
            f"dataset {dataset_id!r} holds {len(episodes)} episodes / {lengths.sum()} steps but its metadata "
            f"promises {metadata.get('total_episodes')} / {metadata.get('total_steps')}",
            _recreate_hint(dataset_id),
        )
    for index, ep in enumerate(episodes):
        rows = _num_rows(ep["observations"])
        if rows != lengths[index] + 1:
            raise DatasetCorruptError(
                f"dataset {dataset_id!r} episode {index}: {rows} observations for {lengths[index]} steps "
                "(Minari stores one more observation than steps)",
                _recreate_hint(dataset_id),
            )
    return _Steps(
        observations=_concat_observations([ep["observations"] for ep in episodes]),
        actions=np.concatenate([np.asarray(ep["actions"], dtype=np.float32).reshape(len(ep["rewards"]), -1)
                                for ep in episodes]),
        rewards=np.concatenate([np.asarray(ep["rewards"], dtype=np.float32) for ep in episodes]),
        terminations=np.concatenate([np.asarray(ep["terminations"], dtype=bool) for ep in episodes]),
        truncations=np.concatenate([np.asarray(ep["truncations"], dtype=bool) for ep in episodes]),
        lengths=lengths,
    )


STEPS_CACHE_VERSION = 1
"""Bump when `_Steps` or its file layout changes: older cache files are then ignored and replaced."""


def steps_cache_dir() -> Path:
    """Decoded datasets, beside the Minari store (so an isolated store has an isolated cache)."""
    return datasets_root().parent / "romi-cache"


def _steps_cache_file(dataset_id: str) -> Path:
    """One file per state of the dataset's files: re-making or replacing a dataset changes the name."""
    data = dataset_dir(dataset_id) / "data"
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(data.glob("*")) if p.is_file()]
    key = hashlib.sha256(json.dumps([STEPS_CACHE_VERSION, dataset_id, stats]).encode()).hexdigest()[:16]
    return steps_cache_dir() / dataset_id.replace("/", "__") / f"{key}.npz"


def _read_steps(dataset_id: str) -> _Steps:
    """The dataset's steps from the cache when its files have not changed since, else from the file
    (and then cached, atomically; stale cache files of the same dataset are removed)."""
    metadata = read_metadata(dataset_id)
    check_recipe_current(dataset_id, metadata)  # before minutes of reading
    cached = _steps_cache_file(dataset_id)
    if cached.is_file():
        try:
            with np.load(cached) as arrays:
                return _Steps.from_arrays({k: arrays[k] for k in arrays.files})
        except Exception:  # a damaged cache file is only a slower load: read the dataset again
            cached.unlink(missing_ok=True)
    steps = _read_steps_from_file(dataset_id, metadata)
    try:
        for stale in cached.parent.glob("*.npz"):
            stale.unlink(missing_ok=True)
        atomic_save_npz(cached, steps.to_arrays())
    except OSError as err:  # e.g. a read-only shared store: every load reads the file
        warnings.warn(f"cannot cache the decoded dataset at {cached} ({err}); loads stay slow", stacklevel=2)
    return steps


def _flat(task: TaskSpec | None, obs: Any) -> np.ndarray:
    if isinstance(obs, dict):
        if task is not None and task.is_maze:
            return flatten_maze_observation(task, obs)
        if "observation" in obs:
            return np.asarray(obs["observation"], dtype=np.float32)
        raise DatasetCorruptError(f"dict observations with keys {sorted(obs)} and no 'observation' key")
    return np.asarray(obs, dtype=np.float32)


def load_transitions(task_or_dataset_id: str, source: DataSource = "auto", recipe: str | None = None) -> Transitions:
    """A task's dataset (or a dataset id's) as flat float32 `Transitions`, with task conventions applied.

    - dict observations are flattened (maze2d: `observation`; antmaze: `[achieved_goal, observation]`);
    - maze rewards are relabelled to the task's fixed goal (as D4RL's maze datasets are);
    - antmaze: reaching the goal is terminal, and episodes are split after each goal-reaching step,
      so trajectory returns (for return-weighted sampling) are those of goal-reaching segments;
    - an episode that ends neither terminated nor truncated is marked as a timeout at its last step.

    The decoded file is cached beside the Minari store (`steps_cache_dir`): a second load of an
    unchanged dataset takes about a second instead of Minari's per-episode reading.
    """
    if task_or_dataset_id in DATASET_TO_TASK or "/" not in task_or_dataset_id:
        task: TaskSpec | None = get_task(task_or_dataset_id)
        dataset_id = task_or_dataset_id if "/" in task_or_dataset_id else resolve_dataset_id(task, source, recipe)
    else:
        task, dataset_id = None, task_or_dataset_id
        if not dataset_present(dataset_id):
            raise DatasetMissingError(
                f"dataset {dataset_id!r} is not in the Minari store at {datasets_root()}",
                f"on a connected machine run `minari download {dataset_id}`, or check MINARI_DATASETS_PATH",
            )
    steps = _read_steps(dataset_id)

    # Step i of episode e sits at row (offset of e's observations) + i; its next observation one row on.
    lengths = steps.lengths
    num_steps = int(lengths.sum())
    episode_ids = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    step_starts = np.cumsum(lengths) - lengths
    obs_starts = step_starts + np.arange(len(lengths))  # each earlier episode has one extra observation
    obs_rows = obs_starts[episode_ids] + (np.arange(num_steps) - step_starts[episode_ids])
    flat = _flat(task, steps.observations)
    observations, next_observations = flat[obs_rows], flat[obs_rows + 1]
    actions = steps.actions.reshape(num_steps, -1).astype(np.float32, copy=False)
    rewards = steps.rewards.astype(np.float32, copy=False)
    terminals = steps.terminations.astype(bool, copy=True)
    timeouts = steps.truncations.astype(bool, copy=True)
    last = (step_starts + lengths - 1)[lengths > 0]
    timeouts[last] |= ~terminals[last]  # the recording stopped: a cut, not a true end

    if task is not None:
        if observations.shape[1] != task.obs_dim or actions.shape[1] != task.act_dim:
            raise DatasetCorruptError(
                f"dataset {dataset_id!r} has observations of size {observations.shape[1]} and actions of "
                f"size {actions.shape[1]}, but task {task.name} ({task.env_id}) needs {task.obs_dim} and "
                f"{task.act_dim}",
                "use the dataset made for this task (`romi data info " + task.name + "` names it)",
            )
        if task.is_maze:
            rewards = maze_reward(next_observations[:, :2], goal_xy(task), task.reward_type or "sparse")
        if task.domain == "maze2d":
            terminals = np.zeros_like(terminals)  # a continuing task: nothing ends
        if task.domain == "antmaze":
            terminals = rewards > 0
            # Split after every goal-reaching step: new segment id whenever the previous step was terminal.
            starts = np.ones(len(rewards), dtype=bool)
            starts[1:] = (episode_ids[1:] != episode_ids[:-1]) | terminals[:-1]
            episode_ids = np.cumsum(starts) - 1
            timeouts = timeouts & ~terminals

    transitions = Transitions(
        observations=observations,
        actions=actions,
        rewards=rewards.astype(np.float32),
        next_observations=next_observations,
        terminals=terminals,
        timeouts=timeouts,
        episode_ids=episode_ids.astype(np.int64),
        returns=episode_returns(episode_ids, rewards),
    )
    transitions.check_finite(f"dataset {dataset_id!r}", _recreate_hint(dataset_id))
    return transitions
