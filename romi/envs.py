"""Evaluation environments and maze geometry, shared by dataset making, loading and evaluation.

The learners see flat Box observations: maze2d `obs["observation"]` (x, y, vx, vy) as in D4RL;
antmaze `[x, y] + obs["observation"]` (D4RL's layout, so the goal test can read the position).
Maze rewards are always computed here, against the task's *fixed* goal at the exact cell centre
(sparse: distance <= 0.5; dense: exp(-distance)), both when datasets are relabelled and during
evaluation, so training and evaluation rewards cannot drift apart.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import cache

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from romi.tasks import TaskSpec

MAZE_SCALING = {"maze2d": 1.0, "antmaze": 4.0}
GOAL_RADIUS = 0.5

_registered = False


def register_robotics_envs() -> None:
    """Make gymnasium-robotics' maze environments known to `gymnasium.make` (idempotent)."""
    global _registered
    if not _registered:
        # Its Adroit notice on import is dropped in `romi/__init__.py` (for every process, whoever imports it).
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


@dataclasses.dataclass(frozen=True)
class GoalVisits:
    """How often a maze2d dataset is at its goal (within `GOAL_RADIUS`, where the sparse reward is 1)."""

    transitions: int
    at_goal: int
    episodes: int
    episodes_at_goal: int

    def describe(self) -> str:
        return (f"at the goal (within {GOAL_RADIUS} of it, sparse reward 1) in {self.at_goal / self.transitions:.1%} "
                f"of transitions; {self.episodes_at_goal:,} of {self.episodes:,} episodes reach it")


def goal_visits(task: TaskSpec, next_xy: np.ndarray, episode_ids: np.ndarray) -> GoalVisits:
    """The dataset's visits to the goal, counted on the positions its transitions lead to (`next_xy`, as the
    reward is): what ROMI's reverse rollouts can start from, and how much of the data shows the way."""
    at_goal = maze_reward(next_xy, goal_xy(task), "sparse") > 0
    return GoalVisits(len(at_goal), int(at_goal.sum()), len(np.unique(episode_ids)),
                      len(np.unique(episode_ids[at_goal])))


def flatten_maze_observation(task: TaskSpec, obs: dict[str, np.ndarray]) -> np.ndarray:
    """Dict observation (single or batched) -> the flat vector the learners see."""
    if task.domain == "maze2d":
        return np.asarray(obs["observation"], dtype=np.float32)
    return np.concatenate([obs["achieved_goal"], obs["observation"]], axis=-1).astype(np.float32)


# D4RL's maze2d reset (d4rl/pointmaze/maze_model.py, `reset_model`): a cell drawn uniformly from the
# empty *and* goal cells, the ball placed at its centre + U(-0.1, 0.1) per axis, velocity N(0, 0.1^2).
# gymnasium-robotics' own reset never starts within 0.5 of the goal and adds +-0.25 noise, which made
# our reference returns incomparable with D4RL's; `FixedGoalMaze` therefore re-places the ball itself.
D4RL_RESET_POSITION_NOISE = 0.1
D4RL_RESET_VELOCITY_NOISE = 0.1
MAZE_EVAL_ENV_VERSION = 2
"""Version of the maze evaluation protocol. 1: gymnasium's resets; 2: D4RL's maze2d resets (above).
Local maze datasets record the version their reference scores were measured with."""


def free_cells(task: TaskSpec) -> list[tuple[int, int]]:
    """Every non-wall cell of the task's maze, goal cell included (D4RL's `empty_and_goal_locations`)."""
    grid = maze_map(task.env_id)
    return [(r, c) for r, row in enumerate(grid) for c, value in enumerate(row) if value == 0]


