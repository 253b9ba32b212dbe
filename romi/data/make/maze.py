"""maze2d datasets (spec §7), by one of two recipes, both on gymnasium-robotics' PointMaze:

- `d4rl` (the default; the paper's data): D4RL's `generate_maze2d_datasets.py` with its
  `WaypointController`. A target is a uniformly drawn free cell (the goal cell included); the controller
  plans a shortest cell path, aims at waypoints 0..0.2 short of each cell centre (D4RL's `- U(0,1) * 0.2`
  per axis, in D4RL's frame) and at the exact centre of the target cell, advances within 0.1, and the
  target counts as reached within 0.1 of its centre; its PD command `10 (w - x) - 1 v` is clipped to
  [-1, 1], then N(0, 0.5^2) noise is added and the action clipped again. A new target is drawn when the
  current one is reached *or* after the task's horizon (300 / 600 / 800 steps): each is an episode end.
- `minari`: Minari's regeneration scripts (as the official `D4RL/pointmaze` Minari datasets were made):
  `continuing_task=True, reset_target=True`, so gymnasium draws a new goal when the ball passes within
  0.45 of a goal carrying +-0.25 noise, with no time limit; the noise is added to the *unclipped* PD
  command. The ball is braked into no target, and most actions sit at +-1.

Differences from D4RL that remain, in both: the simulator is gymnasium-robotics' PointMaze (MuJoCo 3,
the ball's frame offset and D4RL's (row, col) axes mapped to its (x, y)), BFS finds the shortest path
where D4RL runs Q-iteration (the same paths where they are unique, as in umaze), D4RL's generator
records the previous observation again after each target switch (it does not update `s` on `done`;
romi records the true state), and romi relabels rewards on s' when loading (D4RL on s). Raw
`env.unwrapped.step` + `minari.create_dataset_from_buffers` instead of Minari's `DataCollector`: about
5x faster, and no jax needed.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np

from romi.data.make import Progress
from romi.data.make.common import RecipeResult, episode_buffer, mean_return, random_actor
from romi.envs import (
    MAZE_EVAL_ENV_VERSION,
    MAZE_SCALING,
    cell_to_xy,
    eval_env_spec,
    make_eval_env,
    maze_map,
    register_robotics_envs,
    xy_to_cell,
)
from romi.tasks import TaskSpec

# D4RL's maze2d-{umaze,medium,large}-v1 hold 1M, 2M and 4M transitions; so do ours by default.
DEFAULT_STEPS = {"umaze": 1_000_000, "medium": 2_000_000, "large": 4_000_000}
MAZE_RECIPES = ("d4rl", "minari")
"""The maze recipes, the default (the paper's data) first."""
RECIPE_VERSIONS = {"d4rl": 1, "minari": 2}
"""The current version of each recipe; a dataset made by an older one is refused with the fix.
minari 2: reference scores measured on the D4RL-protocol eval env (`romi.envs.MAZE_EVAL_ENV_VERSION` 2),
whose spec (with the fixed goal) is stored in the dataset; D4RL's sizes. minari 1: gymnasium's resets."""
P_GAIN, D_GAIN = 10.0, -1.0
ACTION_NOISE = 0.5
WAYPOINT_SWITCH = 0.1
WAYPOINT_JITTER = 0.1  # minari recipe: uniform +-, in cells
D4RL_SOLVE_THRESHOLD = 0.1
"""D4RL's `solve_thresh` (and `vel_thresh` for the per-step displacement), in cells."""
D4RL_WAYPOINT_SHORTFALL = 0.2
"""D4RL's intermediate waypoints lie `U(0, 1) * 0.2` short of the cell centre along each of its axes."""


def recipe_of(metadata: dict) -> str:
    """The maze recipe a dataset was made by; datasets from before recipes had names were the Minari one's."""
    return str(metadata.get("romi_maze_recipe", "minari"))


Cell = tuple[int, int]


def shortest_path(grid: Sequence[Sequence[int]], start: Cell, goal: Cell) -> list[Cell]:
    """Cells from `start` to `goal` inclusive along a shortest 4-connected path through free cells."""
    if grid[start[0]][start[1]] == 1 or grid[goal[0]][goal[1]] == 1:
        raise ValueError(f"start {start} or goal {goal} is a wall")
    previous: dict[Cell, Cell | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            break
        row, col = cell
        for nxt in ((row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1)):
            if grid[nxt[0]][nxt[1]] == 0 and nxt not in previous:
                previous[nxt] = cell
                queue.append(nxt)
    if goal not in previous:
        raise ValueError(f"no path from {start} to {goal}")
    path = [goal]
    while previous[path[-1]] is not None:
        path.append(previous[path[-1]])  # type: ignore[arg-type]
    return path[::-1]


class WaypointController:
    """D4RL's maze2d data policy: PD control toward cell-centre waypoints on a shortest path."""

    def __init__(self, task: TaskSpec, rng: np.random.Generator, noise_std: float = ACTION_NOISE) -> None:
        self.task = task
        self.grid = maze_map(task.env_id)
        self.scaling = MAZE_SCALING[task.domain]
        self.rng = rng
        self.noise_std = noise_std
        self.waypoints: list[tuple[float, float]] = []
        self.index = 0
        self.goal: tuple[float, float] | None = None

    def plan(self, xy: np.ndarray, goal: np.ndarray) -> None:
        """Re-plan from position `xy` to `goal` (called whenever the goal changes)."""
        path = shortest_path(self.grid, xy_to_cell(self.task, xy), xy_to_cell(self.task, goal))
        jitter = self.rng.uniform(-WAYPOINT_JITTER, WAYPOINT_JITTER, size=(len(path), 2)) * self.scaling
        centres = [cell_to_xy(self.task, cell) + j for cell, j in zip(path[1:-1], jitter, strict=False)]
        self.waypoints = [(float(c[0]), float(c[1])) for c in centres] + [(float(goal[0]), float(goal[1]))]
        self.index = 0
        self.goal = (float(goal[0]), float(goal[1]))

    def act(self, observation: np.ndarray) -> np.ndarray:
        x, y, vx, vy = (float(v) for v in observation[:4])
        wx, wy = self.waypoints[self.index]
        if self.index < len(self.waypoints) - 1 and math.hypot(wx - x, wy - y) < WAYPOINT_SWITCH * self.scaling:
            self.index += 1
            wx, wy = self.waypoints[self.index]
        action = np.array([P_GAIN * (wx - x) + D_GAIN * vx, P_GAIN * (wy - y) + D_GAIN * vy])
        if self.noise_std > 0:
            action += self.rng.normal(0.0, self.noise_std, size=2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class D4RLController:
    """D4RL's `WaypointController` semantics on gymnasium-robotics' frame (see the module docstring).

    `act` returns the clipped PD action (noise is the recipe's, as in D4RL's generator) and whether the
    target is solved: within 0.1 of the target cell's centre while moving less than 0.1 per step. The
    per-step displacement is measured from the previous call, and from the start cell's centre right
    after a new plan, as D4RL does.
    """

    def __init__(self, task: TaskSpec, rng: np.random.Generator) -> None:
        self.task = task
        self.grid = maze_map(task.env_id)
        self.scaling = MAZE_SCALING[task.domain]
        self.rng = rng
        self.target_cell: Cell | None = None
        self.target = np.zeros(2)
        self.waypoints: list[np.ndarray] = []
        self.index = 0
        self.previous_xy = np.zeros(2)

    def plan(self, xy: np.ndarray, target_cell: Cell) -> None:
        start = xy_to_cell(self.task, xy)
        path = shortest_path(self.grid, start, target_cell)[1:]  # the cells after the start, as D4RL's rollout
        threshold = D4RL_SOLVE_THRESHOLD * self.scaling
        self.waypoints = []
        for cell in path[:-1]:
            # D4RL's (row, col) axes are gymnasium's (-y, x): "short along both" is -x and +y here.
            short = self.rng.uniform(size=2) * D4RL_WAYPOINT_SHORTFALL * self.scaling
            self.waypoints.append(cell_to_xy(self.task, cell) + np.array([-short[1], short[0]]))
        self.target_cell, self.target = target_cell, cell_to_xy(self.task, target_cell)
        self.waypoints.append(self.target.copy())
        self.index = 0
        self.previous_xy = cell_to_xy(self.task, start)
        assert np.linalg.norm(self.waypoints[-1] - self.target) <= threshold

    def act(self, observation: np.ndarray) -> tuple[np.ndarray, bool]:
        xy, velocity = np.asarray(observation[:2], dtype=np.float64), np.asarray(observation[2:4], dtype=np.float64)
        threshold = D4RL_SOLVE_THRESHOLD * self.scaling
        moved = float(np.linalg.norm(self.previous_xy - xy))
        solved = float(np.linalg.norm(xy - self.target)) < threshold and moved < threshold
        waypoint = self.target if solved else self.waypoints[self.index]
        action = P_GAIN * (waypoint - xy) + D_GAIN * velocity
        if not solved and float(np.linalg.norm(xy - waypoint)) < threshold and moved < threshold:
            self.index = min(self.index + 1, len(self.waypoints) - 1)
        self.previous_xy = xy
        return np.clip(action, -1.0, 1.0), solved


class GoalSeekingActor:
    """The noiseless controller driving to a task's fixed goal: the 'expert' of the reference score."""

    def __init__(self, task: TaskSpec, seed: int) -> None:
        self.task = task
        self.controller = WaypointController(task, np.random.default_rng(seed), noise_std=0.0)
        self.goal = cell_to_xy(task, task.goal_cell)  # type: ignore[arg-type]
        self._last_xy: np.ndarray | None = None

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        xy = np.asarray(observation[:2], dtype=np.float64)
        # A new episode starts far from where the last step left off: plan afresh.
        if self._last_xy is None or np.linalg.norm(xy - self._last_xy) > 0.5 * self.controller.scaling:
            self.controller.plan(xy, self.goal)
        self._last_xy = xy
        return self.controller.act(observation)


class D4RLGoalSeekingActor:
    """D4RL's controller without noise, driving to the task's fixed goal and holding there: the 'expert'
    of the `d4rl` recipe's reference score."""

    def __init__(self, task: TaskSpec, seed: int) -> None:
        self.task = task
        self.controller = D4RLController(task, np.random.default_rng(seed))
        self._last_xy: np.ndarray | None = None

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        xy = np.asarray(observation[:2], dtype=np.float64)
        if self._last_xy is None or np.linalg.norm(xy - self._last_xy) > 0.5 * self.controller.scaling:
            self.controller.plan(xy, self.task.goal_cell)  # type: ignore[arg-type]
        self._last_xy = xy
        return self.controller.act(observation)[0].astype(np.float32)


def default_steps(task: TaskSpec) -> int:
    """D4RL's size of the task's maze2d dataset (1M / 2M / 4M for umaze / medium / large)."""
    return DEFAULT_STEPS[task.name.split("-")[1]]


Stream = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[int]]
"""(observations by key, steps + 1 rows; actions; the environment's rewards; episode boundaries)."""


def make_maze_dataset(
    task: TaskSpec, *, steps: int | None, seed: int, ref_episodes: int, progress: Progress | None,
    log: Callable[[str], None] | None = None, maze_recipe: str = MAZE_RECIPES[0],
) -> RecipeResult:
    if maze_recipe not in MAZE_RECIPES:
        raise ValueError(f"unknown maze recipe {maze_recipe!r}; the recipes are {', '.join(MAZE_RECIPES)}")
    steps = steps or default_steps(task)
    register_robotics_envs()
    started = time.perf_counter()
    simulate = _d4rl_stream if maze_recipe == "d4rl" else _minari_stream
    stream, actions, rewards, boundaries = simulate(task, steps, seed, progress)
    if progress is not None and steps % REPORT_EVERY:
        progress(steps % REPORT_EVERY)
    if boundaries[-1] != steps:
        boundaries.append(steps)
    generation_seconds = time.perf_counter() - started

    episodes = []
    for start, end in itertools.pairwise(boundaries):
        length = end - start
        truncations = np.zeros(length, dtype=bool)
        truncations[-1] = True  # goal reached (or the recording ended): a cut, never a terminal
        episodes.append(
            episode_buffer(
                {key: value[start : end + 1] for key, value in stream.items()},
                actions[start:end],
                rewards[start:end],
                np.zeros(length, dtype=bool),
                truncations,
            )
        )

    # Reference scores as D4RL measured its own (random policy; the noiseless waypoint controller), on
    # the D4RL-protocol evaluation env whose spec is stored with the dataset; per recipe, as its controller.
    if log is not None:
        log(f"measuring reference scores: {ref_episodes} episodes each of a random policy and of the noiseless "
            f"controller ({task.horizon} steps each) ...")
    eval_env = make_eval_env(task)
    expert = D4RLGoalSeekingActor(task, seed) if maze_recipe == "d4rl" else GoalSeekingActor(task, seed)
    ref_min = mean_return(eval_env, random_actor(eval_env.action_space, seed), ref_episodes, seed)
    ref_max = mean_return(eval_env, expert, ref_episodes, seed)
    if maze_recipe == "d4rl":
        how = (f"D4RL's maze2d generator: waypoint controller (shortest cell path, waypoints 0-0.2 short of cell "
               f"centres, advance and solve within {D4RL_SOLVE_THRESHOLD}), PD gains {P_GAIN}/{D_GAIN} clipped, "
               f"then N(0, {ACTION_NOISE}^2) noise and clipped again; a new target (uniform free cell) when "
               f"reached or after {task.horizon} steps, each an episode end")
    else:
        how = (f"Minari's regeneration scripts: noisy waypoint controller (BFS over cells, jittered waypoints, "
               f"PD gains {P_GAIN}/{D_GAIN}, N(0, {ACTION_NOISE}^2) noise on the unclipped command) on "
               f"{task.env_id} with continuing_task and reset_target; episodes split where a goal was reached")
    return RecipeResult(
        episodes=episodes,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        description=(
            f"{task.name}: D4RL-style maze2d data made by romi's {maze_recipe!r} recipe. {steps} steps of "
            f"{how}. Stored rewards are the environment's (moving goal); romi relabels them to the fixed goal "
            f"cell {task.goal_cell} when loading. Reference scores: {ref_episodes} episodes of a uniform random "
            f"policy and of the noiseless controller on the fixed-goal evaluation env with D4RL's maze2d resets "
            f"(uniform over free cells incl. the goal, +-0.1 noise; horizon {task.horizon}); D4RL's own refs are "
            f"{task.d4rl_ref_min} / {task.d4rl_ref_max}."
        ),
        generation_seconds=generation_seconds,
        eval_env_spec=eval_env_spec(task),
        extra_metadata={"romi_goal_cell": list(task.goal_cell or ()), "romi_ref_episodes": ref_episodes,
                        "romi_maze_recipe": maze_recipe, "romi_recipe_version": RECIPE_VERSIONS[maze_recipe],
                        "romi_eval_env_version": MAZE_EVAL_ENV_VERSION},
    )


REPORT_EVERY = 10_000


def _minari_stream(task: TaskSpec, steps: int, seed: int, progress: Progress | None) -> Stream:
    """One continuing episode in which gymnasium redraws the goal once the ball passes near it."""
    env = gym.make(task.env_id, continuing_task=True, reset_target=True).unwrapped
    rng = np.random.default_rng(seed)
    controller = WaypointController(task, rng)
    obs, _ = env.reset(seed=seed)
    controller.plan(obs["achieved_goal"], env.goal)
    stream, actions, rewards = _allocate(obs, steps)
    boundaries = [0]
    goal = env.goal.copy()
    for t in range(steps):
        action = controller.act(obs["observation"])
        obs, reward, _, _, _ = env.step(action)
        _record(stream, actions, rewards, t, obs, action, reward)
        if not np.array_equal(env.goal, goal):  # the goal was reached and redrawn: end the episode
            goal = env.goal.copy()
            boundaries.append(t + 1)
            controller.plan(obs["achieved_goal"], goal)
        if progress is not None and (t + 1) % REPORT_EVERY == 0:
            progress(REPORT_EVERY)
    env.close()
    return stream, actions, rewards, boundaries


def _d4rl_stream(task: TaskSpec, steps: int, seed: int, progress: Progress | None) -> Stream:
    """D4RL's generator loop: targets drawn by the recipe, switched when solved or after the horizon."""
    env = gym.make(task.env_id, continuing_task=True, reset_target=False).unwrapped
    rng = np.random.default_rng(seed)
    controller = D4RLController(task, rng)
    free = [(r, c) for r, row in enumerate(controller.grid) for c, wall in enumerate(row) if not wall]
    noise = 0.1 * controller.scaling

    def new_target() -> Cell:
        cell = free[int(rng.integers(len(free)))]
        # D4RL's env target carries +-0.1 noise; its controller aims at the cell, rewards see the noisy one.
        env.goal = cell_to_xy(task, cell) + rng.uniform(-noise, noise, size=2)
        return cell

    obs, _ = env.reset(seed=seed)
    target = new_target()
    controller.plan(obs["observation"][:2], target)
    stream, actions, rewards = _allocate(obs, steps)
    boundaries = [0]
    since_target = 0
    for t in range(steps):
        action, solved = controller.act(obs["observation"])
        action = np.clip(action + rng.normal(0.0, ACTION_NOISE, size=2), -1.0, 1.0).astype(np.float32)
        done = solved or since_target >= task.horizon  # D4RL: `if ts >= max_episode_steps: done = True`
        obs, reward, _, _, _ = env.step(action)
        _record(stream, actions, rewards, t, obs, action, reward)
        since_target += 1
        if done:
            boundaries.append(t + 1)
            target = new_target()
            controller.plan(obs["observation"][:2], target)
            since_target = 0
        if progress is not None and (t + 1) % REPORT_EVERY == 0:
            progress(REPORT_EVERY)
    env.close()
    return stream, actions, rewards, boundaries


def _allocate(first: dict[str, np.ndarray], steps: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    stream = {key: np.empty((steps + 1, value.shape[0]), dtype=np.float64) for key, value in first.items()}
    for key in stream:
        stream[key][0] = first[key]
    return stream, np.empty((steps, 2), dtype=np.float32), np.empty(steps, dtype=np.float64)


def _record(stream: dict[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray, t: int,
            obs: dict[str, np.ndarray], action: np.ndarray, reward: float) -> None:
    actions[t], rewards[t] = action, reward
    for key in stream:
        stream[key][t + 1] = obs[key]
