from __future__ import annotations

import itertools
from collections.abc import Iterator

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


# ---- the `d4rl` recipe (D4RL's generate_maze2d_datasets.py) against the `minari` one ----------------
@pytest.fixture(scope="module")
def both_recipes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """20k steps of umaze by each recipe, same seed (in a store of their own: the session's has a smaller one)."""
    from romi.data.make import make_dataset
    from romi.data.minari_io import load_transitions, read_metadata

    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("recipes") / "datasets"))
        for recipe in ("d4rl", "minari"):
            summary = make_dataset("maze2d-umaze-sparse", steps=20_000, seed=0, ref_episodes=2, recipe=recipe)
            out[recipe] = (load_transitions(summary.dataset_id), read_metadata(summary.dataset_id),
                           summary.dataset_id)
        yield out


def test_each_recipe_writes_its_own_dataset_and_names_itself(both_recipes) -> None:
    ids = {recipe: dataset_id for recipe, (_, _, dataset_id) in both_recipes.items()}
    assert ids == {"d4rl": "local/pointmaze/umaze-d4rl-v0", "minari": "local/pointmaze/umaze-v0"}
    assert TASKS["maze2d-umaze-sparse"].local_id == ids["d4rl"], "the paper's data is the default"
    for recipe, (_, meta, _) in both_recipes.items():
        assert meta["romi_maze_recipe"] == recipe and recipe in meta["description"]


def test_d4rl_recipe_clips_the_command_before_the_noise(both_recipes) -> None:
    """D4RL clips the PD command, adds N(0, 0.5^2) and clips again: a saturated command ends at +-1 only
    half the time. Minari adds the noise to the unclipped command (|PD| of 2-5 far from a waypoint), so
    most components sit at +-1 (56.5 % in the 1M-step dataset)."""
    share = {r: float((np.abs(t.actions) == 1.0).mean()) for r, (t, _, _) in both_recipes.items()}
    assert share["minari"] > 0.5 and share["d4rl"] < 0.4, share
    controller_action = np.ones(2)  # a saturated clipped command
    rng = np.random.default_rng(0)
    noisy = np.clip(controller_action + rng.normal(0, 0.5, size=(100_000, 2)), -1, 1)
    assert abs(float((noisy == 1.0).mean()) - 0.5) < 0.01


def test_d4rl_targets_switch_when_solved_within_0_1_of_a_cell_centre_or_after_the_horizon(both_recipes) -> None:
    task = TASKS["maze2d-umaze-sparse"]
    data, _, _ = both_recipes["d4rl"]
    ends = np.flatnonzero(data.timeouts)[:-1]  # the last one is the end of the recording
    lengths = np.diff(np.r_[-1, ends])
    # An episode ends on the step at which the target was solved (the state *before* that step was within
    # 0.1 of a cell centre) or on step horizon + 1 (D4RL's `ts >= max_episode_steps`), never later.
    assert lengths.max() <= task.horizon + 1
    solved = ends[lengths <= task.horizon]
    xy = data.observations[solved, :2]
    centres = np.array([cell_to_xy(task, xy_to_cell(task, p)) for p in xy])
    assert np.linalg.norm(xy - centres, axis=1).max() < 0.1
    # With a horizon too short to get anywhere, targets time out after exactly horizon + 1 steps.
    import dataclasses

    from romi.data.make.maze import _d4rl_stream

    hasty = dataclasses.replace(task, horizon=15)
    _, _, _, boundaries = _d4rl_stream(hasty, 2_000, 0, None)
    short = np.diff(boundaries)
    assert short.max() == 16 and (short == 16).sum() > 10
    # Minari's recipe switches wherever gymnasium's noisy goal is passed (within 0.45): off-centre.
    minari, _, _ = both_recipes["minari"]
    m_ends = np.flatnonzero(minari.timeouts)[:-1]
    m_xy = minari.next_observations[m_ends, :2]
    m_centres = np.array([cell_to_xy(task, xy_to_cell(task, p)) for p in m_xy])
    assert np.median(np.linalg.norm(m_xy - m_centres, axis=1)) > 0.1


def test_d4rl_targets_are_approached_slower_than_minari_goals(both_recipes) -> None:
    """D4RL's ball must come within 0.1 of a target's centre, where the PD law has all but stopped pushing;
    Minari's passes within 0.45 of a noisy goal at full speed (median 4.85 in the 1M-step dataset)."""
    speed = {}
    for recipe, (data, _, _) in both_recipes.items():
        ends = np.flatnonzero(data.timeouts)[:-1]
        speed[recipe] = float(np.median(np.linalg.norm(data.observations[ends, 2:4], axis=1)))
    assert speed["d4rl"] < 0.75 * speed["minari"], speed


def test_d4rl_waypoints_fall_short_of_cell_centres_as_in_d4rl() -> None:
    from romi.data.make.maze import D4RLController

    task = TASKS["maze2d-medium-sparse"]
    controller = D4RLController(task, np.random.default_rng(0))
    controller.plan(cell_to_xy(task, (1, 1)), (6, 6))
    *between, last = controller.waypoints
    assert np.array_equal(last, cell_to_xy(task, (6, 6))), "the target itself is the exact centre"
    for waypoint in between:
        offset = waypoint - cell_to_xy(task, xy_to_cell(task, waypoint))
        # D4RL's (row, col) - U(0, 0.2): x (col) lower, y (-row) higher, by at most 0.2.
        assert -0.2 <= offset[0] <= 0 and 0 <= offset[1] <= 0.2
    at_target = np.array([*cell_to_xy(task, (6, 6)), 0.0, 0.0])
    # Solved needs the per-step displacement below 0.1 too, measured from the start cell right after a plan.
    assert not controller.act(at_target)[1]
    action, solved = controller.act(at_target)
    assert solved and np.allclose(action, 0.0, atol=1e-9)


def test_a_recipe_a_task_does_not_have_is_refused_before_any_work() -> None:
    from romi.data.make import make_dataset
    from romi.errors import UnknownTaskError

    with pytest.raises(UnknownTaskError, match="no data recipe 'd4rl'"):
        make_dataset("hopper-random", steps=10, recipe="d4rl")
    with pytest.raises(UnknownTaskError, match="recipes: d4rl, minari"):
        make_dataset("maze2d-umaze-sparse", steps=10, recipe="gym")
