"""What a maze2d model buffer holds: the numbers behind Figure 3's imagined trajectories.

When ROMI does not beat FOMI (or BCQ), the first suspects are the imagined data. For each direction's
dynamics model and rollout policy, `buffer_content` rolls out from dataset anchors exactly as the model
buffer is filled (`generate_rollouts`, the buffer's horizon and termination) and measures, against the
maze itself:

- in walls: the share of invented states (s for reverse rollouts, s' for forward ones) inside a wall
  cell or off the map: states the real ball can never be in;
- off the data: the median distance from an invented state to the nearest dataset state (a 50k sample);
- at the goal (true): the share of imagined transitions whose s' is within the goal radius, where the
  real sparse reward is 1: how much goal-reaching experience the buffer adds;
- rewarded (model): the share to which the model gives reward >= 0.5; reward error: the mean absolute
  difference between the model's reward and the true reward of the maze at s' (sparse or dense).

A `dataset` row gives the same measures for the real transitions. Only maze2d has a cheap ground truth
(a ball on a known map), which is why this table is drawn there.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from romi.data.transitions import Transitions
from romi.envs import goal_xy, maze_map, maze_reward, xy_to_cell
from romi.imagination.rollout import generate_rollouts
from romi.io import atomic_write_text
from romi.models.rollout_policy import UniformRolloutPolicy
from romi.models.termination import termination_fn
from romi.tasks import TaskSpec

ANCHORS = 2000
"""Dataset states rolled out from (x the horizon: the transitions measured per direction)."""
COLUMNS = ["source", "transitions", "in walls %", "off the data (median)", "at the goal (true) %",
           "rewarded (model) %", "reward error"]


def in_walls(task: TaskSpec, xy: np.ndarray) -> np.ndarray:
    """Per position (N, 2): inside a wall cell of the task's maze, or off its map."""
    grid = np.asarray(maze_map(task.env_id))
    cells = np.array([xy_to_cell(task, p) for p in np.asarray(xy, dtype=np.float64)]).reshape(-1, 2)
    rows, cols = cells[:, 0], cells[:, 1]
    inside = (rows >= 0) & (rows < grid.shape[0]) & (cols >= 0) & (cols < grid.shape[1])
    walls = np.ones(len(cells), dtype=bool)
    walls[inside] = grid[rows[inside], cols[inside]] == 1
    return walls


