"""`romi sweep` (a paper table as a Ray Tune experiment), `romi report` and `romi export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from romi.cli.common import app, console, err_console, friendly_errors


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
        int | None, typer.Option(min=1, help="Trials running at once (default: as resources allow).")
    ] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray instance (default: all).")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Start an existing sweep of this name over (its trained models are kept).")
    ] = False,
    exported: Annotated[
        Path | None, typer.Option(help="Trials kept by `romi export --out DIR`: those finished there (same config) "
                                       "are not run again, e.g. on a new machine whose storage starts empty.")
    ] = None,
    plan: Annotated[bool, typer.Option(
        "--plan", help="Print the plan (trials, steps, speed measured here, expected duration; with --resume, of "
                       "the work left) and exit: nothing runs, nothing is written.")] = False,
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
    grid = len(spec.tasks) * len(spec.methods) * len(spec.seed_list)
    console.print(
        f"[bold]sweep {spec.name}[/]: {len(spec.tasks)} tasks x {len(spec.methods)} methods x "
        f"{len(spec.seed_list)} seeds = {grid} trials ({spec.profile} profile) -> {escape(storage)}/{spec.name}"
    )
    if spec.exclude:
        console.print(f"excluded by the sweep file: {', '.join(spec.exclude)}")
    if exported is not None:
        from romi.analysis.export import finished_exports

        done = finished_exports(spec.trial_configs(), exported)
        spec = spec.model_copy(update={"exclude": tuple(dict.fromkeys((*spec.exclude, *done)))})
        console.print(f"{len(done)} trial(s) finished in {escape(str(exported))}, not run again"
                      + (f": {', '.join(done)}" if done else ""))
    if spec.exclude and not spec.trial_configs():
        console.print("nothing to run: every trial of the sweep is excluded or already finished")
        return
    grid = run_sweep(spec, storage, address=address, resume=resume, overwrite=overwrite,
                     max_concurrent=max_concurrent, num_cpus=num_cpus, plan_only=plan,
                     log=lambda line: err_console.print(line, markup=False, highlight=False, soft_wrap=True))
    if plan:
        return
    table = Table(title=f"{spec.name}: final normalised score per trial")
    for column in ("task", "method", "seed", "steps", "score", "status"):
        table.add_column(column)
    rows = trial_statuses(spec, grid)
    colour = {"finished": "green", "failed": "red", "running": "cyan", "stopped": "yellow", "not started": "yellow"}
    for row in rows:
        table.add_row(row.task, row.method, str(row.seed), "-" if row.step is None else f"{row.step:,}",
                      "-" if row.score is None else f"{row.score:.2f}", f"[{colour[row.status]}]{row.status}[/]")
    console.print(table)
    for row in rows:
        if row.reason:
            err_console.print(f"[red]{row.task} {row.method} seed {row.seed} failed[/]: {escape(row.reason)}",
                              soft_wrap=True)
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
        trials = len(spec.trial_configs())  # the grid less the trials the file excludes
        table.add_row(name, str(spec.table or "-"), str(trials), spec.profile, spec.description)
    console.print(table)


@app.command("report")
@friendly_errors
def report(
    sweeps: Annotated[list[str], typer.Argument(help="Sweep directories (or URIs), e.g. runs/sweeps/quick.")],
    out: Annotated[Path, typer.Option(help="Where tables and figures are written.")] = Path("analysis/out"),
    last_k: Annotated[int, typer.Option(min=1, help="Average each trial's last k evaluations (1: final score).")] = 1,
    figures: Annotated[bool, typer.Option(help="Also draw the figures.")] = True,
    models: Annotated[Path | None, typer.Option(
        help="The trained models, if not in the sweep's artifacts/ (for exported trials: romi export --models's).")
    ] = None,
) -> None:
    """The paper's tables with our numbers beside them, and the figures."""
    from romi.analysis.report import make_report

    built = make_report(*sweeps, out=out, last_k=last_k, figures=figures, models=models,
                        log=lambda line: err_console.print(line, markup=False, highlight=False, soft_wrap=True))
    for table, content in built.tables.items():
        console.print(f"\n[bold]Table {table}[/] (ours: mean ± std over n seeds; best of ours in bold)\n")
        # soft_wrap: rows stay whole in job logs and pipes (rich would wrap them at 80 columns there)
        console.print(content.to_markdown(), markup=False, highlight=False, soft_wrap=True)
    if not built.claims.empty:
        console.print("\n[bold]The paper's claims[/] (holds: every seed pair in the paper's order; see claims.md)\n")
        console.print(built.claims.to_markdown(index=False), markup=False, highlight=False, soft_wrap=True)
    for skipped in built.skipped:
        err_console.print(f"[yellow]warning:[/] skipped {escape(skipped)}", highlight=False, soft_wrap=True)
    if not built.missing.empty:
        err_console.print(f"[yellow]{len(built.missing)} trial(s) not finished:[/]")
        for _, row in built.missing.iterrows():
            status = row["status"]
            if status in ("running", "stopped", "failed") and row["evaluations"]:
                status += f" at step {int(row['steps']):,} ({int(row['evaluations'])} evaluations)"
            err_console.print(f"  {row['task']} {row['method']} seed {row['seed']}: {status}",
                              markup=False, highlight=False)
    console.print(f"\nwrote {len(built.files)} files to {escape(str(out))}")


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
    """Copy a sweep's finished trials (config, every evaluation, summary; for maze2d also the trained policy's
    Figure 3 episodes; no checkpoints) to commit them."""
    from romi.analysis.export import export_finished, export_models

    done = export_finished(sweep, out, code_commit=commit)
    for path in done.written:
        console.print(f"[green]exported[/] {path}")
    console.print(f"{len(done.written)} exported, {len(done.already)} already there, "
                  f"{len(done.unfinished)} not finished")
    for line in done.unfinished:
        console.print(f"  [dim]{escape(line)}[/]")
    if done.manifest is not None:
        console.print(f"kept the sweep's manifest (the trials it asks for) in {escape(str(done.manifest))}")
    for line in done.notes:
        err_console.print(f"[yellow]note:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if models is not None:
        copied = export_models(sweep, models)
        for path in copied.written:
            console.print(f"[green]model[/] {path}")
        console.print(f"{len(copied.written)} models copied, {len(copied.already)} already there")
