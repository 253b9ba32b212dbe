from __future__ import annotations

import pytest

from romi.envs import cell_to_xy, maze_map, xy_to_cell
from romi.errors import UnknownTaskError
from romi.tasks import DATASET_TO_TASK, TASKS, get_task, tasks_in_table


def test_registry_holds_the_24_paper_tasks() -> None:
    assert len(TASKS) == 24
    assert [len(tasks_in_table(t)) for t in (1, 2, 3, 4)] == [12, 12, 12, 6]
    domains = [t.domain for t in TASKS.values()]
    assert domains.count("maze2d") == 6 and domains.count("antmaze") == 6


def test_paper_profile_matches_spec_table() -> None:
    expect = {  # task: (h, model share, rollout policy, return-weighted)
        "maze2d-umaze-sparse": (5, 0.7, "uniform", False),
        "maze2d-medium-dense": (5, 0.5, "uniform", False),
        "maze2d-large-sparse": (5, 0.3, "uniform", False),
        "antmaze-large-diverse": (5, 0.1, "cvae", True),
        "hopper-medium": (5, 0.1, "uniform", True),
        "walker2d-random": (1, 0.1, "cvae", True),
        "halfcheetah-medium-expert": (1, 0.1, "cvae", True),
    }
    for name, (h, share, policy, weighted) in expect.items():
        p = TASKS[name].paper
        assert (p.horizon, p.model_share, p.rollout_policy, p.return_weighted) == (h, share, policy, weighted)


def test_dataset_ids_map_back_to_one_task() -> None:
    assert DATASET_TO_TASK["D4RL/pointmaze/umaze-v2"] == "maze2d-umaze-sparse"
    assert DATASET_TO_TASK["D4RL/pointmaze/umaze-dense-v2"] == "maze2d-umaze-dense"
    assert get_task("local/hopper/random-v0").name == "hopper-random"
    assert all(t.local_id.startswith("local/") for t in TASKS.values())


def test_unknown_task_suggests_close_names() -> None:
    with pytest.raises(UnknownTaskError) as info:
        get_task("maze2d-umaze-sprase")
    assert "maze2d-umaze-sparse" in str(info.value)


@pytest.mark.parametrize("name", [n for n, t in TASKS.items() if t.is_maze])
def test_goal_cells_are_free_and_round_trip(name: str) -> None:
    task = TASKS[name]
    grid = maze_map(task.env_id)
    assert grid[task.goal_cell[0]][task.goal_cell[1]] == 0
    assert xy_to_cell(task, cell_to_xy(task, task.goal_cell)) == task.goal_cell
