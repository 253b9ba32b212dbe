"""Fill a Minari store with every dataset some sweeps need: the cluster's data-prep step.

Run once per store (on a shared mount, once for the whole cluster): official datasets are downloaded
when the sweep may use them, the others are made by their local recipe. Present datasets are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from romi.errors import DatasetMissingError


@dataclass(frozen=True)
class PreparedTask:
    task: str
    dataset_id: str
    action: str  # present | downloaded | made


def plan_dataset(task_name: str, data_source: str = "auto", recipe: str | None = None) -> tuple[str, str]:
    """(action, dataset id) that gives `task_name` a dataset under `data_source`; action is present,
    download or make. Prefers the official dataset, as training does (`resolve_dataset_id`)."""
    from romi.data.minari_io import resolve_dataset_id
    from romi.tasks import get_task

    task = get_task(task_name)
    try:
        return "present", resolve_dataset_id(task, data_source, recipe)  # type: ignore[arg-type]
    except DatasetMissingError:
        pass
    local = recipe is not None and recipe != task.default_data_recipe
    if task.official_id is not None and data_source != "local" and not local:
        return "download", task.official_id
    if task.recipe is not None and data_source != "official":
        return "make", task.local_dataset_id(recipe)
    raise DatasetMissingError(f"task {task_name!r} has no dataset that data_source={data_source!r} can get",
                              f"see `romi data info {task_name}`")


def prepare_datasets(tasks: Iterable[tuple[str, str] | tuple[str, str, str | None]],
                     log: Callable[[str], None] = print) -> list[PreparedTask]:
    """Download or make the dataset of every (task, data_source[, data_recipe]); fails on the first that
    cannot be had."""
    import minari

    from romi.data.make import make_dataset

    done: list[PreparedTask] = []
    for task_name, data_source, *recipe in dict.fromkeys(tasks):  # each task once, in order
        action, dataset_id = plan_dataset(task_name, data_source, *recipe)
        if action == "download":
            log(f"{task_name}: downloading {dataset_id}")
            minari.download_dataset(dataset_id)
            action = "downloaded"
        elif action == "make":
            log(f"{task_name}: making {dataset_id} with its recipe")
            make_dataset(task_name, log=log, recipe=recipe[0] if recipe else None)
            action = "made"
        else:
            log(f"{task_name}: {dataset_id} present")
        done.append(PreparedTask(task_name, dataset_id, action))
    return done
