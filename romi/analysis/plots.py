"""The report's figures (matplotlib, headless): learning curves, ours vs the paper, the paper's Figure 3
for a maze, trajectory discrepancy per method, and reverse vs forward model accuracy by horizon."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from romi.analysis.imagined import in_walls
from romi.analysis.policy_episodes import trained_policy_episodes
from romi.analysis.tables import PaperTable
from romi.config import DynamicsConfig
from romi.data.minari_io import load_transitions, resolve_dataset_id
from romi.envs import MAZE_SCALING, cell_to_xy, goal_xy, maze_map
from romi.imagination.build import TRAINING_RECIPE
from romi.imagination.rollout import generate_rollouts
from romi.io import atomic_write_text, atomic_write_with
from romi.models.dynamics import DynamicsModel
from romi.models.rollout_policy import UniformRolloutPolicy
from romi.models.termination import termination_fn
from romi.tasks import get_task

METHOD_COLOURS = {"ROMI-BCQ": "tab:red", "ROMI-CQL": "tab:red", "FOMI-BCQ": "tab:blue", "BCQ": "tab:gray",
                  "CQL": "tab:gray", "ROMI-RBC-BCQ": "tab:orange"}


def _save(fig: plt.Figure, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".svg"):
        target = path.with_suffix(suffix)
        # Atomic: an interrupted report leaves the previous figure (or none), never half a file. Reproducible:
        # no date stamp and fixed SVG ids, so a committed report redrawn from the same results has no diff.
        with plt.rc_context({"svg.hashsalt": "romi"}):
            atomic_write_with(target, lambda handle, fmt=suffix[1:]: fig.savefig(
                handle, format=fmt, dpi=120, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else {}))
        written.append(target)
    plt.close(fig)
    return written


@matplotlib.ticker.FuncFormatter
def _thousands(value: float, _position: int) -> str:
    """Tick labels for step counts: 100k, 1.5M (not 100000 or 1e6)."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    return f"{value / 1e3:g}k" if abs(value) >= 1e3 else f"{value:g}"


def _task_panels(count: int) -> tuple[plt.Figure, np.ndarray]:
    """A grid of `count` panels, at most 3 a row (the unused ones are switched off by `_save_panels`)."""
    cols = min(3, count)
    rows = int(np.ceil(count / cols))
    return plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)


def _save_panels(fig: plt.Figure, axes: np.ndarray, used: int, out: Path) -> list[Path]:
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    return _save(fig, out)


def learning_curves(results: pd.DataFrame, out: Path) -> list[Path]:
    """One panel per task: headline score (see `romi.analysis.results.HEADLINE`) against gradient steps,
    mean and a ±std band over seeds, one line per method label."""
    data = results.dropna(subset=["score_headline"])
    tasks = sorted(data["task"].unique())
    if not tasks:
        return []
    fig, axes = _task_panels(len(tasks))
    for ax, task in zip(axes.flat, tasks, strict=False):
        of_task = data[data["task"] == task]
        for method, group in of_task.groupby("method_label"):
            stats = group.groupby("step")["score_headline"].agg(["mean", "std"]).fillna(0.0)
            colour = METHOD_COLOURS.get(str(method).split(" (")[0])
            # Markers: a curve of one or two evaluations (an interrupted trial) is still visible.
            seeds = group["seed"].nunique()
            ax.plot(stats.index, stats["mean"], label=f"{method} ({seeds} seed{'s' if seeds != 1 else ''})",
                    color=colour, marker="o", markersize=4)
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2,
                            color=colour)
        ax.set_title(task)
        ax.set_xlabel("gradient steps")
        ax.xaxis.set_major_formatter(_thousands)
        ax.set_ylabel(f"normalised score ({' + '.join(sorted(set(of_task['normalised_with'])))})")
        ax.legend(fontsize=8)
    return _save_panels(fig, axes, len(tasks), out)


