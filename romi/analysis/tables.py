"""The paper's Tables 1-4 with our numbers beside the paper's.

Rows are the table's tasks, columns our methods (mean ± std over seeds of each trial's final headline
score, or of the mean of its last k evaluations: local refs for home-made data, D4RL refs for official
data, each row says which), the best of ours per row in bold, the D4RL-ref scores beside local ones,
a Delta column where the paper has one (Table 3: ROMI-BCQ minus BCQ), then the paper's own columns.
Each of our cells shows n, the seeds in it, and is marked † when it is incomplete: fewer seeds than
the sweep asks for, or a trial that stopped before the profile's last step. An incomplete row has no
bold: it cannot yet say which method is best.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from romi.analysis.results import summarize_trials
from romi.divergence import MARK as DIVERGED

OUR_METHODS = {
    1: ["ROMI-BCQ", "BCQ"],
    2: ["ROMI-CQL", "CQL"],
    3: ["ROMI-BCQ", "FOMI-BCQ", "BCQ"],
    4: ["ROMI-BCQ", "ROMI-RBC-BCQ", "BCQ"],
}
PAPER_COLUMNS = {
    1: ["BC", "ROMI-BCQ", "MF", "MB"],
    2: ["BC", "ROMI-CQL", "MF", "MB"],
    3: ["ROMI-BCQ", "FOMI-BCQ", "BCQ"],
    4: ["ROMI-BCQ", "ROMI-RBC-BCQ", "BCQ"],
}
DELTA = {3: ("ROMI-BCQ", "BCQ")}
DELTA_COLUMN = "Delta (D4RL refs)"
"""Our Delta is always in D4RL refs, the paper's Delta's."""


@cache
def paper_numbers() -> pd.DataFrame:
    """The paper's Tables 1-4: columns table, task, method, mean, std, source (MF/MB's algorithm)."""
    with resources.files("romi.analysis").joinpath("paper_tables.csv").open() as handle:
        return pd.read_csv(handle)


INCOMPLETE = "†"
FOOTNOTE = (f"{INCOMPLETE} incomplete: fewer seeds than the sweep asks for, or a trial stopped before the "
            "profile's last step (n = seeds with a score); incomplete rows have no best in bold")


def _cell(mean: float, std: float, bold: bool, style: str, n: float | None = None, incomplete: bool = False,
          show_n: bool = True, diverged: bool = False) -> str:
    if np.isnan(mean):
        return "—" + (INCOMPLETE if incomplete else "")
    if diverged:  # a diverged learner's score is never the row's best
        return _cell(mean, std, False, style, n, incomplete, show_n) + DIVERGED
    # One seed has no spread: "± 0.0" would read as a perfectly repeatable result.
    text = f"{mean:.1f} ± {std:.1f}" if not np.isnan(std) and (n is None or n > 1) else f"{mean:.1f}"
    if n is not None and show_n:
        text += f" (n={int(n)})"
    if incomplete:
        return text + INCOMPLETE
    if not bold:
        return text
    return {"markdown": f"**{text}**", "latex": rf"\textbf{{{text}}}", "html": f"<b>{text}</b>"}.get(style, text)


@dataclass(frozen=True)
class PaperTable:
    table: int
    numbers: pd.DataFrame
    """Index task; columns (source, column, stat). source 'ours' (headline scores, see
    `romi.analysis.results.HEADLINE`), 'ours_d4rl' (the same returns with D4RL's refs) or 'paper';
    column a method label (`BCQ`, `BCQ (rw)`) or the paper's column; stat mean/std/n. Column
    ('ours', 'normalised with', 'refs') holds each row's normalisation."""
    missing: pd.DataFrame
    """Expected trials (task, method, seed) with no evaluation yet, or failed."""
    labels: tuple[str, ...] = ()
    """Our columns: each method of the table under the labels its runs carry."""
    last_k: int = 1
    """Each trial's score is its final evaluation's (1) or the mean of its last `last_k` evaluations."""
    diverged: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    """The table's trials whose critic left the value bound (task, method_label, seed, diverged_at_step,
    q_peak, value_bound_high, bound_from): their cells carry `DIVERGED` and the footnote names them."""

    @property
    def any_local(self) -> bool:
        key = ("ours", "normalised with", "refs")
        return key in self.numbers and bool((self.numbers[key] == "local refs").any())

    @property
    def caption(self) -> str:
        """What the numbers are, in one paragraph (printed above every rendering of the table)."""
        which = "final score" if self.last_k == 1 else f"mean score over its last {self.last_k} evaluations"
        text = (f"Table {self.table}. Ours: mean ± population std (ddof 0) over seeds of each trial's {which} "
                "(normalised 100 * (R - random) / (expert - random)); 'normalised with' names the refs: ")
        if self.any_local:
            text += ("'local refs' = the home-made dataset's own random / expert returns on our D4RL-protocol "
                     "evaluation env (the headline for local data), with the same returns normalised by D4RL's "
                     "refs beside them in the '[D4RL refs]' columns; ")
        text += "'D4RL refs' = D4RL's published reference scores. Paper: the paper's numbers (D4RL refs, D4RL data)."
        if self.table in DELTA:
            a, b = DELTA[self.table]
            text += f" Delta: mean {a} minus mean {b}, in D4RL refs for ours as for the paper's."
        return text

    def display(self, style: str = "plain") -> pd.DataFrame:
        """The table as strings: bold best of ours per row in `style` (plain, markdown, latex, html)."""
        rows = {}
        for task, row in self.numbers.iterrows():
            means = {m: row[("ours", m, "mean")] for m in self.labels}
            incomplete = {m: not row[("ours", m, "complete")] for m in self.labels}
            diverged = {m: bool(row.get(("ours", m, "diverged"), 0)) for m in self.labels}
            finite = {m: v for m, v in means.items() if not np.isnan(v) and not diverged[m]}
            best = max(finite.values()) if finite and not any(incomplete.values()) else np.nan
            out = {"normalised with": row[("ours", "normalised with", "refs")] or "—"}
            for m in self.labels:
                out[m] = _cell(means[m], row[("ours", m, "std")], bool(finite) and means[m] == best and len(finite) > 1,
                               style, n=row[("ours", m, "n")], incomplete=incomplete[m], diverged=diverged[m])
            if self.any_local:
                for m in self.labels:
                    out[f"{m} [D4RL refs]"] = _cell(row[("ours_d4rl", m, "mean")], row[("ours_d4rl", m, "std")],
                                                    False, style, n=row[("ours_d4rl", m, "n")],
                                                    incomplete=incomplete[m], show_n=False, diverged=diverged[m])
            if self.table in DELTA:
                # In D4RL refs, as the paper's Delta: local refs rescale a difference by the refs' ratio.
                delta = row[("ours_d4rl", "Delta", "mean")]
                partial = INCOMPLETE if any(incomplete.get(m, True) for m in DELTA[self.table]) else ""
                out[DELTA_COLUMN] = "—" if np.isnan(delta) else f"{delta:.1f}{partial}"
            for column in PAPER_COLUMNS[self.table]:
                out[f"paper {column}"] = _cell(row[("paper", column, "mean")], row[("paper", column, "std")], False,
                                               style)
            if self.table in DELTA:
                out["paper Delta"] = f"{row[('paper', 'Delta', 'mean')]:.1f}"
            rows[task] = out
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "task"
        return frame

    @property
    def incomplete(self) -> bool:
        """Whether any of our cells lacks seeds or steps (then the table carries `FOOTNOTE`)."""
        return not all(self.numbers[("ours", m, "complete")].all() for m in self.labels)

    @property
    def footnotes(self) -> list[str]:
        notes = [FOOTNOTE] if self.incomplete else []
        if not self.diverged.empty:
            notes.append(divergence_footnote(self.diverged))
        return notes

    def to_markdown(self) -> str:
        text = f"{self.caption}\n\n{self.display('markdown').to_markdown()}"
        return "\n\n".join([text, *self.footnotes])

    def to_latex(self) -> str:
        notes = "".join(f"\n% {note}" for note in self.footnotes)
        return f"% {self.caption}\n{self.display('latex').style.to_latex(hrules=True)}{notes}"

    def to_html(self) -> str:
        notes = "".join(f"\n<p>{note}</p>" for note in self.footnotes)
        return f"<p>{self.caption}</p>\n{self.display('html').to_html(escape=False)}{notes}"


def divergence_footnote(diverged: pd.DataFrame) -> str:
    """`‡ diverged critic (mean Q outside [0, 100] = the rewards' range / (1 - gamma)): BCQ seeds 0, 1, 2
    (at 65k, 60k, 55k steps; peak Q 690, 2,397, 13,763)` -- one clause per task and method."""
    clauses = []
    for (task, label), rows in diverged.groupby(["task", "method_label"], sort=True):
        seeds = ", ".join(str(int(s)) for s in rows["seed"])
        steps = ", ".join(f"{int(s) // 1000}k" for s in rows["diverged_at_step"])
        peaks = ", ".join(f"{q:,.0f}" for q in rows["q_peak"])
        clauses.append(f"{task} {label} seed{'s' if len(rows) > 1 else ''} {seeds} (at {steps} steps; peak Q {peaks})")
    bounds = sorted(set(diverged["value_bound_high"].dropna()))
    bound = f"Q above {', '.join(f'{b:g}' for b in bounds)} = r_max / (1 - gamma)" if bounds else "Q outside its bound"
    task_only = " Bounds from the task's reward range (records predating the measured bound; a model buffer's " \
        "rewards may exceed it)." if (diverged["bound_from"] == "task").any() else ""
    return (f"{DIVERGED} diverged critic: the trial's mean Q on its batches left the value bound ({bound}), "
            f"so its scores are those of a diverged learner and never the row's best: {'; '.join(clauses)}."
            + task_only)


def _labels(summary: pd.DataFrame, methods: list[str]) -> tuple[str, ...]:
    """Our columns: per method, the labels its trials carry (`BCQ`, `BCQ (rw)`, ...); the plain name if none ran."""
    labels: list[str] = []
    for method in methods:
        ran = sorted(set(summary[summary["method"] == method]["method_label"])) if not summary.empty else []
        labels += ran or [method]
    return tuple(labels)


def paper_table(results: pd.DataFrame, table: int, *, last_k: int = 1, rows: str = "ran") -> PaperTable:
    """Our results in the layout of the paper's Table `table` (1-4), beside the paper's numbers.

    `last_k` = 1 uses each trial's final score; k > 1 the mean of its last k evaluations. `rows`:
    'ran' keeps the tasks we have results for (all of the table's tasks if none), 'all' every task.
    Runs whose settings differ from the paper's get their own column (`BCQ (rw)`), never the paper's.
    """
    if table not in OUR_METHODS:
        raise ValueError(f"the paper has Tables 1-4, not {table}")
    paper = paper_numbers()
    paper = paper[paper["table"] == table]
    tasks = list(dict.fromkeys(paper["task"]))
    summary = summarize_trials(results, last_k=last_k) if not results.empty else pd.DataFrame()
    if rows == "ran" and not summary.empty:
        ran = set(summary["task"])
        tasks = [t for t in tasks if t in ran] or tasks

    ours = OUR_METHODS[table]
    labels = _labels(summary, ours)
    columns, records = [], []
    # One row per (task, label) cell: mean, population std and count of its trials' scores.
    cells = pd.DataFrame()
    if not summary.empty:
        of_table = summary[summary["task"].isin(tasks) & summary["method_label"].isin(labels)]
        cells = of_table.groupby(["task", "method_label"]).agg(
            ours_mean=("headline_score", "mean"), ours_std=("headline_score", lambda x: x.std(ddof=0)),
            ours_n=("headline_score", "count"), ours_d4rl_mean=("last_k_score", "mean"),
            ours_d4rl_std=("last_k_score", lambda x: x.std(ddof=0)), ours_d4rl_n=("last_k_score", "count"),
            trials=("status", "size"), finished=("status", lambda x: int((x == "finished").sum())),
            diverged=("diverged_at_step", lambda x: int(x.notna().sum())))
    # Seeds a cell should have: the sweep manifest lists every trial (started or not); without one, the
    # most trials any cell of this table has.
    expected = int(cells["trials"].max()) if len(cells) else 0
    for task in tasks:
        record: dict[tuple[str, str, str], object] = {}
        of_task = summary[summary["task"] == task] if not summary.empty else summary
        norms = sorted(set(of_task["normalised_with"].dropna())) if not of_task.empty else []
        record[("ours", "normalised with", "refs")] = " + ".join(norms) if norms else None
        for label in labels:
            cell = cells.loc[(task, label)] if (task, label) in cells.index else None
            for source in ("ours", "ours_d4rl"):
                n = float(cell[f"{source}_n"]) if cell is not None else 0.0
                record[(source, label, "mean")] = float(cell[f"{source}_mean"]) if n else np.nan
                record[(source, label, "std")] = float(cell[f"{source}_std"]) if n else np.nan
                record[(source, label, "n")] = n
            complete = cell is not None and expected > 0 and cell["finished"] == expected == cell["trials"]
            record[("ours", label, "complete")] = float(complete)
            record[("ours", label, "diverged")] = float(cell["diverged"]) if cell is not None else 0.0
        if table in DELTA:
            a, b = DELTA[table]
            for source in ("ours", "ours_d4rl"):
                record[(source, "Delta", "mean")] = (
                    record[(source, a, "mean")] - record[(source, b, "mean")]  # type: ignore[operator]
                    if a in labels and b in labels else np.nan
                )
        for column in PAPER_COLUMNS[table]:
            hit = paper[(paper["task"] == task) & (paper["method"] == column)]
            record[("paper", column, "mean")] = float(hit["mean"].iloc[0]) if len(hit) else np.nan
            record[("paper", column, "std")] = float(hit["std"].iloc[0]) if len(hit) else np.nan
        if table in DELTA:
            a, b = DELTA[table]
            record[("paper", "Delta", "mean")] = record[("paper", a, "mean")] - record[("paper", b, "mean")]  # type: ignore[operator]
        records.append(record)
        columns = list(record)
    numbers = pd.DataFrame(records, index=pd.Index(tasks, name="task"), columns=pd.MultiIndex.from_tuples(columns))

    missing_columns = ["task", "method", "seed", "status", "evaluations"]
    missing_frame = pd.DataFrame(columns=missing_columns)
    if not summary.empty:
        unfinished = summary[summary["task"].isin(tasks) & summary["method"].isin(ours)
                             & (summary["status"] != "finished")]
        # in the table's order: its tasks, then its methods (a stable sort keeps the seeds in order)
        order = unfinished.assign(task=pd.Categorical(unfinished["task"], tasks),
                                  method=pd.Categorical(unfinished["method"], ours))
        missing_frame = (order.sort_values(["task", "method"], kind="stable")[missing_columns]
                         .astype({"task": str, "method": str}).reset_index(drop=True))
    diverged = pd.DataFrame()
    if not summary.empty:
        diverged = summary[summary["task"].isin(tasks) & summary["method_label"].isin(labels)
                           & summary["diverged_at_step"].notna()]
    return PaperTable(table, numbers, missing_frame, labels, last_k, diverged.reset_index(drop=True))
