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

from romi.io import atomic_save_npz

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
