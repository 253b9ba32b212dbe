"""Home-made D4RL-equivalent datasets (spec §7), written as real Minari datasets under `local/...`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from romi.data.minari_io import dataset_dir, dataset_size_bytes, write_dataset
from romi.data.tasks import TaskSpec, get_task
from romi.errors import DatasetExistsError, RomiError

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


def make_dataset(
    task_name: str,
    *,
    steps: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    ref_episodes: int = 50,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    **recipe_options: Any,
) -> MakeSummary:
    """Build the local dataset of `task_name` with its recipe and write it atomically.

    `log` receives progress lines and `recipe_options` go to the recipe; only the SAC recipe
    (`locomotion-sac`) takes them: `budget`, `medium_fraction`, `config`, `behaviour_root`
    (see `romi.data.make.locomotion.make_sac_dataset`).
    """
    task = get_task(task_name)
    recipe_options = {k: v for k, v in recipe_options.items() if v is not None}
    if task.recipe is None:
        raise RomiError(
            f"task {task.name} has no local recipe: its official data came from a pretrained policy "
            "that cannot be fetched here",
            f"on a connected machine run `minari download {task.official_id}` and copy the Minari store here",
        )
    if task.recipe == "locomotion-sac":
        recipe_options["log"] = log
    elif recipe_options:
        options = sorted(f"--{name.replace('_', '-')}" for name in recipe_options)
        verb, them = ("applies", "that option") if len(options) == 1 else ("apply", "those options")
        raise RomiError(
            f"{', '.join(options)} only {verb} to the SAC-made locomotion datasets, not to {task.name}",
            f"drop {them}",
        )
    if dataset_dir(task.local_id).exists() and not overwrite:
        # Refuse before spending minutes of simulation.
        raise DatasetExistsError(
            f"dataset {task.local_id!r} already exists at {dataset_dir(task.local_id)}",
            "pass --overwrite to replace it",
        )
    started = time.perf_counter()
    recipe = _recipe(task)
    result = recipe(task, steps=steps, seed=seed, ref_episodes=ref_episodes, progress=progress, **recipe_options)
    path = write_dataset(
        task.local_id,
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
    total_steps = sum(len(ep.rewards) for ep in result.episodes)
    returns = [float(sum(ep.rewards)) for ep in result.episodes]
    return MakeSummary(
        task=task.name,
        dataset_id=task.local_id,
        path=str(path),
        episodes=len(result.episodes),
        steps=total_steps,
        mean_episode_return=sum(returns) / max(1, len(returns)),
        ref_min_score=result.ref_min_score,
        ref_max_score=result.ref_max_score,
        generation_seconds=result.generation_seconds,
        total_seconds=time.perf_counter() - started,
        size_bytes=dataset_size_bytes(task.local_id),
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
