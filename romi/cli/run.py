"""`romi train` (one run, no Ray) and `romi imagine` (what the models imagine, as figures)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from romi.cli.common import THREADS_HELP, app, console, err_console, friendly_errors, use_threads
from romi.config import MAX_SEED
from romi.divergence import describe
from romi.errors import RomiError

if TYPE_CHECKING:
    from romi.tasks import TaskSpec

@app.command("train")
@friendly_errors(interrupted="the run is saved at its last evaluation; rerun the same command to resume from there")
def train(
    task: Annotated[str, typer.Option(help="Task name (see `romi data list`).")],
    method: Annotated[str, typer.Option(help="BCQ, CQL, ROMI-BCQ, ROMI-CQL, FOMI-BCQ or ROMI-RBC-BCQ.")],
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = 0,
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
    threads: Annotated[int, typer.Option(min=1, help=THREADS_HELP)] = 1,
) -> None:
    """Train one (task, method, seed) without Ray; resumes from its checkpoint, skips if finished."""
    use_threads(threads)
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
            q = record.train.get("q_mean", float("nan"))
            diverged = run.diverged_at_step
            bar.console.print(
                f"step {record.step:>9,}  score {record.score:7.2f}  (local {record.score_local:7.2f})  "
                f"return {record.return_mean:9.2f}  Q {q:8.2f} / bound {run.value_bound.high:g}  "
                f"{record.steps_per_second:6.1f} steps/s" + (f"  {describe(diverged, run.value_bound)}" if diverged
                                                             else "")
            )

        summary = train_run(config, run_dir, artifacts, on_eval=on_eval, log=log, reporter=reporter)
    console.print(
        f"[green]done[/] final score {summary['final_score']:.2f}, last-{config.eval.last_k} mean "
        f"{summary['last_k_score']:.2f} (local refs: {summary['final_score_local']:.2f}) -> {escape(str(run_dir))}"
    )
    if summary.get("diverged_at_step") is not None:
        console.print(f"[yellow]the critic diverged[/]: its mean Q left the value bound {summary['value_bound']} at "
                      f"step {summary['diverged_at_step']:,} (peak {summary['q_mean_peak']:.1f}); its scores are "
                      "those of a diverged learner")


@app.command("imagine")
@friendly_errors
def imagine(
    task: Annotated[str, typer.Argument(help="A maze2d task, e.g. maze2d-umaze-sparse.")],
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED,
                                      help="Seed of the models (the one trials of that seed use).")] = 0,
    profile: Annotated[str, typer.Option(help="Whose model settings: paper, reduced or quick.")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override, as for `romi train`.")] = None,
    artifacts: Annotated[Path, typer.Option(help="The artifact store (shared with `romi train`).")] = Path(
        "runs/artifacts"),
    out: Annotated[Path, typer.Option(help="Where the figures go.")] = Path("analysis/out/imagination"),
    threads: Annotated[int, typer.Option(min=1, help=THREADS_HELP)] = 1,
) -> None:
    """Train (or load) the reverse and forward models and rollout policy once, and draw what they imagine."""
    use_threads(threads)
    from rich.progress import Progress

    from romi.analysis import plots
    from romi.analysis.imagined import ANCHORS, COLUMNS, buffer_content, buffer_content_markdown
    from romi.artifacts import ArtifactStore
    from romi.config import build_run_config, parse_overrides
    from romi.data.minari_io import load_dataset
    from romi.envs import make_eval_env
    from romi.imagination import build
    from romi.io import atomic_write_text
    from romi.progress import BarReporter

    overrides = parse_overrides(set_ or [])
    configs = {"reverse": build_run_config(task, "ROMI-BCQ", seed, profile, overrides),
               "forward": build_run_config(task, "FOMI-BCQ", seed, profile, overrides)}
    spec = _maze2d_task(configs["reverse"].task)
    dataset = load_dataset(spec, configs["reverse"].data_source, configs["reverse"].data_recipe)
    data, dataset_id, identity = dataset.transitions, dataset.id, build.DataIdentity.of(dataset)
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
    files += plots.model_accuracy_by_horizon(artifacts, dataset_id, [seed], out / f"model_accuracy_{spec.name}")
    horizon = configs["reverse"].imagination.horizon or spec.paper.horizon
    content = buffer_content(spec, data, models, horizon=horizon, seed=seed).assign(seed=seed)[["seed", *COLUMNS]]
    table = buffer_content_markdown(spec, content, anchors=ANCHORS, horizon=horizon)
    atomic_write_text(out / f"imagined_{spec.name}.md", table + "\n")
    files.append(out / f"imagined_{spec.name}.md")
    console.print(table, markup=False, highlight=False, soft_wrap=True)
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