def q_curves(results: pd.DataFrame, out: Path) -> list[Path]:
    """One panel per task: the critics' mean Q on their batches (`train/q_mean`) against gradient steps, one
    thin line per seed and the seeds' mean per method label, on a log axis (a diverged critic grows by
    decades), with the value bound r_max / (1 - gamma) as a dashed line per distinct bound and a cross
    where a trial first left it (`romi.divergence`)."""
    from romi.analysis.results import divergence
    from romi.divergence import HIGH_KEY, Q_KEY, task_bound

    if Q_KEY not in results:
        return []
    data = results.dropna(subset=[Q_KEY, "step"])
    tasks = sorted(data["task"].unique())
    if not tasks:
        return []
    flags = divergence(data).reset_index()
    fig, axes = _task_panels(len(tasks))
    for ax, task in zip(axes.flat, tasks, strict=False):
        of_task = data[data["task"] == task]
        for method, group in of_task.groupby("method_label"):
            colour = METHOD_COLOURS.get(str(method).split(" (")[0])
            for _, seed_rows in group.groupby("seed"):
                ax.plot(seed_rows["step"], seed_rows[Q_KEY].clip(lower=1e-3), color=colour, alpha=0.35, lw=0.8)
            mean = group.groupby("step")[Q_KEY].mean()
            ax.plot(mean.index, mean.clip(lower=1e-3), color=colour, lw=2,
                    label=f"{method} ({group['seed'].nunique()} seeds)")
            hit = flags[(flags["task"] == task) & (flags["method"] == group["method"].iloc[0])
                        & flags["diverged_at_step"].notna()]
            for _, flag in hit.iterrows():
                q = group[(group["seed"] == flag["seed"]) & (group["step"] == flag["diverged_at_step"])][Q_KEY]
                ax.plot([flag["diverged_at_step"]], q.to_numpy()[:1], marker="x", color=colour, ms=8, mew=2)
        bounds = set(of_task[HIGH_KEY].dropna())
        fallback = task_bound(task, 0.99)
        if not bounds and fallback is not None:
            bounds = {fallback.high}
        for bound in sorted(bounds):
            ax.axhline(bound, color="black", ls="--", lw=1)
            ax.annotate(f"r_max / (1 - γ) = {bound:g}", (0.01, bound), xycoords=("axes fraction", "data"),
                        va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_title(task)
        ax.set_xlabel("gradient steps")
        ax.xaxis.set_major_formatter(_thousands)
        ax.set_ylabel("mean Q(s, a) on batches")
        ax.legend(fontsize=8)
    return _save_panels(fig, axes, len(tasks), out)


def ours_vs_paper(table: PaperTable, out: Path) -> list[Path]:
    """Grouped bars per task: each of our methods (headline scores) beside the paper's number for it."""
    methods = list(table.labels)
    tasks = list(table.numbers.index)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) * len(methods) / 2), 4))
    width = 0.8 / (2 * len(methods))
    x = np.arange(len(tasks))
    for i, method in enumerate(methods):
        colour = METHOD_COLOURS.get(method.split(" (")[0])
        ours = table.numbers[("ours", method, "mean")].to_numpy(dtype=float)
        ours_std = table.numbers[("ours", method, "std")].to_numpy(dtype=float)
        key = ("paper", method, "mean")
        paper = table.numbers[key].to_numpy(dtype=float) if key in table.numbers else np.full(len(tasks), np.nan)
        ax.bar(x + (2 * i) * width, np.nan_to_num(ours), width, yerr=np.nan_to_num(ours_std), color=colour,
               label=f"{method} (ours)")
        ax.bar(x + (2 * i + 1) * width, np.nan_to_num(paper), width, color=colour, alpha=0.35, hatch="//",
               label=f"{method} (paper)")
    ax.set_xticks(x + 0.4 - width / 2, tasks, rotation=20, ha="right")
    refs = "local refs (ours) / D4RL refs (paper)" if table.any_local else "D4RL refs"
    ax.set_ylabel(f"normalised score, {refs}")
    ax.set_title(f"Table {table.table}: ours vs the paper")
    ax.legend(fontsize=8, ncols=2)
    return _save(fig, out)


