"""A trained policy's Figure 3 episodes, kept as data.

Figure 3's bottom row shows where each method's trained policy drives the ball. Drawing it needs the
policy, which lives in a trial's checkpoint (megabytes, outside the repository, gone with its
machine). `romi export` therefore runs the episodes once, while the checkpoint is there, and keeps the
states they visit beside the exported results (`romi.layout.POLICY_EPISODES_FILE`, kilobytes); Figure 3 draws from
that file when there is no checkpoint. Both paths run the same function with the same seeds, so the
drawing is the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from romi.analysis.results import latest_run_state
from romi.io import atomic_save_npz, atomic_write_text
from romi.layout import POLICY_EPISODES_FILE
from romi.storage import filesystem

FIGURE3_EPISODES = 3
"""Episodes per trained policy in Figure 3 (more lines would hide the maze)."""


def figure3_eval_seed(seed: int) -> int:
    """Reset seed of Figure 3's first episode for a trial of training seed `seed`: apart from the seeds
    of the training-time evaluations (which start at 0), so the figure shows unseen episodes."""
    return 10_000 + seed


@dataclass(frozen=True)
class PolicyEpisodes:
    step: int
    """The gradient step of the policy that ran them."""
    eval_seed: int
    returns: np.ndarray
    """(episodes,) undiscounted returns."""
    trajectories: list[np.ndarray]
    """Per episode, the (T, obs_dim) states the policy acted in."""

    def save(self, path: Path) -> None:
        arrays = {"step": np.int64(self.step), "eval_seed": np.int64(self.eval_seed), "returns": self.returns}
        arrays |= {f"trajectory_{i}": t.astype(np.float32) for i, t in enumerate(self.trajectories)}
        atomic_save_npz(path, arrays)

    @classmethod
    def load(cls, path: Path) -> PolicyEpisodes:
        with np.load(path) as saved:
            count = sum(name.startswith("trajectory_") for name in saved.files)
            return cls(int(saved["step"]), int(saved["eval_seed"]), saved["returns"],
                       [saved[f"trajectory_{i}"] for i in range(count)])


def run_policy_episodes(state: dict[str, Any], episodes: int = FIGURE3_EPISODES) -> PolicyEpisodes:
    """Episodes of the trained policy saved in a run state (`run.pt`: its config, step and agent), on the
    CPU whatever device it trained on, in the task's evaluation env, from `figure3_eval_seed`."""
    from romi.agents import make_agent
    from romi.config import load_run_config
    from romi.envs import make_eval_env
    from romi.evaluation import evaluate
    from romi.tasks import get_task

    config = load_run_config(state["config"])
    env = make_eval_env(get_task(config.task))
    try:
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        # The action bound is the eval env's, as in training.
        agent = make_agent(config.model_copy(update={"device": "cpu"}), obs_dim, act_dim,
                           float(env.action_space.high[0]))
        agent.load_state_dict(state["agent"])
        seed = figure3_eval_seed(config.seed)
        result = evaluate(agent.act, env, episodes=episodes, seed=seed, record_states=True)
    finally:
        env.close()
    return PolicyEpisodes(int(state["step"]), seed, result.returns, [t.astype(np.float32) for t in result.trajectories])


def trained_policy_episodes(trial_dir: Path) -> PolicyEpisodes | None:
    """The Figure 3 episodes of a trial's trained policy: kept by `romi export` beside an exported trial,
    else run from the trial's latest checkpoint; None when there is neither."""
    kept = trial_dir / POLICY_EPISODES_FILE
    if kept.exists():
        return PolicyEpisodes.load(kept)
    fs, directory = filesystem(str(trial_dir))
    state = latest_run_state(fs, directory)
    return None if state is None else run_policy_episodes(state)


ENDS_COLUMNS = ["method", "seed", "step", "episode", "length", "return", "steps at the goal", "closest to the goal",
                "end x", "end y", "end distance to the goal"]


def where_episodes_go(episodes: PolicyEpisodes, goal: np.ndarray, radius: float) -> pd.DataFrame:
    """Figure 3's bottom row in numbers, one row per episode: its return, how many steps the ball spent
    within `radius` of `goal` (where the sparse reward is paid), its closest approach, and where it was
    at the end and how far from the goal. A policy that drives to the goal and stays has an end distance
    under `radius`; one that overshoots and rests against a wall shows it in its end position."""
    rows = []
    for number, (trajectory, ret) in enumerate(zip(episodes.trajectories, episodes.returns, strict=True)):
        distance = np.linalg.norm(trajectory[:, :2] - goal, axis=1)
        rows.append({"step": episodes.step, "episode": number, "length": len(trajectory), "return": float(ret),
                     "steps at the goal": int((distance <= radius).sum()), "closest to the goal": float(distance.min()),
                     "end x": float(trajectory[-1, 0]), "end y": float(trajectory[-1, 1]),
                     "end distance to the goal": float(distance[-1])})
    return pd.DataFrame(rows)


def write_where_policies_go(trials_root: Path, task_name: str, seeds: list[int], out: Path) -> list[Path]:
    """`out`.md and `out`.csv: `where_episodes_go` for every ROMI-BCQ, FOMI-BCQ and BCQ trial of these
    seeds under `trials_root` whose trained policy's episodes are there (kept, or run from a checkpoint);
    none: nothing written."""
    from romi.envs import GOAL_RADIUS, goal_xy
    from romi.tasks import get_task

    task = get_task(task_name)
    goal = goal_xy(task)
    tables = []
    for method in ("ROMI-BCQ", "FOMI-BCQ", "BCQ"):
        for seed in sorted(seeds):
            episodes = trained_policy_episodes(trials_root / f"{task.name}_{method}_seed{seed}")
            if episodes is not None:
                tables.append(where_episodes_go(episodes, goal, GOAL_RADIUS).assign(method=method, seed=seed))
    if not tables:
        return []
    table = pd.concat(tables, ignore_index=True)[ENDS_COLUMNS]
    shown = table.round({"closest to the goal": 3, "end x": 2, "end y": 2, "end distance to the goal": 3})
    caption = (f"Where the trained policies drive the ball, {task.name} (Figure 3's episodes: "
               f"{len(table)} episodes from unseen starts, the policy at its last step). The goal is "
               f"at ({goal[0]:g}, {goal[1]:g}); the sparse reward is paid within {GOAL_RADIUS} of it (for the state "
               "an action leads to), so a return is, within one, the number of steps at the goal.")
    markdown, csv = out.with_suffix(".md"), out.with_suffix(".csv")
    atomic_write_text(markdown, caption + "\n\n" + shown.to_markdown(index=False) + "\n")
    atomic_write_text(csv, table.to_csv(index=False, float_format="%.6g"))
    return [markdown, csv]