def nearest_distance(points: np.ndarray, reference: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Euclidean distance from each of `points` to its nearest row of `reference`."""
    ref = torch.as_tensor(reference, dtype=torch.float32)
    out = [torch.cdist(torch.as_tensor(points[i:i + chunk], dtype=torch.float32), ref).min(dim=1).values
           for i in range(0, len(points), chunk)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def _measure(task: TaskSpec, source: str, invented: np.ndarray, next_obs: np.ndarray, rewards: np.ndarray | None,
             reference: np.ndarray) -> dict[str, Any]:
    true_reward = maze_reward(next_obs[:, :2], goal_xy(task), task.reward_type or "sparse")
    at_goal = maze_reward(next_obs[:, :2], goal_xy(task), "sparse") > 0
    row: dict[str, Any] = {
        "source": source, "transitions": len(next_obs),
        "in walls %": 100 * float(in_walls(task, invented[:, :2]).mean()) if len(invented) else np.nan,
        "off the data (median)": float(np.median(nearest_distance(invented, reference))) if len(invented) else np.nan,
        "at the goal (true) %": 100 * float(at_goal.mean()) if len(next_obs) else np.nan,
        "rewarded (model) %": np.nan, "reward error": np.nan,
    }
    if rewards is not None and len(rewards):
        row["rewarded (model) %"] = 100 * float((rewards >= 0.5).mean())
        row["reward error"] = float(np.abs(rewards - true_reward).mean())
    return row


def buffer_content(task: TaskSpec, data: Transitions, models: dict[str, tuple[Any, Any]], *, anchors: int = ANCHORS,
                   horizon: int = 5, seed: int = 0, reference_size: int = 50_000) -> pd.DataFrame:
    """One row for the dataset and one per direction of `models` (direction -> (dynamics model, rollout
    policy)): see the module docstring. Deterministic in `seed`."""
    if task.domain != "maze2d":
        raise ValueError(f"buffer content is measured on maze2d tasks, not {task.domain}")
    rng = np.random.default_rng(seed)
    reference = data.observations[rng.choice(len(data), size=min(reference_size, len(data)), replace=False)]
    sample = rng.choice(len(data), size=min(anchors * horizon, len(data)), replace=False)
    # The dataset's own transitions: nothing is invented, so "off the data" measures the 50k sample's
    # spacing (the floor an imagined state can reach) and "in walls" the simulator's contact slack.
    rows = [_measure(task, "dataset", data.next_observations[sample], data.next_observations[sample],
                     data.rewards[sample], reference)]
    starts = torch.as_tensor(data.anchor_states[rng.choice(len(data), size=anchors, replace=False)])
    for direction, (model, policy) in models.items():
        with torch.no_grad():
            rollouts = generate_rollouts(model, policy, starts, horizon, termination_fn(task.domain),
                                         torch.Generator().manual_seed(seed))
        invented = rollouts.observations if direction == "reverse" else rollouts.next_observations
        rows.append(_measure(task, f"{direction} imagination", invented.numpy(), rollouts.next_observations.numpy(),
                             rollouts.rewards.numpy(), reference))
    return pd.DataFrame(rows, columns=COLUMNS)


def buffer_content_markdown(task: TaskSpec, table: pd.DataFrame, *, anchors: int, horizon: int) -> str:
    seeds = ", ".join(str(seed) for seed in sorted(set(table["seed"])))
    caption = (f"What the model buffers hold, {task.name}, models of seed {seeds}: {anchors} dataset anchors, "
               f"{horizon}-step rollouts as the buffer makes them (romi.analysis.imagined). in walls: invented "
               "states inside a wall or off the map; off the data: median distance from an invented state to the "
               "nearest of 50k dataset states (full state); at the goal (true): transitions whose s' is within "
               "the goal radius (real sparse reward 1); rewarded (model): the model's reward >= 0.5; reward "
               f"error: mean |model reward - the maze's {task.reward_type} reward at s'|. The dataset row "
               "measures real transitions the same way.")
    return f"{caption}\n\n{table.to_markdown(index=False, floatfmt='.3g')}"


def write_buffer_content(artifacts: Path, task_name: str, seeds: Iterable[int], out: Path, *,
                         anchors: int = ANCHORS, dataset_id: str | None = None) -> list[Path]:
    """`out`.md and `out`.csv: `buffer_content` of each seed's models in `artifacts` (the directions there
    are; none at all: nothing written), with the paper's rollout policy for maze2d (uniform) and horizon.
    Rows: the dataset once, then each direction seed by seed."""
    from romi.analysis.plots import load_dynamics
    from romi.data.minari_io import load_transitions, resolve_dataset_id
    from romi.tasks import get_task

    task = get_task(task_name)
    dataset_id = dataset_id or resolve_dataset_id(task)  # the trials' own data, when the caller knows it
    data = load_transitions(dataset_id)
    policy = UniformRolloutPolicy([-1.0] * data.act_dim, [1.0] * data.act_dim)
    tables = []
    for seed in sorted(seeds):
        models = {d: (m, policy) for d in ("reverse", "forward")
                  if (m := load_dynamics(artifacts, dataset_id, d, seed)) is not None}
        if models:
            table = buffer_content(task, data, models, anchors=anchors, horizon=task.paper.horizon, seed=seed)
            tables.append(table.assign(seed=seed)[["seed", *COLUMNS]])
    if not tables:
        return []
    rows = pd.concat(tables, ignore_index=True)
    rows = rows[(rows["source"] != "dataset") | (rows["seed"] == rows["seed"].min())]  # the data once
    order = pd.Categorical(rows["source"], ["dataset", "reverse imagination", "forward imagination"])
    table = rows.assign(order=order).sort_values(["order", "seed"], kind="stable").drop(columns="order")
    markdown, csv = out.with_suffix(".md"), out.with_suffix(".csv")
    atomic_write_text(markdown, buffer_content_markdown(task, table, anchors=anchors, horizon=task.paper.horizon)
                      + "\n")
    atomic_write_text(csv, table.to_csv(index=False))
    return [markdown, csv]
