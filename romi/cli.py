"""`romi` command line: thin wrappers over the library (data | train | sweep | report).

Every `RomiError` becomes a short red message with its fix and exit code 2; nothing here holds
logic that the Python API does not also offer.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from romi.errors import RomiError

if TYPE_CHECKING:
    from romi.tasks import TaskSpec

app = typer.Typer(
    help="ROMI (Reverse Offline Model-based Imagination) benchmarks on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: list, make and inspect the paper's tasks.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


INTERRUPTED = "nothing half-written was kept"


def _print_error(problem: str, hint: str | None) -> None:
    # Messages carry user text (paths, YAML errors with `[...]`): escaped, or rich would eat it as markup.
    err_console.print(f"[bold red]error:[/] {escape(problem)}")
    if hint:
        err_console.print(f"[yellow]fix:[/] {escape(hint)}")


def friendly_errors(func: F | None = None, *, interrupted: str = INTERRUPTED) -> Any:
    """Turn library errors into a message naming the problem and the fix, and exit code 2.

    `interrupted` is what Ctrl-C leaves behind, said to the user (per command).
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except RomiError as err:
                _print_error(err.problem, err.hint)
                raise typer.Exit(err.exit_code) from None
            except OSError as err:
                # A safety net behind the up-front checks: a disk that fills or a path that vanishes
                # mid-run is the user's to fix, and a traceback would not say how.
                where = f" ({err.filename})" if err.filename else ""
                _print_error(f"{err.strerror or err}{where}",
                             "check that the path exists, is writable and its disk has space, then rerun")
                raise typer.Exit(RomiError.exit_code) from None
            except KeyboardInterrupt:
                err_console.print(f"[red]interrupted[/]: {escape(interrupted)}")
                raise typer.Exit(130) from None

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _size(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024  # type: ignore[assignment]
    return ""


# --------------------------------------------------------------------------------------------
# romi data
# --------------------------------------------------------------------------------------------


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
            official = f"[green]{task.official_id}[/] ({_size(dataset_size_bytes(task.official_id))})"
        else:
            official = f"[dim]{task.official_id} (absent)[/]"
        if dataset_present(task.local_id):
            local = f"[green]{task.local_id}[/] ({_size(dataset_size_bytes(task.local_id))})"
        else:
            local = f"[dim]{task.local_id} (absent)[/]"
        recipe = task.recipe or "[dim]official only[/]"
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
    seed: Annotated[int, typer.Option(help="Seed of the data-collecting policy and simulator.", min=0)] = 0,
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
) -> None:
    """Build a task's local D4RL-equivalent dataset in the Minari store."""
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
            budget=budget, medium_fraction=medium_fraction,
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
        f"size {_size(summary.size_bytes)}"
    )


@data_app.command("info")
@friendly_errors
def data_info(task: Annotated[str, typer.Argument(help="Task name or dataset id.")]) -> None:
    """A task's settings and what its datasets hold."""
    from romi.data.minari_io import (
        check_recipe_current,
        dataset_present,
        dataset_size_bytes,
        load_transitions,
        read_metadata,
    )
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
    for label, dataset_id in (("official", spec.official_id), ("local", spec.local_id)):
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
        checked = ""
        if outdated is None:
            try:
                checked = f"; checked: {len(load_transitions(dataset_id)):,} finite transitions of the task's sizes"
            except DatasetCorruptError as err:
                console.print(f"  {label}: [red]{dataset_id} is damaged[/]")
                damaged.append(err)
                continue
        console.print(
            f"  {label}: [green]{dataset_id}[/] episodes {_count(meta.get('total_episodes'))} steps "
            f"{_count(meta.get('total_steps'))} size {_size(dataset_size_bytes(dataset_id))}{checked}"
        )
        console.print(
            f"    reference scores (random / expert): this dataset's {_ref(meta.get('ref_min_score'))} / "
            f"{_ref(meta.get('ref_max_score'))}  |  D4RL's {spec.d4rl_ref_min} / {spec.d4rl_ref_max}"
        )
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

    needed = [(task, str(spec.overrides.get("data_source", "auto")))
              for spec in map(load_sweep, sweeps) for task in spec.tasks]
    console.print(f"Minari store: {datasets_root()}")
    if dry_run:
        for task, source in dict.fromkeys(needed):
            action, dataset_id = plan_dataset(task, source)
            console.print(f"  {task}: {action} {dataset_id}")
        return
    done = prepare_datasets(needed, log=lambda line: console.print(line, markup=False, highlight=False))
    console.print(f"[green]ready[/]: {len(done)} datasets ({sum(d.action != 'present' for d in done)} new)")


