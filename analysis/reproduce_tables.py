# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reproducing the ROMI tables
#
# This notebook loads a sweep made by `romi sweep` (by default the quick one,
# `runs/sweeps/quick`; set `ROMI_SWEEP` to point elsewhere) and puts our numbers beside the paper's.
# Every trial's evaluations come back as one tidy pandas DataFrame.

# %%
import os
from pathlib import Path

from IPython.display import Markdown, display

from romi.analysis import load_results, paper_table, summarize_trials
from romi.analysis.claims import check_claims, claims_markdown
from romi.analysis.plots import discrepancy_by_method, learning_curves, ours_vs_paper, q_curves
from romi.analysis.report import relevant_tables

sweep = os.environ.get("ROMI_SWEEP", "runs/sweeps/quick")
out = Path(os.environ.get("ROMI_REPORT_OUT", "analysis/out"))
results = load_results(sweep)
results.head()

# %% [markdown]
# ## Trials
# One row per trial: its status (finished / stopped / failed / not started), its method label (`BCQ (rw)`
# when a run differs from the paper's settings), the headline score and which refs normalise it
# (`normalised_with`: the home-made dataset's own refs for `local/...` data, D4RL's for official data;
# `final_score` always uses D4RL's, `final_score_local` the dataset's) and the trajectory discrepancy of
# its last evaluation (paper eq. 5: how far the policy strays from the data).

# %%
trials = summarize_trials(results)
trials

# %% [markdown]
# ## Did any critic diverge?
# No Q can leave [min(0, r_min), max(0, r_max)] / (1 - gamma) on the rewards a learner trains on (maze2d
# sparse: [0, 100]). A trial whose mean Q on its batches (`train/q_mean`) left that bound has
# `diverged_at_step` set: its scores are a diverged learner's, the tables mark it ‡ and the claims do not
# count it. `bound_from` says whether the run recorded its bound (`run`) or, for runs from before the bound
# was measured, the task's reward range stands in (`task`).

# %%
trials[["task", "method", "seed", "steps", "diverged_at_step", "q_peak", "value_bound_high", "bound_from"]]

# %%
q_curves(results, out / "q_curves")
display(Markdown(f"Q against steps, with the bound: `{out / 'q_curves.png'}`"))

# %% [markdown]
# ## The paper's tables, ours beside theirs
# Mean ± population std over seeds of each trial's final headline score; the best of ours in bold; for local data
# the same returns normalised with D4RL's refs beside them (`[D4RL refs]`); the paper's columns to the
# right (Table 3 adds the Delta of ROMI-BCQ over BCQ). Each table's caption says which refs it shows.

# %%
tables = {table: paper_table(results, table) for table in relevant_tables(results)}
for table, built in tables.items():
    display(Markdown(f"### Table {table}\n\n" + built.to_markdown()))
    ours_vs_paper(built, out / f"table{table}_vs_paper")

# %% [markdown]
# ## The paper's claims
# Every ordering the paper's numbers state for two methods we ran (ROMI-BCQ above BCQ, above FOMI-BCQ,
# ...; on mazes, FOMI straying further from the data than ROMI and BCQ), and whether our seeds show it:
# in how many (seed, seed) pairs, and a verdict (holds / leans / reversed; "ROMI-BCQ as close as BCQ" holds or fails).

# %%
claims = check_claims(trials, tables)
display(Markdown(claims_markdown(claims)))

# %% [markdown]
# ## One score or a steadier one
# A trial's final score is one evaluation of a policy that may swing from one evaluation to the next.
# Here each trial's mean of its last 10 evaluations (`headline_score`) beside its final ones (local and
# D4RL refs), and its swing (`headline_swing`: the std of those 10). A gap between two methods smaller
# than their swings is not a ranking. `romi report --last-k 10` builds the tables and claims from these
# means.

# %%
late = summarize_trials(results, last_k=10)
late[["task", "method", "seed", "steps", "normalised_with", "final_score_local", "final_score", "headline_score",
      "headline_swing"]]

# %% [markdown]
# ## Learning curves and conservatism
# Scores against gradient steps (bands: ± std over seeds), and how far each method's evaluation
# trajectories stay from the dataset. ROMI should be about as conservative as BCQ; FOMI strays.

# %%
learning_curves(results, out / "learning_curves")
discrepancy_by_method(results, out / "discrepancy")
display(Markdown(f"figures written to `{out}`"))
