"""The files of a run, and their names: the one contract between writers and readers.

Writers are `romi train` (a run directory), the Tune trainable (a checkpoint per evaluation, inside
Tune's trial directory) and `romi export` (a run directory per finished trial); readers are
`romi.analysis` (`load_results`, `romi report`, Figure 3) and the resume paths. Both sides import the
names from here, so a file cannot be renamed on one side only.

    run directory                      Tune trial directory
      config.json   resolved config      params.json, result.json   (Tune's own)
      evaluations.jsonl                  checkpoint_<n>/evaluations.jsonl
      run.pt        the whole run state  checkpoint_<n>/run.pt
      summary.json  written last: done
      policy_episodes.npz  (exported maze2d trials) the trained policy's Figure 3 episodes

`evaluations.jsonl` has one JSON object per evaluation, every evaluation so far, in the same format
everywhere (`Run.history`): the trial's identity, `romi.pipeline.EvalRecord.flat()` and `done_fraction`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

CONFIG_FILE = "config.json"
EVALUATIONS_FILE = "evaluations.jsonl"
STATE_FILE = "run.pt"
SUMMARY_FILE = "summary.json"
POLICY_EPISODES_FILE = "policy_episodes.npz"
"""`romi export` keeps a maze2d trial's trained-policy episodes here (`romi.analysis.policy_episodes`), so
Figure 3 can be drawn after the checkpoint is gone."""
MANIFEST_FILE = "romi_sweep.json"
"""Every trial a sweep asks for, written by `romi sweep` before the first one starts: a report on an
interrupted sweep lists the trials that never started, which Tune's own files do not."""

TrialStatus = Literal["finished", "running", "stopped", "failed", "not started"]
"""Where a trial stands, in the same words in `romi sweep`'s table and `romi report`: `running` has
evaluations and its sweep's driver is alive on this machine (`romi.locks`); `stopped` has evaluations but
is not done and no live driver holds its sweep (interrupted, or run elsewhere)."""
STATUSES: tuple[TrialStatus, ...] = get_args(TrialStatus)


def trial_name(identity: Mapping[str, Any]) -> str:
    """A trial's directory name (Tune's trial name too): `<task>_<method>_seed<seed>`."""
    return f"{identity['task']}_{identity['method']}_seed{identity['seed']}"


def evaluation_lines(records: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(dict(record)) + "\n" for record in records)


def read_evaluation_lines(text: str | None) -> list[dict[str, Any]]:
    """The records of an `evaluations.jsonl` (or Tune's `result.json`); a last line cut by a crash mid-write
    ends the list instead of failing it."""
    records = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def evaluation_lines_cut(text: str | None) -> bool:
    """Whether an `evaluations.jsonl` ends in a line that does not parse (cut by a crash or a bad copy):
    its run cannot be called finished, whatever its summary says."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return len(read_evaluation_lines(text)) < len(lines)
