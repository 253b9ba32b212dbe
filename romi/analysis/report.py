"""`romi report`: the paper's tables beside ours (md/html/tex) and the figures, for one or more sweeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from romi.analysis import plots
from romi.analysis.claims import check_claims, claims_markdown
from romi.analysis.imagined import write_buffer_content
from romi.analysis.policy_episodes import write_where_policies_go
from romi.analysis.results import check_sweep_paths, load_results, summarize_trials
from romi.analysis.tables import OUR_METHODS, PaperTable, paper_numbers, paper_table
from romi.errors import DatasetMissingError, RomiError
from romi.io import atomic_write_text, check_writable_dir
from romi.storage import is_remote


@dataclass
class Report:
    results: pd.DataFrame
    tables: dict[int, PaperTable]
    files: list[Path] = field(default_factory=list)
    missing: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: list[str] = field(default_factory=list)
    """Figures not drawn, and why (e.g. the dataset is not on this machine)."""
    claims: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The paper's orderings and whether our seeds show them (`romi.analysis.claims`)."""


def relevant_tables(results: pd.DataFrame) -> list[int]:
    """Tables whose tasks and methods the results cover (at least one task and two of its methods)."""
    paper = paper_numbers()
    chosen = []
    for table, methods in OUR_METHODS.items():
        tasks = set(paper[paper["table"] == table]["task"])
        hit = results[results["task"].isin(tasks) & results["method"].isin(methods)]
        if hit["method"].nunique() >= 2:
            chosen.append(table)
    return chosen


def make_report(*sweeps: str, out: Path, last_k: int = 1, figures: bool = True, models: Path | None = None,
                log: Callable[[str], None] = lambda _: None) -> Report:
    """The tables and figures of `sweeps` in `out`; `log` hears what is being read and drawn, one line each.
    `models`: where the trained dynamics models are, if not in each sweep's `artifacts/` (the directory
    `romi export --models` filled, for a report rebuilt from exported trials)."""
    check_sweep_paths(sweeps)
    if models is not None and not models.is_dir():
        raise RomiError(f"--models {models} is not a directory",
                        "give the directory `romi export --models` wrote (it holds dynamics/ and rollout_policy/)")
    check_writable_dir(out, "--out")
    log(f"reading the results of {', '.join(sweeps)} ...")
    results = load_results(*sweeps)
    if results.empty:
        raise RomiError(f"no trials found under {', '.join(sweeps)}", "point at a sweep directory of `romi sweep`")
    log(f"  {results['trial'].nunique()} trials, {len(results)} evaluations")
    evaluations = results.dropna(subset=["score"]).groupby(["sweep", "trial"]).size()
    if last_k > 1 and len(evaluations) and last_k > int(evaluations.max()):
        raise RomiError(f"--last-k {last_k} asks for more evaluations than any trial has (at most "
                        f"{int(evaluations.max())})", f"give --last-k {int(evaluations.max())} or less")
    out.mkdir(parents=True, exist_ok=True)
    report = Report(results, {})
    short = evaluations[evaluations < last_k]
    if last_k > 1 and len(short):
        report.skipped.append(f"the full last-{last_k} mean for {len(short)} trial(s) with fewer evaluations "
                              f"({', '.join(f'{t}: {n}' for (_, t), n in short.items())}): theirs averages all "
                              "they have")
    for table in relevant_tables(results):
        log(f"table {table}: ours beside the paper's (md, html, tex{', figure' if figures else ''})")
        built = paper_table(results, table, last_k=last_k)
        report.tables[table] = built
        for suffix, text in (("md", built.to_markdown()), ("html", built.to_html()), ("tex", built.to_latex())):
            path = out / f"table{table}.{suffix}"
            atomic_write_text(path, text + "\n")
            report.files.append(path)
        if figures:
            report.files += plots.ours_vs_paper(built, out / f"table{table}_vs_paper")
    summary = summarize_trials(results, last_k=last_k)
    report.claims = check_claims(summary, report.tables)
    if report.tables:
        log(f"the paper's claims: {len(report.claims)} orderings checked")
        atomic_write_text(out / "claims.md", claims_markdown(report.claims) + "\n")
        report.files.append(out / "claims.md")
    report.missing = summary[summary["status"] != "finished"]
    atomic_write_text(out / "trials.csv", summary.to_csv(index=False))
    report.files.append(out / "trials.csv")
    if figures:
        log("drawing the learning curves")
        report.files += plots.learning_curves(results, out / "learning_curves")
        log("drawing the critics' Q against their value bound")
        report.files += plots.q_curves(results, out / "q_curves")
        log("drawing the trajectory discrepancy by method")
        report.files += plots.discrepancy_by_method(results, out / "discrepancy")
        from romi.data.minari_io import resolve_dataset_id
        from romi.tasks import get_task

        for sweep in sweeps:
            sweep_dir = Path(sweep.removeprefix("file://")).expanduser()
            artifacts = sweep_dir / "artifacts" if models is None else models
            if is_remote(sweep) or not any((artifacts / "dynamics").glob("*/info.json")):
                continue  # the figures need the models (and the trials' files) on this machine
            # This path's own trials (read again when there are several paths: exported run directories
            # all belong to the "train" sweep), so a second sweep draws its own figures into its own files
            # instead of redrawing (and overwriting) the first one's.
            of_sweep = results if len(sweeps) == 1 else load_results(sweep)
            maze = sorted(t for t in of_sweep["task"].unique() if t.startswith("maze2d"))
            if not maze:
                continue
            task = maze[0]
            of_task = of_sweep[of_sweep["task"] == task]
            # The data the trials trained on (a recipe other than the default names its own dataset).
            ids = of_task["dataset_id"].dropna()
            dataset_id = str(ids.mode().iloc[0]) if len(ids) else None
            seeds = sorted(set(of_task["seed"]))
            seed = seeds[0]  # the first seed the sweep ran
            # Figure 3 for every seed with a finished trial (the first seed's keeps the plain file name)
            finished = sorted(set(of_task[of_task["status"] == "finished"]["seed"]) | {seed})
            suffix = f"{task}_{sweep_dir.name}" if len(sweeps) > 1 else task
            # Results pulled from a cluster often come without the dataset (or with part of the
            # artifacts): the tables are still the report; these figures are skipped, with a warning.
            log(f"drawing figure 3 (imagined rollouts, trained policies) for {task}, seed "
                f"{', '.join(map(str, finished))}, and every seed's model accuracy by horizon")
            try:
                for each in finished:
                    name = f"figure3_{suffix}" if each == seed else f"figure3_{suffix}_seed{each}"
                    report.files += plots.figure3(sweep_dir, task, out / name, seed=each, artifacts=artifacts,
                                                  dataset_id=dataset_id)
                report.files += write_where_policies_go(sweep_dir, task, finished, out / f"policy_ends_{suffix}")
                report.files += plots.model_accuracy_by_horizon(
                    artifacts, dataset_id or resolve_dataset_id(get_task(task)), seeds, out / f"model_accuracy_{suffix}"
                )
                log(f"measuring what the model buffers hold for {task}, every seed's models")
                report.files += write_buffer_content(artifacts, task, seeds, out / f"imagined_{suffix}",
                                                     dataset_id=dataset_id)
            except (DatasetMissingError, FileNotFoundError) as err:
                report.skipped.append(f"figure 3 and model accuracy for {task} ({sweep}): {err}")
    return report
