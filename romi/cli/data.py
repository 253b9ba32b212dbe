"""`romi data`: list, make, inspect and prepare the paper's datasets."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import filesize
from rich.markup import escape
from rich.table import Table

from romi.cli.common import THREADS_HELP, _count, console, data_app, err_console, friendly_errors, use_threads
from romi.config import MAX_SEED
from romi.errors import RomiError


@data_app.command("list")
@friendly_errors
def data_list() -> None:
    """Every paper task, which of its datasets are present, and their size."""
    from romi.data.minari_io import dataset_present, dataset_size_bytes, datasets_root
    from romi.tasks import TASKS

    table = Table(title=f"romi tasks (Minari store: {datasets_root()})")
    for column in ("task", "tables", "official dataset", "local dataset", "local recipe"):
        table.add_column(column)
    for task in TASKS.values():
        if task.official_id is None:
            official = "[dim]none in Minari[/]"
        elif dataset_present(task.official_id):
            official = f"[green]{task.official_id}[/] ({filesize.decimal(dataset_size_bytes(task.official_id))})"
        else:
            official = f"[dim]{task.official_id} (absent)[/]"
        locals_ = []
        for local_id in [task.local_id, *(i for _, i in task.data_recipes[1:])]:
            if dataset_present(local_id):
                locals_.append(f"[green]{local_id}[/] ({filesize.decimal(dataset_size_bytes(local_id))})")
            else:
                locals_.append(f"[dim]{local_id} (absent)[/]")
        local = "\n".join(locals_)
        recipe = "\n".join(r for r, _ in task.data_recipes) or task.recipe or "[dim]official only[/]"
        table.add_row(task.name, ",".join(map(str, task.tables)), official, local, recipe)
    console.print(table)


@data_app.command("make")
@friendly_errors
def data_make(
    task: Annotated[str, typer.Argument(help="Task name, e.g. maze2d-umaze-sparse (see `romi data list`).")],
    steps: Annotated[
        int | None,
        typer.Option(help="Environment steps (default: D4RL's sizes: maze2d umaze/medium/large 1M/2M/4M; "
                          "locomotion 1M).", min=1),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the data-collecting policy and simulator.", min=0,
                                         max=MAX_SEED)] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset with the same id.")] = False,
    ref_episodes: Annotated[int, typer.Option(help="Episodes for the reference scores.", min=1)] = 50,
    budget: Annotated[
        int | None,
        typer.Option(help="medium family: SAC env steps the behaviour run may reach (default 1M).", min=1),
    ] = None,
    medium_fraction: Annotated[
        float | None,
        typer.Option(help="medium family: medium threshold as a fraction of the expert reference, in (0, 1] "
                          "(default 1/3)."),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="maze2d: d4rl (default: D4RL's generator, the paper's data) or minari (Minari's "
                          "regeneration scripts, as the official D4RL/pointmaze datasets); each has its own "
                          "dataset id."),
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help=THREADS_HELP)] = 1,
) -> None:
    """Build a task's local D4RL-equivalent dataset in the Minari store."""
    use_threads(threads)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from romi.data.make import make_dataset
    from romi.data.make.locomotion import data_steps
    from romi.tasks import get_task

    spec = get_task(task)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err_console, transient=True,
    ) as bar:
        handle = bar.add_task(f"{spec.name}: simulating", total=data_steps(spec, steps))
        summary = make_dataset(
            spec.name, steps=steps, seed=seed, overwrite=overwrite, ref_episodes=ref_episodes,
            progress=lambda n: bar.advance(handle, n),
            log=lambda line: bar.console.print(line, markup=False, highlight=False),
            budget=budget, medium_fraction=medium_fraction, recipe=recipe,
        )
    if not summary.made:
        console.print(
            f"[green]already made[/] {summary.dataset_id} at {escape(str(summary.path))}: episodes "
            f"{summary.episodes:,}, steps {summary.steps:,}, same recipe and seed, checked; nothing to do "
            "(--overwrite makes it again)"
        )
        return
    console.print(
        f"[green]made[/] {summary.dataset_id} at {escape(str(summary.path))}\n"
        f"  episodes {summary.episodes:,}  steps {summary.steps:,}  mean episode return "
        f"{summary.mean_episode_return:.2f}\n"
        f"  reference scores: random {summary.ref_min_score:.2f} / expert {summary.ref_max_score:.2f}\n"
        f"  simulation {summary.generation_seconds:.1f} s, total {summary.total_seconds:.1f} s, "
        f"size {filesize.decimal(summary.size_bytes)}"
    )


