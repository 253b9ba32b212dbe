"""Home-made D4RL-equivalent datasets (spec §7), written as real Minari datasets under `local/...`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from romi.data.minari_io import (
    check_recipe_current,
    dataset_dir,
    dataset_size_bytes,
    datasets_root,
    load_transitions,
    read_metadata,
)
from romi.data.minari_write import write_dataset
from romi.errors import DatasetExistsError, RomiError
from romi.io import check_free_space
from romi.locks import exclusive
from romi.space import dataset_bytes
from romi.tasks import TaskSpec, get_task

Progress = Callable[[int], None]
"""Called with the number of environment steps just taken (for progress bars)."""


@dataclass(frozen=True)
class MakeSummary:
    task: str
    dataset_id: str
    path: str
    episodes: int
    steps: int
    mean_episode_return: float
    ref_min_score: float
    ref_max_score: float
    generation_seconds: float
    total_seconds: float
    size_bytes: int
    made: bool = True
    """False: a complete dataset made with the same recipe, steps and seed was already there."""


def make_dataset(
    task_name: str,
    *,
    steps: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    ref_episodes: int = 50,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    recipe: str | None = None,
    **recipe_options: Any,
) -> MakeSummary:
    """Build the local dataset of `task_name` with its recipe and write it atomically.

    `recipe`: which of the task's data recipes (`TaskSpec.data_recipes`; maze2d: `d4rl`, the default, or
    `minari`); each writes its own dataset id. `log` receives progress lines and `recipe_options` go to
    the recipe; only the SAC recipe (`locomotion-sac`) takes them: `budget`, `medium_fraction`, `config`,
    `behaviour_root` (see `romi.data.make.locomotion.make_sac_dataset`).
    """
    task = get_task(task_name)
    dataset_id = task.local_dataset_id(recipe)  # an unknown recipe is refused here, before any work
    recipe_options = {k: v for k, v in recipe_options.items() if v is not None}
    if task.recipe is None:
        raise RomiError(
            f"task {task.name} has no local recipe: its official data came from a pretrained policy "
            "that cannot be fetched here",
            f"on a connected machine run `minari download {task.official_id}` and copy the Minari store here",
        )
    if task.recipe in ("locomotion-sac", "maze"):
        recipe_options["log"] = log
    if task.recipe != "locomotion-sac" and set(recipe_options) - {"log"}:
        options = sorted(f"--{name.replace('_', '-')}" for name in set(recipe_options) - {"log"})
        verb, them = ("applies", "that option") if len(options) == 1 else ("apply", "those options")
        raise RomiError(
            f"{', '.join(options)} only {verb} to the SAC-made locomotion datasets, not to {task.name}",
            f"drop {them}",
        )
    # One maker per dataset: a second `romi data make` of it is refused while the first simulates (else the
    # second would silently replace the first, both saying "made").
    with exclusive(dataset_dir(dataset_id), f"dataset {dataset_id}"):
        return _make_locked(task, dataset_id, recipe, steps=steps, seed=seed, overwrite=overwrite,
                            ref_episodes=ref_episodes, progress=progress, log=log, recipe_options=recipe_options)


def _make_locked(task: TaskSpec, dataset_id: str, recipe: str | None, *, steps: int | None, seed: int,
                 overwrite: bool, ref_episodes: int, progress: Progress | None, log: Callable[[str], None] | None,
                 recipe_options: dict[str, Any]) -> MakeSummary:
    if dataset_dir(dataset_id).exists() and not overwrite:
        # Decide before spending minutes of simulation: the same dataset is reused, a different one refused.
        return _already_made(task, dataset_id, steps=steps, seed=seed, recipe_options=recipe_options,
                             log=log or (lambda _: None))
    from romi.data.make.locomotion import data_steps

    # medium-replay's size is the SAC run's (its replay buffer up to the medium checkpoint): at most its budget.
    expected = data_steps(task, steps) or int(recipe_options.get("budget") or 1_000_000)
    check_free_space(datasets_root(), dataset_bytes(task, expected), f"dataset {dataset_id}")
    started = time.perf_counter()
    if task.recipe == "maze":
        recipe_options["maze_recipe"] = recipe or task.default_data_recipe
    result = _recipe(task)(task, steps=steps, seed=seed, ref_episodes=ref_episodes, progress=progress,
                           **recipe_options)
    total_steps = sum(len(ep.rewards) for ep in result.episodes)
    say = log or (lambda _: None)
    # Between the simulation and "made" lie seconds to minutes of HDF5 writing: say so.
    say(f"writing {total_steps:,} steps ({len(result.episodes):,} episodes) to {dataset_dir(dataset_id)} ...")
    written = time.perf_counter()
    path = write_dataset(
        dataset_id,
        result.episodes,
        env_id=task.env_id,
        eval_env=result.eval_env_spec,
        ref_min_score=result.ref_min_score,
        ref_max_score=result.ref_max_score,
        description=result.description,
        extra_metadata={
            "romi_task": task.name,
            "romi_recipe": task.recipe,
            "romi_seed": seed,
            "romi_generation_seconds": result.generation_seconds,
            "d4rl_ref_min_score": task.d4rl_ref_min,
            "d4rl_ref_max_score": task.d4rl_ref_max,
            **result.extra_metadata,
        },
        overwrite=overwrite,
    )
    say(f"wrote {dataset_id} in {time.perf_counter() - written:.1f} s")
    returns = [float(sum(ep.rewards)) for ep in result.episodes]
    return MakeSummary(
        task=task.name,
        dataset_id=dataset_id,
        path=str(path),
        episodes=len(result.episodes),
        steps=total_steps,
        mean_episode_return=sum(returns) / max(1, len(returns)),
        ref_min_score=result.ref_min_score,
        ref_max_score=result.ref_max_score,
        generation_seconds=result.generation_seconds,
        total_seconds=time.perf_counter() - started,
        size_bytes=dataset_size_bytes(dataset_id),
    )


def _recipe(task: TaskSpec):
    if task.recipe == "maze":
        from romi.data.make.maze import make_maze_dataset

        return make_maze_dataset
    if task.recipe == "locomotion-random":
        from romi.data.make.locomotion import make_random_dataset

        return make_random_dataset
    if task.recipe == "locomotion-sac":
        from romi.data.make.locomotion import make_sac_dataset

        return make_sac_dataset
    raise RomiError(f"task {task.name}: unknown recipe {task.recipe!r}")


def _already_made(task: TaskSpec, dataset_id: str, *, steps: int | None, seed: int, recipe_options: dict[str, Any],
                  log: Callable[[str], None]) -> MakeSummary:
    """The summary of `task`'s existing local dataset when it is complete and is what was asked for.

    Complete: it passes the checks `romi train` makes (readable, finite, the task's sizes) and its
    recipe is current. What was asked for: the same seed and number of steps. Anything else raises
    with the fix, so a rerun never silently trains on a different dataset than the command names.
    """
    from romi.data.make.locomotion import DEFAULT_STEPS as SAC_STEPS
    from romi.data.make.maze import default_steps

    path = dataset_dir(dataset_id)
    meta = read_metadata(dataset_id)  # unreadable: DatasetCorruptError with the re-create command
    check_recipe_current(dataset_id, meta)
    if task.recipe == "maze":
        asked, recorded = steps or default_steps(task), meta.get("total_steps")
    else:  # SAC-made: steps per behaviour policy
        asked, recorded = steps or SAC_STEPS, meta.get("romi_data_steps_per_policy")
    differences = []
    if recorded != asked:
        differences.append(f"{_count(recorded)} steps, not the {asked:,} asked for")
    if meta.get("romi_seed") != seed:
        differences.append(f"seed {meta.get('romi_seed')}, not {seed}")
    uncomparable = sorted(recipe_options.keys() - {"log"})  # SAC options are not all in the metadata
    if uncomparable:
        differences.append(f"options this check cannot compare ({', '.join(uncomparable)})")
    if differences:
        raise DatasetExistsError(
            f"dataset {dataset_id!r} already exists at {path} with " + "; ".join(differences),
            "pass --overwrite to replace it (models cached for the old data will be trained again), "
            "or drop the options to use it as it is",
        )
    # Reading a few million steps takes seconds: say what the wait is for.
    log(f"checking the existing {dataset_id} at {path} (readable, finite, the task's sizes) ...")
    transitions = load_transitions(dataset_id)  # damaged: DatasetCorruptError with the re-create command
    return MakeSummary(
        task=task.name,
        dataset_id=dataset_id,
        path=str(path),
        episodes=int(meta.get("total_episodes", 0)),
        steps=int(meta.get("total_steps", len(transitions))),
        mean_episode_return=float("nan"),  # not recorded in the metadata; the CLI does not show it here
        ref_min_score=float(meta.get("ref_min_score", float("nan"))),
        ref_max_score=float(meta.get("ref_max_score", float("nan"))),
        generation_seconds=float(meta.get("romi_generation_seconds", 0.0)),
        total_seconds=0.0,
        size_bytes=dataset_size_bytes(dataset_id),
        made=False,
    )


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else repr(value)
