"""Evaluation environments and maze geometry, shared by dataset making, loading and evaluation.

The learners see flat Box observations: maze2d `obs["observation"]` (x, y, vx, vy) as in D4RL;
antmaze `[x, y] + obs["observation"]` (D4RL's layout, so the goal test can read the position).
Maze rewards are always computed here, against the task's *fixed* goal at the exact cell centre
(sparse: distance <= 0.5; dense: exp(-distance)), both when datasets are relabelled and during
evaluation, so training and evaluation rewards cannot drift apart.
"""

from __future__ import annotations

import copy
from functools import cache

import gymnasium as gym
import numpy as np

from romi.data.tasks import TaskSpec

MAZE_SCALING = {"maze2d": 1.0, "antmaze": 4.0}
GOAL_RADIUS = 0.5

_registered = False


def register_robotics_envs() -> None:
    """Make gymnasium-robotics' maze environments known to `gymnasium.make` (idempotent)."""
    global _registered
    if not _registered:
        import contextlib
        import io
        import warnings

        # gymnasium-robotics prints a notice about Adroit envs (unused here) on import.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        _registered = True


@cache
def maze_map(env_id: str) -> tuple[tuple[int, ...], ...]:
    """The wall layout (1 = wall, 0 = free) of a PointMaze/AntMaze environment id."""
    from gymnasium_robotics.envs.maze import maps

    layout = env_id.split("_", 1)[1].rsplit("-", 1)[0].removesuffix("Dense")
    table = {"UMaze": maps.U_MAZE, "Medium": maps.MEDIUM_MAZE, "Large": maps.LARGE_MAZE}
    return tuple(tuple(1 if cell == 1 else 0 for cell in row) for row in table[layout])


def cell_to_xy(task: TaskSpec, cell: tuple[int, int]) -> np.ndarray:
    """Centre of maze cell (row, col) in simulator coordinates (gymnasium-robotics' convention)."""
    grid = maze_map(task.env_id)
    scaling = MAZE_SCALING[task.domain]
    x_center, y_center = len(grid[0]) / 2 * scaling, len(grid) / 2 * scaling
    return np.array([(cell[1] + 0.5) * scaling - x_center, y_center - (cell[0] + 0.5) * scaling])


def xy_to_cell(task: TaskSpec, xy: np.ndarray) -> tuple[int, int]:
    grid = maze_map(task.env_id)
    scaling = MAZE_SCALING[task.domain]
    x_center, y_center = len(grid[0]) / 2 * scaling, len(grid) / 2 * scaling
    return int(np.floor((y_center - xy[1]) / scaling)), int(np.floor((xy[0] + x_center) / scaling))


def goal_xy(task: TaskSpec) -> np.ndarray:
    if task.goal_cell is None:
        raise ValueError(f"task {task.name} has no goal")
    return cell_to_xy(task, task.goal_cell)


def maze_reward(xy: np.ndarray, goal: np.ndarray, reward_type: str) -> np.ndarray:
    """Fixed-goal reward of positions `xy` (..., 2): D4RL's sparse (<= 0.5) or dense exp(-distance)."""
    distance = np.linalg.norm(np.asarray(xy, dtype=np.float64) - goal, axis=-1)
    if reward_type == "sparse":
        return (distance <= GOAL_RADIUS).astype(np.float32)
    if reward_type == "dense":
        return np.exp(-distance).astype(np.float32)
    raise ValueError(f"unknown maze reward type {reward_type!r}")


def flatten_maze_observation(task: TaskSpec, obs: dict[str, np.ndarray]) -> np.ndarray:
    """Dict observation (single or batched) -> the flat vector the learners see."""
    if task.domain == "maze2d":
        return np.asarray(obs["observation"], dtype=np.float32)
    return np.concatenate([obs["achieved_goal"], obs["observation"]], axis=-1).astype(np.float32)


class FixedGoalMaze(gym.Wrapper):
    """A maze evaluated as in D4RL: one fixed goal, flat observations, the task's reward.

    maze2d never terminates (the agent must reach the goal and stay: return counts steps near it);
    antmaze ends when the goal is reached (return 0 or 1, normalised with refs 0 / 1).
    """

    def __init__(self, env: gym.Env, task: TaskSpec) -> None:
        super().__init__(env)
        self.task = task
        self.goal = goal_xy(task)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (task.obs_dim,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = {"goal_cell": np.array(self.task.goal_cell), **(options or {})}
        if self.task.reset_cell is not None:
            options.setdefault("reset_cell", np.array(self.task.reset_cell))
        obs, info = self.env.reset(seed=seed, options=options)
        return flatten_maze_observation(self.task, obs), info

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        reward = float(maze_reward(obs["achieved_goal"], self.goal, self.task.reward_type or "sparse"))
        if self.task.domain == "antmaze":
            terminated = terminated or reward > 0
        return flatten_maze_observation(self.task, obs), reward, terminated, truncated, info


def make_eval_env(task: TaskSpec) -> gym.Env:
    """The environment a task's policies are evaluated in (episode length = the task's horizon)."""
    if task.is_maze:
        register_robotics_envs()
        kwargs: dict = {"continuing_task": True, "reset_target": False}
        if task.domain == "antmaze":
            grid = [list(row) for row in copy.deepcopy(maze_map(task.env_id))]
            grid[task.goal_cell[0]][task.goal_cell[1]] = "g"  # type: ignore[index]
            grid[task.reset_cell[0]][task.reset_cell[1]] = "r"  # type: ignore[index]
            kwargs["maze_map"] = grid
        env = gym.make(task.env_id, max_episode_steps=task.horizon, **kwargs)
        return FixedGoalMaze(env, task)
    return gym.make(task.env_id, max_episode_steps=task.horizon)