@app.command("train")
@friendly_errors(interrupted="the run is saved at its last evaluation; rerun the same command to resume from there")
def train(
    task: Annotated[str, typer.Option(help="Task name (see `romi data list`).")],
    method: Annotated[str, typer.Option(help="BCQ, CQL, ROMI-BCQ, ROMI-CQL, FOMI-BCQ or ROMI-RBC-BCQ.")],
    seed: Annotated[int, typer.Option(min=0)] = 0,
    profile: Annotated[
        str,
        typer.Option(help="paper (the spec's numbers), reduced (paper, 100k steps) or quick (minutes on a laptop)."),
    ] = "paper",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field: --set bcq.batch_size=256 (repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/TASK/METHOD/seedS).")] = None,
    artifacts: Annotated[Path, typer.Option(help="Where trained models and rollout policies are shared.")] = Path(
        "runs/artifacts"
    ),
) -> None:
    """Train one (task, method, seed) without Ray; resumes from its checkpoint, skips if finished."""
    from rich.progress import Progress

    from romi.config import build_run_config, parse_overrides
    from romi.progress import BarReporter
    from romi.train import check_run_inputs, default_run_dir, train_run

    config = build_run_config(task, method, seed, profile, parse_overrides(set_ or []))
    run_dir = out or default_run_dir(Path("runs"), config)
    check_run_inputs(config, run_dir, artifacts)  # before the progress bar: a refused run shows no bar
    console.print(f"[bold]{config.task} {config.method} seed {config.seed}[/] ({config.profile} profile) -> "
                  f"{escape(str(run_dir))}")
    with Progress(*BarReporter.columns(), console=err_console) as bar:
        def log(line: str) -> None:
            bar.console.print(line, markup=False, highlight=False)

        # The bars (dynamics epochs, then gradient steps from the resumed step) move between evaluations.
        reporter = BarReporter(bar, log)

        def on_eval(record, run) -> None:
            reporter.status(f"score {record.score:6.1f}")
            bar.console.print(
                f"step {record.step:>9,}  score {record.score:7.2f}  (local {record.score_local:7.2f})  "
                f"return {record.return_mean:9.2f}  {record.steps_per_second:6.1f} steps/s"
            )

        summary = train_run(config, run_dir, artifacts, on_eval=on_eval, log=log, reporter=reporter)
    console.print(
        f"[green]done[/] final score {summary['final_score']:.2f}, last-{config.eval.last_k} mean "
        f"{summary['last_k_score']:.2f} (local refs: {summary['final_score_local']:.2f}) -> {escape(str(run_dir))}"
    )