class FixedGoalMaze(gym.Wrapper):
    """A maze evaluated as in D4RL: one fixed goal, flat observations, the task's reward.

    maze2d never terminates (the agent must reach the goal and stay: return counts steps near it),
    resets as D4RL's maze2d env does (see `D4RL_RESET_POSITION_NOISE`), and is rewarded on the state
    after each step; antmaze starts at its reset cell and ends when the goal is reached (return 0 or 1,
    normalised with refs 0 / 1).
    """

    def __init__(self, env: gym.Env, task: TaskSpec) -> None:
        super().__init__(env)
        self.task = task
        self.goal = goal_xy(task)
        self.reset_cells = free_cells(task)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (task.obs_dim,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = {"goal_cell": np.array(self.task.goal_cell), **(options or {})}
        if self.task.reset_cell is not None:
            options.setdefault("reset_cell", np.array(self.task.reset_cell))
        obs, info = self.env.reset(seed=seed, options=options)
        if self.task.domain == "maze2d":
            obs = self._d4rl_reset()
        return flatten_maze_observation(self.task, obs), info

    def _d4rl_reset(self) -> dict[str, np.ndarray]:
        """Re-place the ball as D4RL does, drawing from the env's generator (seeded by `reset(seed=...)`)."""
        maze = self.env.unwrapped
        rng = maze.np_random
        cell = self.reset_cells[int(rng.integers(len(self.reset_cells)))]
        noise = D4RL_RESET_POSITION_NOISE * MAZE_SCALING["maze2d"]
        qpos = cell_to_xy(self.task, cell) + rng.uniform(-noise, noise, size=2)
        qvel = rng.normal(0.0, D4RL_RESET_VELOCITY_NOISE, size=2)
        maze.point_env.set_state(qpos, qvel)
        return maze._get_obs(maze.point_env._get_obs()[0])

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        reward = float(maze_reward(obs["achieved_goal"], self.goal, self.task.reward_type or "sparse"))
        if self.task.domain == "antmaze":
            terminated = terminated or reward > 0
        return flatten_maze_observation(self.task, obs), reward, terminated, truncated, info


def fixed_goal_maze(task: str) -> gym.Env:
    """Entry point of the maze evaluation envs (see `eval_env_spec`): `FixedGoalMaze` around the raw
    simulator, with no time limit of its own (the spec's `max_episode_steps` sets the horizon)."""
    from gymnasium.envs.registration import load_env_creator

    from romi.tasks import get_task

    spec = get_task(task)
    register_robotics_envs()
    kwargs: dict = {"continuing_task": True, "reset_target": False}
    if spec.domain == "antmaze":
        grid = [list(row) for row in copy.deepcopy(maze_map(spec.env_id))]
        grid[spec.goal_cell[0]][spec.goal_cell[1]] = "g"  # type: ignore[index]
        grid[spec.reset_cell[0]][spec.reset_cell[1]] = "r"  # type: ignore[index]
        kwargs["maze_map"] = grid
    simulator = gym.spec(spec.env_id)
    env = load_env_creator(simulator.entry_point)(**{**simulator.kwargs, **kwargs})
    return FixedGoalMaze(env, spec)


def eval_env_spec(task: TaskSpec) -> EnvSpec:
    """The gymnasium spec of a task's evaluation env: what `gym.make` needs to rebuild it anywhere.

    Maze specs point at `fixed_goal_maze` (fixed goal, D4RL's resets and rewards) and are stored in
    the local datasets' Minari metadata, so `dataset.recover_environment(eval_env=True)` returns the
    very env their reference scores were measured on.
    """
    if not task.is_maze:
        return dataclasses.replace(gym.spec(task.env_id), max_episode_steps=task.horizon)
    return EnvSpec(
        id=f"romi/{task.name}-eval-v{MAZE_EVAL_ENV_VERSION}",
        entry_point="romi.envs:fixed_goal_maze",
        kwargs={"task": task.name},
        max_episode_steps=task.horizon,
        disable_env_checker=True,
    )


def make_eval_env(task: TaskSpec) -> gym.Env:
    """The environment a task's policies are evaluated in (episode length = the task's horizon)."""
    if task.is_maze:
        return gym.make(eval_env_spec(task))
    return gym.make(task.env_id, max_episode_steps=task.horizon)