def discrepancy_by_method(results: pd.DataFrame, out: Path) -> list[Path]:
    """Average trajectory discrepancy (paper eq. 5) of each method's final evaluation, per task."""
    final = results.dropna(subset=["discrepancy"]).sort_values("step").groupby(["task", "method", "seed"]).tail(1)
    if final.empty:
        return []
    stats = final.groupby(["task", "method"])["discrepancy"].agg(["mean", "std"]).reset_index()
    tasks = sorted(stats["task"].unique())
    methods = sorted(stats["method"].unique())
    fig, ax = plt.subplots(figsize=(max(5, 2 * len(tasks)), 3.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        rows = stats[stats["method"] == method].set_index("task").reindex(tasks)
        ax.bar(np.arange(len(tasks)) + i * width, rows["mean"].fillna(0), width, yerr=rows["std"].fillna(0),
               label=method, color=METHOD_COLOURS.get(method))
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    ax.set_ylabel("average trajectory discrepancy")
    ax.legend(fontsize=8)
    return _save(fig, out)


# ------------------------------------------------------------------------------------------------
# Figures that need the trained models: read from a sweep's artifacts and trial checkpoints
# ------------------------------------------------------------------------------------------------


def load_dynamics(artifacts: Path, dataset_id: str, direction: str, seed: int):
    """The sweep's dynamics model of this data, direction and seed (found by its identity's fields, so
    models an earlier training recipe made -- a long run pinned to an older commit -- are found too;
    the current recipe's is preferred), or None."""

    matches = []
    for info_path in sorted((artifacts / "dynamics").glob("*/info.json")):
        identity = json.loads(info_path.read_text())["identity"]
        if (identity["dataset_id"], identity["direction"], identity["seed"]) == (dataset_id, direction, seed):
            matches.append((identity.get("recipe") == TRAINING_RECIPE, info_path, identity))
    if not matches:
        return None
    _, info_path, identity = max(matches, key=lambda match: match[0])
    model = DynamicsModel(identity["obs_dim"], identity["act_dim"], DynamicsConfig(**identity["config"]),
                          direction)  # type: ignore[arg-type]
    model.load_state_dict(torch.load(info_path.parent / "state.pt", weights_only=True))
    return model.eval()


def open_loop_errors(model: DynamicsModel, data: Any, starts: np.ndarray, horizon: int) -> np.ndarray:
    """Squared state error (mean over state dimensions), shape (horizon, segments), of `model` rolled
    open-loop over the dataset's own actions from each segment's dataset state, with the elites' mean
    prediction.

    Forward: from s_t, apply a_t..a_{t+k-1} and compare with s_{t+k}. Reverse: from s_{t+H}, apply the
    actions backwards and compare with s_{t+H-k}. Row k-1 is the error after k steps.
    """

    errors = []
    with torch.no_grad():
        if model.direction == "forward":
            state = torch.as_tensor(data.observations[starts])
            for k in range(horizon):
                mean, _ = model.predict(state, torch.as_tensor(data.actions[starts + k]))
                state = state + mean[model.elites].mean(0)[:, 1:]
                errors.append(((state.numpy() - data.next_observations[starts + k]) ** 2).mean(axis=1))
        else:
            state = torch.as_tensor(data.next_observations[starts + horizon - 1])
            for k in range(horizon):
                index = starts + horizon - 1 - k
                mean, _ = model.predict(state, torch.as_tensor(data.actions[index]))
                state = state + mean[model.elites].mean(0)[:, 1:]
                errors.append(((state.numpy() - data.observations[index]) ** 2).mean(axis=1))
    return np.stack(errors)


def model_accuracy_by_horizon(artifacts: Path, dataset_id: str, seeds: list[int], out: Path,
                              horizon: int = 5, segments: int = 500) -> list[Path]:
    """Open-loop error of every seed's reverse and forward models over `horizon` steps on real
    trajectories (`open_loop_errors`), all on the same segments of the dataset.

    Drawn: the median squared error per segment with its 10-90 % band, not the mean, which a handful of
    segments dominate (in maze2d, a bounce off a wall the model does not foresee: one of 500 segments
    measured 300x the median, 20x the mean). One line per (direction, seed); the numbers are written
    beside the figure (`<out>.csv`: seed, direction, steps, median, p10, p90, mean).
    """

    data = load_transitions(dataset_id)
    rng = np.random.default_rng(0)
    same = data.episode_ids[horizon:] == data.episode_ids[:-horizon]
    starts = rng.choice(np.flatnonzero(same), size=min(segments, int(same.sum())), replace=False)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    rows = []
    markers = "osD^v<>"
    for direction, colour in (("reverse", "tab:red"), ("forward", "tab:blue")):
        for number, seed in enumerate(seeds):
            model = load_dynamics(artifacts, dataset_id, direction, seed)
            if model is None:
                continue
            errors = open_loop_errors(model, data, starts, horizon)
            low, median, high = np.quantile(errors, [0.1, 0.5, 0.9], axis=1)
            steps = np.arange(1, horizon + 1)
            rows += [{"seed": seed, "direction": direction, "steps": int(k), "median": float(m),
                      "p10": float(lo), "p90": float(hi), "mean": float(mean)}
                     for k, m, lo, hi, mean in zip(steps, median, low, high, errors.mean(axis=1), strict=True)]
            label = f"{direction}, seed {seed}" if len(seeds) > 1 else f"{direction} model"
            ax.plot(steps, median, marker=markers[number % len(markers)], color=colour, label=label)
            ax.fill_between(steps, low, high, color=colour, alpha=0.15 / len(seeds))
    if not rows:
        plt.close(fig)
        return []
    ax.set_xlabel("steps from the dataset state")
    ax.set_xticks(range(1, horizon + 1))  # whole steps only
    ax.set_ylabel(f"squared state error ({len(starts)} segments)")
    ax.set_yscale("log")
    ax.set_title(f"model accuracy (median, 10-90 %), {dataset_id}", fontsize=9)
    ax.legend(fontsize=7)
    table = out.with_suffix(".csv")
    atomic_write_text(table, pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))
    return [*_save(fig, out), table]


def _maze_axes(ax: plt.Axes, task: Any, title: str) -> None:
    """Walls of the task's maze in the simulator's own frame (`cell_to_xy`), the one the dataset and
    evaluation states are in."""

    grid = maze_map(task.env_id)
    size = MAZE_SCALING[task.domain]
    for r, row in enumerate(grid):
        for c, cell in enumerate(row):
            if cell == 1:
                x, y = cell_to_xy(task, (r, c))
                ax.add_patch(plt.Rectangle((x - size / 2, y - size / 2), size, size, color="0.25"))
    ax.set_xlim(-len(grid[0]) / 2 * size, len(grid[0]) / 2 * size)
    ax.set_ylim(-len(grid) / 2 * size, len(grid) / 2 * size)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_imagination(ax: plt.Axes, task: Any, model: Any, policy: Any, anchors: np.ndarray, direction: str,
                      generator: torch.Generator, horizon: int = 5) -> float:
    """Imagined rollouts from `anchors` (dataset states) as line segments; returns the share of imagined
    states that fall inside a wall cell (a model that leaves the data can put the ball in a wall)."""

    colour = "tab:red" if direction == "reverse" else "tab:blue"
    with torch.no_grad():
        rollouts = generate_rollouts(model, policy, torch.as_tensor(anchors), horizon, termination_fn(task.domain),
                                     generator)
    for s, s_next in zip(rollouts.observations.numpy(), rollouts.next_observations.numpy(), strict=True):
        ax.plot([s[0], s_next[0]], [s[1], s_next[1]], color=colour, linewidth=0.8)
    ax.scatter(anchors[:, 0], anchors[:, 1], s=12, color="black", zorder=3,
               label="dataset states (rollouts end here)" if direction == "reverse" else "dataset start states")
    ax.legend(fontsize=7, loc="lower right")
    imagined = (rollouts.observations if direction == "reverse" else rollouts.next_observations).numpy()
    return float(in_walls(task, imagined[:, :2]).mean()) if len(imagined) else 0.0


def imagination(task_name: str, data: Any, models: dict[str, tuple[Any, Any]], out: Path, *, seed: int = 0,
                starts: int = 40, horizon: int = 5) -> list[Path]:
    """The paper's Figure 3 (g)/(h): imagined trajectories over the maze, reverse beside forward, from
    the same dataset states. Reverse ones end in the data; forward ones start there and can run into
    walls. `models` maps direction -> (dynamics model, rollout policy)."""

    task = get_task(task_name)
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 5), squeeze=False)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(data), size=min(5000, len(data)), replace=False)
    anchors = data.anchor_states[rng.choice(len(data), starts, replace=False)]
    for ax, (direction, (model, policy)) in zip(axes.flat, models.items(), strict=True):
        _maze_axes(ax, task, f"{direction} imagination")
        ax.scatter(data.observations[sample, 0], data.observations[sample, 1], s=1, color="tab:green", alpha=0.15,
                   rasterized=True)
        in_walls = _draw_imagination(ax, task, model, policy, anchors, direction,
                                     torch.Generator().manual_seed(seed), horizon)
        ax.set_title(f"{direction} imagination: {100 * in_walls:.1f}% of imagined states in walls")
    fig.suptitle(f"{task.name}: {starts} dataset states, {horizon}-step imagined rollouts (green: the data)")
    return _save(fig, out)