@app.command("sweep")
@friendly_errors
def sweep(
    config: Annotated[
        str | None, typer.Argument(help="A shipped sweep's name (table1, quick; see --list) or a sweep file's path.")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="paper, reduced (100k steps) or quick: replaces the file's profile.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address ('auto' inside a cluster); default: local Ray.")
    ] = None,
    storage: Annotated[str, typer.Option(help="Local path or cloud URI (s3://, gs://) for results.")] = "runs/sweeps",
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted sweep (finished trials are kept); start it if there is none.")
    ] = False,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Trials running at once (default: as resources allow).")
    ] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray instance (default: all).")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Start an existing sweep of this name over (its trained models are kept).")
    ] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the sweeps shipped with romi and exit.")] = False,
) -> None:
    """Run a paper table (or any sweep file) as a Ray Tune experiment."""
    from romi.tune.spec import load_sweep, shipped_sweeps
    from romi.tune.sweep import run_sweep, trial_statuses

    if list_ or config is None:
        _list_sweeps(shipped_sweeps())
        if config is None and not list_:
            raise typer.Exit(2)
        return
    spec = load_sweep(config, profile)
    trials = len(spec.trial_configs())
    console.print(
        f"[bold]sweep {spec.name}[/]: {len(spec.tasks)} tasks x {len(spec.methods)} methods x "
        f"{len(spec.seed_list)} seeds = {trials} trials ({spec.profile} profile) -> {escape(storage)}/{spec.name}"
    )
    grid = run_sweep(spec, storage, address=address, resume=resume, overwrite=overwrite,
                     max_concurrent=max_concurrent, num_cpus=num_cpus,
                     log=lambda line: err_console.print(line, markup=False, highlight=False, soft_wrap=True))
    table = Table(title=f"{spec.name}: final normalised score per trial")
    for column in ("task", "method", "seed", "steps", "score", "status"):
        table.add_column(column)
    rows = trial_statuses(spec, grid)
    colour = {"finished": "green", "failed": "red", "stopped": "yellow", "not started": "yellow"}
    for row in rows:
        table.add_row(row.task, row.method, str(row.seed), "-" if row.step is None else f"{row.step:,}",
                      "-" if row.score is None else f"{row.score:.2f}", f"[{colour[row.status]}]{row.status}[/]")
    console.print(table)
    errors = sum(row.status == "failed" for row in rows)
    unfinished = sum(row.status in ("stopped", "not started") for row in rows)
    if errors:
        err_console.print(f"[red]{errors} trial(s) failed[/]: each one's error is printed above; fix its cause, "
                          "then rerun with --resume to retry them")
        raise typer.Exit(1)
    if unfinished:
        err_console.print(f"[yellow]{unfinished} trial(s) unfinished[/] (interrupted); rerun with --resume "
                          "to finish them without recomputing the finished ones")
        raise typer.Exit(130)


def _list_sweeps(sweeps: dict[str, Path]) -> None:
    from romi.tune.spec import load_sweep

    table = Table(title="sweeps shipped with romi (romi sweep NAME)")
    for column in ("name", "table", "trials", "profile", "description"):
        table.add_column(column)
    for name, path in sweeps.items():
        spec = load_sweep(path)
        trials = len(spec.tasks) * len(spec.methods) * len(spec.seed_list)
        table.add_row(name, str(spec.table or "-"), str(trials), spec.profile, spec.description)
    console.print(table)


@app.command("report")
@friendly_errors
def report(
    sweeps: Annotated[list[str], typer.Argument(help="Sweep directories (or URIs), e.g. runs/sweeps/quick.")],
    out: Annotated[Path, typer.Option(help="Where tables and figures are written.")] = Path("analysis/out"),
    last_k: Annotated[int, typer.Option(help="Average each trial's last k evaluations (1: final score).")] = 1,
    figures: Annotated[bool, typer.Option(help="Also draw the figures.")] = True,
) -> None:
    """The paper's tables with our numbers beside them, and the figures."""
    from romi.analysis.report import make_report

    built = make_report(*sweeps, out=out, last_k=last_k, figures=figures,
                        log=lambda line: err_console.print(line, markup=False, highlight=False, soft_wrap=True))
    for table, content in built.tables.items():
        console.print(f"\n[bold]Table {table}[/] (ours: mean ± std over n seeds; best of ours in bold)\n")
        # soft_wrap: rows stay whole in job logs and pipes (rich would wrap them at 80 columns there)
        console.print(content.to_markdown(), markup=False, highlight=False, soft_wrap=True)
    for skipped in built.skipped:
        err_console.print(f"[yellow]warning:[/] skipped {escape(skipped)}", highlight=False, soft_wrap=True)
    if not built.missing.empty:
        err_console.print(f"[yellow]{len(built.missing)} trial(s) not finished:[/]")
        for _, row in built.missing.iterrows():
            status = row["status"]
            if status in ("stopped", "failed") and row["evaluations"]:
                status += f" at step {int(row['steps']):,} ({int(row['evaluations'])} evaluations)"
            err_console.print(f"  {row['task']} {row['method']} seed {row['seed']}: {status}",
                              markup=False, highlight=False)
    console.print(f"\nwrote {len(built.files)} files to {escape(str(out))}")


