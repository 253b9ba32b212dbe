"""The paper's claims, checked on our trials.

The paper argues by orderings: on a task, ROMI-BCQ scores above BCQ and above FOMI-BCQ (Tables 1-4), and
ROMI's policies stay about as close to the data as BCQ's while FOMI's stray further (Figure 3j, the
average trajectory discrepancy of eq. 5, on mazes). `check_claims` takes every ordering the paper's
numbers state for a pair of methods we ran on a task, and says whether our seeds show it:

- ours: mean ± std over seeds (population std, as the tables) of the score the tables use (headline
  refs; final score, or the mean of the last k evaluations), or of the discrepancy at the final evaluation;
- seed pairs: in how many of the n_a x n_b (seed of A, seed of B) pairs A is above B. It is the
  Mann-Whitney count, all the evidence a few seeds give: with 3 seeds against 3, all 9 pairs in one
  order happens by chance once in 20 when the two methods are alike;
- verdict: `holds` when every pair is in the paper's order, `leans` when the means are but some pair is
  not, `reversed` when the means are in the other order (`no spread` when they are equal); marked
  `(incomplete)` while a method lacks seeds or steps.

Only runs with the paper's settings count (a `BCQ (rw)` column is not the paper's BCQ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from romi.analysis.tables import OUR_METHODS, PAPER_COLUMNS, PaperTable, paper_numbers

MAZES = ("maze2d", "antmaze")
"""Tasks whose discrepancy the paper reports (Figure 3j for maze2d-umaze, Appendix G for the others)."""
CLAIM_COLUMNS = ["source", "task", "claim", "paper", "ours", "seed pairs", "verdict"]
CAPTION = (
    "The paper's orderings checked on our trials. ours: mean ± std over seeds (the tables' score, or the "
    "average trajectory discrepancy of eq. 5 at the final evaluation); seed pairs: of all (seed of A, seed "
    "of B) pairs, how many are in the paper's order (3 seeds against 3: 9 of 9 happens by chance once in "
    "20 when the methods are alike). holds: every pair in the paper's order; leans: the means are, not "
    "every pair; reversed: the means are in the other order; fails (ROMI-BCQ as close as BCQ): ROMI-BCQ's "
    "discrepancy is above BCQ's and nearer FOMI-BCQ's. (incomplete): a method still lacks seeds or steps. not "
    "counted: a side's critic diverged (its mean Q left the value bound r_max / (1 - gamma)), so the ordering "
    "is shown but is no evidence for or against the paper."
)


@dataclass(frozen=True)
class Ordering:
    """`above` is greater than `below` in the paper, and what our seeds say of it."""

    above: np.ndarray
    below: np.ndarray

    @property
    def pairs_in_order(self) -> int:
        return int((self.above[:, None] > self.below[None, :]).sum())

    @property
    def pairs(self) -> int:
        return self.above.size * self.below.size

    def verdict(self) -> str:
        if not self.pairs:
            return "not run"
        if self.pairs_in_order == self.pairs:
            return "holds"
        gap = self.above.mean() - self.below.mean()
        return "leans" if gap > 0 else "reversed" if gap < 0 else "no spread"


def _stat(values: np.ndarray, digits: int) -> str:
    if values.size == 0:
        return "—"
    text = f"{values.mean():.{digits}f}"
    return text + (f" ± {values.std():.{digits}f}" if values.size > 1 else "") + f" (n={values.size})"


def _paper_value(table: int, task: str, method: str) -> float | None:
    """The paper's number for our `method` in `table`: its own column, or the MF/MB column when that
    baseline is `method` (Table 2's MF is mostly CQL)."""
    paper = paper_numbers()
    rows = paper[(paper["table"] == table) & (paper["task"] == task)]
    own = rows[rows["method"] == method]
    if method in PAPER_COLUMNS[table] and len(own):
        return float(own["mean"].iloc[0])
    baseline = rows[rows["method"].isin(["MF", "MB"]) & (rows["source"] == method)]
    return float(baseline["mean"].iloc[0]) if len(baseline) else None


def check_claims(summary: pd.DataFrame, tables: dict[int, PaperTable]) -> pd.DataFrame:
    """One row per ordering the paper states and we ran both sides of: see the module docstring.
    `summary`: `summarize_trials`'s, with the same `last_k` as `tables`."""
    if summary.empty:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    paper_settings = summary[summary["method_label"] == summary["method"]]

    def seeds(task: str, method: str, column: str) -> np.ndarray:
        rows = paper_settings[(paper_settings["task"] == task) & (paper_settings["method"] == method)]
        return rows[column].dropna().to_numpy(dtype=float)

    def diverged(task: str, method: str) -> list[str]:
        """`BCQ diverged in 3 of 3 seeds`, when any of the method's trials left its value bound."""
        rows = paper_settings[(paper_settings["task"] == task) & (paper_settings["method"] == method)]
        if "diverged_at_step" not in rows or not rows["diverged_at_step"].notna().any():
            return []
        return [f"{method} diverged in {int(rows['diverged_at_step'].notna().sum())} of {len(rows)} seeds"]

    def complete(table: PaperTable, task: str, *methods: str) -> bool:
        # (a method that ran only off the paper's settings, e.g. as `BCQ (rw)`, has no column of its own)
        return all(("ours", m, "complete") in table.numbers and bool(table.numbers.loc[task, ("ours", m, "complete")])
                   for m in methods)

    rows: list[dict[str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    for number, table in sorted(tables.items()):
        methods = OUR_METHODS[number]
        for task in table.numbers.index:
            refs = table.numbers.loc[task, ("ours", "normalised with", "refs")] or "no score yet"
            for i, a in enumerate(methods):
                for b in methods[i + 1:]:
                    pa, pb = _paper_value(number, task, a), _paper_value(number, task, b)
                    if pa is None or pb is None or pa == pb or (task, *sorted((a, b))) in seen:
                        continue
                    seen.add((task, *sorted((a, b))))
                    (above, p_above), (below, p_below) = sorted(((a, pa), (b, pb)), key=lambda m: -m[1])
                    order = Ordering(seeds(task, above, "headline_score"), seeds(task, below, "headline_score"))
                    rows.append(_row(f"Table {number}", task, f"{above} scores above {below} ({refs})",
                                     f"{p_above:.1f} vs {p_below:.1f}", order, 1,
                                     complete(table, task, above, below),
                                     diverged=diverged(task, above) + diverged(task, below)))
            if number == 3 and task.startswith(MAZES):
                rows += _discrepancy_rows(task, seeds, complete(table, task, *methods), diverged)
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _row(source: str, task: str, claim: str, paper: str, order: Ordering, digits: int, complete: bool,
         verdict: str | None = None, diverged: list[str] | None = None) -> dict[str, str]:
    """`verdict`: given when the claim is not an ordering of `order` (then no seed pairs are counted).
    `diverged`: which side's critics left their value bound; such a comparison is reported, never counted
    as holding (a diverged learner is not the method the paper ran)."""
    pairs = f"{order.pairs_in_order} of {order.pairs}" if order.pairs and verdict is None else "—"
    verdict = verdict or order.verdict()
    if diverged and verdict != "not run":
        verdict = f"not counted: {', '.join(diverged)} (the seeds' order: {verdict})"
    return {"source": source, "task": task, "claim": claim, "paper": paper,
            "ours": f"{_stat(order.above, digits)} vs {_stat(order.below, digits)}", "seed pairs": pairs,
            "verdict": verdict if complete or verdict == "not run" else f"{verdict} (incomplete)"}


def _discrepancy_rows(task: str, seeds, complete: bool, diverged) -> list[dict[str, str]]:
    """Figure 3j: FOMI-BCQ strays further from the data than ROMI-BCQ and BCQ, and ROMI-BCQ is about as
    close as BCQ (read here as: ROMI-BCQ's mean discrepancy is at most BCQ's, or nearer BCQ's than
    FOMI-BCQ's; else the claim `fails`)."""
    romi, fomi, bcq = (seeds(task, m, "discrepancy") for m in ("ROMI-BCQ", "FOMI-BCQ", "BCQ"))
    source = "Figure 3j" if task == "maze2d-umaze-sparse" else "Appendix G"
    rows = [_row(source, task, f"FOMI-BCQ strays further from the data than {other}", "qualitative",
                 Ordering(fomi, values), 3, complete, diverged=diverged(task, "FOMI-BCQ") + diverged(task, other))
            for other, values in (("ROMI-BCQ", romi), ("BCQ", bcq))]
    close = Ordering(romi, bcq)
    if romi.size and fomi.size and bcq.size:
        # ROMI-BCQ sides with whichever of the two its mean discrepancy is nearer to. (Nearer BCQ than
        # FOMI-BCQ is to BCQ would not do: ROMI 0.190, FOMI 0.203, BCQ 0.057 would pass, three times BCQ's.)
        to_bcq, to_fomi = abs(romi.mean() - bcq.mean()), abs(romi.mean() - fomi.mean())
        verdict = "holds" if romi.mean() <= bcq.mean() or to_bcq < to_fomi else "fails"
        # (no "|" here: the rows are markdown table cells)
        claim = (f"ROMI-BCQ is about as close to the data as BCQ (its discrepancy is {to_bcq:.3f} from BCQ's, "
                 f"{to_fomi:.3f} from FOMI-BCQ's)")
    else:
        verdict, claim = "not run", "ROMI-BCQ is about as close to the data as BCQ"
    rows.append(_row(source, task, claim, "qualitative", close, 3, complete, verdict,
                     diverged=[d for m in ("ROMI-BCQ", "FOMI-BCQ", "BCQ") for d in diverged(task, m)]))
    return rows


def claims_markdown(claims: pd.DataFrame) -> str:
    if claims.empty:
        return f"{CAPTION}\n\nNo claim of the paper compares two methods these trials ran."
    return f"{CAPTION}\n\n{claims.to_markdown(index=False)}"