@data_app.command("info")
@friendly_errors
def data_info(task: Annotated[str, typer.Argument(help="Task name or dataset id.")]) -> None:
    """A task's settings and what its datasets hold."""
    from romi.data.minari_io import (
        check_recipe_current,
        dataset_present,
        dataset_refs,
        dataset_size_bytes,
        load_transitions,
        read_metadata,
    )
    from romi.envs import goal_visits
    from romi.errors import DatasetCorruptError
    from romi.tasks import get_task

    spec = get_task(task)
    console.print(f"[bold]{spec.name}[/]  domain {spec.domain}, paper tables {spec.tables}")
    console.print(f"  evaluation env {spec.env_id}, horizon {spec.horizon}, obs {spec.obs_dim}, act {spec.act_dim}")
    console.print(f"  D4RL reference scores {spec.d4rl_ref_min} / {spec.d4rl_ref_max}")
    p = spec.paper
    console.print(
        f"  paper profile: h={p.horizon}, model share {p.model_share}, rollout policy {p.rollout_policy}, "
        f"return-weighted real data (ROMI/FOMI runs only) {p.return_weighted}"
    )
    damaged: list[DatasetCorruptError] = []
    local = [(f"local ({r} recipe)", i) for r, i in spec.data_recipes] or [("local", spec.local_id)]
    for label, dataset_id in [("official", spec.official_id), *local]:
        if dataset_id is None:
            console.print(f"  {label}: Minari has no such dataset")
            continue
        if not dataset_present(dataset_id):
            console.print(f"  {label}: {dataset_id} [dim](absent)[/]")
            continue
        meta = read_metadata(dataset_id)
        try:
            check_recipe_current(dataset_id, meta)
            outdated = None
        except RomiError as err:
            outdated = err
        # The checks `romi train` makes (readable, complete, the task's sizes, finite), so that a dataset
        # `data info` lists as good is one a run can train on. (An outdated one is refused before reading.)
        checked, visits = "", None
        if outdated is None:
            try:
                transitions = load_transitions(dataset_id)
                checked = f"; checked: {len(transitions):,} finite transitions of the task's sizes"
                if spec.domain == "maze2d":
                    visits = goal_visits(spec, transitions.next_observations[:, :2], transitions.episode_ids)
            except DatasetCorruptError as err:
                console.print(f"  {label}: [red]{dataset_id} is damaged[/]")
                damaged.append(err)
                continue
        console.print(
            f"  {label}: [green]{dataset_id}[/] episodes {_count(meta.get('total_episodes'))} steps "
            f"{_count(meta.get('total_steps'))} size {filesize.decimal(dataset_size_bytes(dataset_id))}{checked}"
        )
        console.print(
            f"    reference scores (random / expert): this dataset's {_ref(meta.get('ref_min_score'))} / "
            f"{_ref(meta.get('ref_max_score'))}  |  D4RL's {spec.d4rl_ref_min} / {spec.d4rl_ref_max}"
        )
        try:
            dataset_refs(dataset_id, meta, spec)
        except DatasetCorruptError as err:
            console.print(f"    [red]unusable:[/] {escape(err.problem)}; fix: {escape(err.hint or '')}")
            damaged.append(err)
        if visits is not None:
            console.print(f"    {visits.describe()}")
        if outdated is not None:
            console.print(f"    [yellow]outdated:[/] {escape(outdated.problem)}; fix: {escape(outdated.hint or '')}")
        if meta.get("description"):
            console.print(f"    [dim]{escape(str(meta['description']))}[/]")
    if len(damaged) == 1:
        raise damaged[0]
    if damaged:
        raise DatasetCorruptError("; ".join(err.problem for err in damaged),
                                  "; ".join(err.hint for err in damaged if err.hint))


def _ref(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "—"


@data_app.command("prepare")
@friendly_errors
def data_prepare(
    sweeps: Annotated[list[str], typer.Argument(help="Sweeps (shipped names or files) whose datasets to get.")],
    dry_run: Annotated[bool, typer.Option(help="Only say what would be downloaded or made.")] = False,
) -> None:
    """Download or make every dataset the given sweeps need (a cluster's data-prep step)."""
    from romi.data.minari_io import datasets_root
    from romi.data.prepare import plan_dataset, prepare_datasets
    from romi.tune.spec import load_sweep

    needed = [(task, str(spec.overrides.get("data_source", "auto")), spec.overrides.get("data_recipe"))
              for spec in map(load_sweep, sweeps) for task in spec.tasks]
    console.print(f"Minari store: {datasets_root()}")
    if dry_run:
        for task, source, recipe in dict.fromkeys(needed):
            action, dataset_id = plan_dataset(task, source, recipe)
            console.print(f"  {task}: {action} {dataset_id}")
        return
    done = prepare_datasets(needed, log=lambda line: console.print(line, markup=False, highlight=False))
    console.print(f"[green]ready[/]: {len(done)} datasets ({sum(d.action != 'present' for d in done)} new)")