@app.command("imagine")
@friendly_errors
def imagine(
    task: Annotated[str, typer.Argument(help="A maze2d task, e.g. maze2d-umaze-sparse.")],
    seed: Annotated[int, typer.Option(min=0, help="Seed of the models (the one trials of that seed use).")] = 0,
    profile: Annotated[str, typer.Option(help="Whose model settings: paper, reduced or quick.")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override, as for `romi train`.")] = None,
    artifacts: Annotated[Path, typer.Option(help="The artifact store (shared with `romi train`).")] = Path(
        "runs/artifacts"),
    out: Annotated[Path, typer.Option(help="Where the figures go.")] = Path("analysis/out/imagination"),
) -> None:
    """Train (or load) the reverse and forward models and rollout policy once, and draw what they imagine."""
    from rich.progress import Progress

    from romi.analysis import plots
    from romi.artifacts import ArtifactStore
    from romi.config import build_run_config, parse_overrides
    from romi.data.minari_io import dataset_fingerprint, load_transitions, resolve_dataset_id
    from romi.envs import make_eval_env
    from romi.imagination import build
    from romi.progress import BarReporter

    overrides = parse_overrides(set_ or [])
    configs = {"reverse": build_run_config(task, "ROMI-BCQ", seed, profile, overrides),
               "forward": build_run_config(task, "FOMI-BCQ", seed, profile, overrides)}
    spec = _maze2d_task(configs["reverse"].task)
    dataset_id = resolve_dataset_id(spec, configs["reverse"].data_source)
    data = load_transitions(dataset_id)
    identity = build.DataIdentity(dataset_id, dataset_fingerprint(dataset_id), data.obs_dim, data.act_dim)
    store = ArtifactStore(artifacts)
    max_action = float(make_eval_env(spec).action_space.high[0])

    models = {}
    with Progress(*BarReporter.columns(), console=err_console, transient=True) as bar:
        def log(line: str) -> None:
            bar.console.print(line, markup=False, highlight=False)

        reporter = BarReporter(bar, log)  # a bar per dynamics model while it trains
        for config in configs.values():
            direction = config.method_spec.direction
            assert direction is not None
            model = build.dynamics_model(store, data, identity, spec, direction, seed, config.dynamics, log,
                                         reporter)
            policy = build.rollout_policy(store, data, identity, direction, seed, config.rollout_policy,
                                          max_action, log)
            models[direction] = (model, policy)
    out.mkdir(parents=True, exist_ok=True)
    files = plots.imagination(spec.name, data, models, out / f"imagination_{spec.name}", seed=seed,
                              horizon=configs["reverse"].imagination.horizon or 5)
    files += plots.model_accuracy_by_horizon(artifacts, dataset_id, seed, out / f"model_accuracy_{spec.name}")
    for path in files:
        console.print(f"wrote {path}")
    console.print("Look for: red reverse rollouts end on dataset states (black dots) inside the data; blue "
                  "forward rollouts start there and drift, some into walls (the share is in each title). "
                  "The accuracy figure shows each model's error growing with the steps from the data.")


def _maze2d_task(name: str) -> TaskSpec:
    from romi.tasks import get_task

    spec = get_task(name)
    if spec.domain != "maze2d":
        raise RomiError(f"{spec.name} is a {spec.domain} task; this view is drawn over the maze2d mazes",
                        "pick a maze2d task, e.g. maze2d-umaze-sparse")
    return spec


@app.command("export")
@friendly_errors
def export(
    sweep: Annotated[str, typer.Argument(help="A sweep directory (or URI), e.g. runs/sweeps/reduced-table3-umaze.")],
    out: Annotated[Path, typer.Option(help="Where each finished trial becomes a small run directory.")],
    commit: Annotated[str | None, typer.Option(help="The code commit the sweep ran at (recorded).")] = None,
    models: Annotated[Path | None, typer.Option(
        help="Also copy the sweep's trained models here (copy them back into a sweep's artifacts/ to reuse).")
    ] = None,
) -> None:
    """Copy a sweep's finished trials (config, every evaluation, summary; no checkpoints) to commit them."""
    from romi.analysis.export import export_finished, export_models

    done = export_finished(sweep, out, code_commit=commit)
    for path in done.written:
        console.print(f"[green]exported[/] {path}")
    console.print(f"{len(done.written)} exported, {len(done.already)} already there, "
                  f"{len(done.unfinished)} not finished")
    for line in done.unfinished:
        console.print(f"  [dim]{escape(line)}[/]")
    if models is not None:
        copied = export_models(sweep, models)
        for path in copied.written:
            console.print(f"[green]model[/] {path}")
        console.print(f"{len(copied.written)} models copied, {len(copied.already)} already there")


def main() -> None:  # pragma: no cover - console-script entry for `python -m romi`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
