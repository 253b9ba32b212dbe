from __future__ import annotations

import itertools

import numpy as np
import pytest

from romi.data.make.maze import GoalSeekingActor, WaypointController, shortest_path
from romi.envs import GOAL_RADIUS, cell_to_xy, goal_xy, make_eval_env, maze_map, maze_reward, xy_to_cell
from romi.tasks import TASKS

LAYOUT_TASKS = ["maze2d-umaze-sparse", "maze2d-medium-sparse", "maze2d-large-sparse"]


@pytest.mark.parametrize("name", LAYOUT_TASKS)
def test_shortest_path_connects_every_pair_of_free_cells(name: str) -> None:
    grid = maze_map(TASKS[name].env_id)
    free = [(r, c) for r, row in enumerate(grid) for c, v in enumerate(row) if v == 0]
    for start, goal in itertools.product(free, free):
        path = shortest_path(grid, start, goal)
        assert path[0] == start and path[-1] == goal
        assert all(grid[r][c] == 0 for r, c in path)
        assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in itertools.pairwise(path))


def test_shortest_path_is_shortest_in_umaze() -> None:
    grid = maze_map(TASKS["maze2d-umaze-sparse"].env_id)
    # From the bottom-left to the top-left cell the only way is around the U: 7 cells.
    assert len(shortest_path(grid, (3, 1), (1, 1))) == 7


@pytest.mark.parametrize("name", LAYOUT_TASKS)
def test_controller_reaches_the_fixed_goal_in_every_maze(name: str) -> None:
    task = TASKS[name]
    env = make_eval_env(task)
    actor = GoalSeekingActor(task, seed=0)
    for episode in range(2):
        obs, _ = env.reset(seed=episode)
        reached = False
        for _ in range(task.horizon):
            obs, _reward, _, truncated, _ = env.step(actor(obs))
            reached |= bool(np.linalg.norm(obs[:2] - goal_xy(task)) <= GOAL_RADIUS)
            if truncated:
                break
        assert reached, f"the planner never reached the goal of {name} (episode {episode})"


def test_noisy_controller_follows_waypoints_to_a_new_goal() -> None:
    task = TASKS["maze2d-medium-sparse"]
    controller = WaypointController(task, np.random.default_rng(0))
    start = cell_to_xy(task, (1, 1))
    controller.plan(start, cell_to_xy(task, (6, 6)))
    assert np.allclose(controller.waypoints[-1], cell_to_xy(task, (6, 6)))
    # Waypoints stay within their cells (jitter is a fraction of a cell).
    assert all(abs(w[0] - round(w[0] - 0.5) - 0.5) <= 0.5 for w in controller.waypoints)
    action = controller.act(np.array([*start, 0.0, 0.0]))
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)


def test_maze_rewards_by_hand() -> None:
    goal = np.array([1.0, 1.0])
    xy = np.array([[1.0, 1.0], [1.3, 1.4], [1.0, 1.6], [4.0, 5.0]])
    assert maze_reward(xy, goal, "sparse").tolist() == [1.0, 1.0, 0.0, 0.0]
    assert np.allclose(maze_reward(xy, goal, "dense"), np.exp(-np.array([0.0, 0.5, 0.6, 5.0])))
    with pytest.raises(ValueError):
        maze_reward(xy, goal, "shaped")


@pytest.mark.parametrize("name", LAYOUT_TASKS)
def test_simulated_states_never_enter_a_wall_cell_of_the_drawn_frame(name: str) -> None:
    """`xy_to_cell` is the frame Figure 3 draws walls in: a random walker and the planner stay in free cells."""
    task = TASKS[name]
    grid = maze_map(task.env_id)
    env = make_eval_env(task)
    rng = np.random.default_rng(0)
    actor = GoalSeekingActor(task, seed=0)
    for act in (lambda obs: rng.uniform(-1.0, 1.0, 2).astype(np.float32), actor):
        obs, _ = env.reset(seed=1)
        for _ in range(300):
            obs, _reward, _, truncated, _ = env.step(act(obs))
            row, col = xy_to_cell(task, obs[:2])
            assert grid[row][col] == 0, f"{name}: state {obs[:2]} is drawn in wall cell {(row, col)}"
            if truncated:
                break


def test_goal_visits_count_transitions_and_episodes_at_the_goal() -> None:
    from romi.envs import goal_visits

    task = TASKS["maze2d-umaze-sparse"]
    goal = goal_xy(task)
    along_x = np.array([1.0, 0.0])
    far, inside, edge, outside = (goal + d * along_x for d in (2.0, 0.1, GOAL_RADIUS, GOAL_RADIUS + 1e-3))
    xy = np.stack([far, inside, far, edge, outside, far])
    episodes = np.array([0, 0, 1, 2, 2, 3])
    visits = goal_visits(task, xy, episodes)
    assert (visits.transitions, visits.at_goal, visits.episodes, visits.episodes_at_goal) == (6, 2, 4, 2)
    assert "33.3% of transitions; 2 of 4 episodes reach it" in visits.describe()