def figure3(sweep_dir: Path, task_name: str, out: Path, seed: int = 0, starts: int = 40,
            artifacts: Path | None = None, dataset_id: str | None = None) -> list[Path]:
    """The paper's Figure 3 for a maze2d task: the dataset, reverse vs forward imagined rollouts, and
    evaluation trajectories of the trained ROMI-BCQ, FOMI-BCQ and BCQ policies over the maze walls.

    `sweep_dir` holds the trials (a sweep's, or `romi export`'s run directories); `artifacts` the trained
    dynamics models (default: the sweep's own `artifacts/`; for exported trials, `romi export --models`'s)."""

    task = get_task(task_name)
    if task.domain != "maze2d":
        raise ValueError("Figure 3 is drawn for maze2d tasks")
    artifacts = sweep_dir / "artifacts" if artifacts is None else artifacts
    dataset_id = dataset_id or resolve_dataset_id(task)  # the trials' own data, when the report knows it
    data = load_transitions(dataset_id)
    trials = {m: sweep_dir / f"{task.name}_{m}_seed{seed}" for m in ("ROMI-BCQ", "FOMI-BCQ", "BCQ")}
    panels = ["dataset", "reverse imagination", "forward imagination", *[f"{m} policy" for m in trials]]
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5))

    rng = np.random.default_rng(seed)
    sample = rng.choice(len(data), size=min(5000, len(data)), replace=False)
    for ax, title in zip(axes.flat, panels, strict=True):
        _maze_axes(ax, task, title)
        ax.scatter(data.observations[sample, 0], data.observations[sample, 1], s=1, color="tab:green", alpha=0.15,
                   rasterized=True)  # thousands of points: a bitmap layer keeps the SVG small

    policy = UniformRolloutPolicy([-1.0] * data.act_dim, [1.0] * data.act_dim)
    generator = torch.Generator().manual_seed(seed)
    anchors = data.anchor_states[rng.choice(len(data), starts, replace=False)]
    for ax, direction in ((axes.flat[1], "reverse"), (axes.flat[2], "forward")):
        model = load_dynamics(artifacts, dataset_id, direction, seed)
        if model is None:
            ax.text(0, 0, f"no {direction} model in this sweep", ha="center")
            continue
        walls = _draw_imagination(ax, task, model, policy, anchors, direction, generator)
        ax.set_title(f"{direction} imagination\n({100 * walls:.1f} % of imagined states in walls)")

    goal = goal_xy(task)
    for ax, (method, trial_dir) in zip(list(axes.flat)[3:], trials.items(), strict=True):
        ax.scatter([goal[0]], [goal[1]], marker="*", s=200, color="gold", edgecolor="black", zorder=4)
        episodes = trained_policy_episodes(trial_dir)
        if episodes is None:
            ax.text(0, 0, "no trained policy kept\n(no checkpoint, no policy_episodes.npz)", ha="center")
            continue
        for trajectory in episodes.trajectories:
            ax.plot(trajectory[:, 0], trajectory[:, 1], color=METHOD_COLOURS.get(method), linewidth=1)
        ax.set_title(f"{method} policy\n(step {episodes.step:,}, mean return {np.mean(episodes.returns):.0f})")
    # What is drawn, not what the paper found: whether forward imagination leaves the data is for the
    # panels to show (the paper's Fig. 3: it does; ROMI's policy stays at the goal, BCQ's oscillates).
    fig.suptitle(f"{task.name}, seed {seed}: {starts} imagined rollouts from dataset states (top) and the "
                 f"trained policies (bottom), as the paper's Fig. 3")
    return _save(fig, out)
