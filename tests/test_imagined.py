"""What a maze2d model buffer holds (`romi.analysis.imagined`), against the maze's own map and reward."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from romi.analysis.imagined import buffer_content, in_walls, nearest_distance
from romi.data.transitions import Transitions
from romi.envs import cell_to_xy, free_cells, goal_xy, maze_map
from romi.tasks import get_task

TASK = get_task("maze2d-umaze-sparse")


def test_in_walls_follows_the_maze_map() -> None:
    grid = maze_map(TASK.env_id)
    walls = [(r, c) for r, row in enumerate(grid) for c, cell in enumerate(row) if cell == 1]
    free = free_cells(TASK)
    assert not in_walls(TASK, np.stack([cell_to_xy(TASK, cell) for cell in free])).any()
    assert in_walls(TASK, np.stack([cell_to_xy(TASK, cell) for cell in walls])).all()
    assert in_walls(TASK, np.array([[100.0, 100.0]])).all(), "off the map is no place for the ball either"


def test_nearest_distance_is_the_distance_to_the_closest_reference_row() -> None:
    reference = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert nearest_distance(np.array([[3.0, 0.0], [3.0, 5.0]]), reference, chunk=1) == pytest.approx([3.0, 1.0])


class _Echo:
    """A 'model' that moves every state by a fixed step and pays the sparse reward of where it lands: its
    invented states are known exactly, so each measure can be checked by hand."""

    def __init__(self, direction: str, shift: float) -> None:
        self.direction, self.shift = direction, shift

    def step(self, states: torch.Tensor, actions: torch.Tensor, generator=None):
        moved = states.clone()
        moved[:, 0] += self.shift
        return moved, torch.ones(len(states))  # always says "goal"


class _Still:
    def sample(self, states: torch.Tensor, generator=None) -> torch.Tensor:
        return torch.zeros(len(states), 2)


def _data_at_the_goal(n: int = 200) -> Transitions:
    goal = goal_xy(TASK)
    obs = np.zeros((n, 4), dtype=np.float32)
    obs[:, :2] = goal + np.random.default_rng(0).uniform(-0.1, 0.1, size=(n, 2))
    rewards = np.ones(n, dtype=np.float32)
    return Transitions(observations=obs, actions=np.zeros((n, 2), np.float32), rewards=rewards,
                       next_observations=obs.copy(), terminals=np.zeros(n, bool),
                       timeouts=np.zeros(n, bool), episode_ids=np.arange(n), returns=rewards.copy())


def test_buffer_content_measures_walls_distance_goal_and_reward_error() -> None:
    data = _data_at_the_goal()
    # a model that jumps 10 (off the map) in one step vs one that does not move at all
    models = {"forward": (_Echo("forward", 10.0), _Still()), "reverse": (_Echo("reverse", 0.0), _Still())}
    table = buffer_content(TASK, data, models, anchors=50, horizon=1, reference_size=200).set_index("source")
    assert table.loc["dataset", "at the goal (true) %"] == 100 and table.loc["dataset", "reward error"] == 0
    jumped = table.loc["forward imagination"]
    assert jumped["transitions"] == 50 and jumped["in walls %"] == 100
    assert jumped["off the data (median)"] > 9 and jumped["at the goal (true) %"] == 0
    assert jumped["rewarded (model) %"] == 100 and jumped["reward error"] == pytest.approx(1.0)
    stayed = table.loc["reverse imagination"]
    assert stayed["in walls %"] == 0 and stayed["off the data (median)"] == pytest.approx(0.0, abs=1e-6)
    assert stayed["at the goal (true) %"] == 100 and stayed["reward error"] == pytest.approx(0.0)


def test_buffer_content_is_for_maze2d_only() -> None:
    with pytest.raises(ValueError, match="maze2d"):
        buffer_content(get_task("hopper-random"), _data_at_the_goal(), {})


def test_the_report_table_has_the_dataset_once_then_each_direction_seed_by_seed(tmp_path, monkeypatch) -> None:
    from romi.analysis import plots
    from romi.analysis.imagined import write_buffer_content
    from romi.data import minari_io

    monkeypatch.setattr(minari_io, "resolve_dataset_id", lambda task: task.local_id)
    monkeypatch.setattr(minari_io, "load_transitions", lambda dataset_id: _data_at_the_goal())
    monkeypatch.setattr(plots, "load_dynamics", lambda artifacts, dataset_id, direction, seed:
                        None if seed == 1 else _Echo(direction, 10.0 if direction == "forward" else 0.0))
    files = write_buffer_content(tmp_path, TASK.name, [2, 0, 1], tmp_path / "imagined", anchors=20)
    table = pd.read_csv(files[1])
    assert list(zip(table["source"], table["seed"], strict=True)) == [
        ("dataset", 0), ("reverse imagination", 0), ("reverse imagination", 2), ("forward imagination", 0),
        ("forward imagination", 2)], "seed 1 has no models: no rows"
    assert (table[table["source"] == "forward imagination"]["in walls %"] == 100).all()
    assert files[0].read_text().startswith(f"What the model buffers hold, {TASK.name}, models of seed 0, 2:")
    assert write_buffer_content(tmp_path, TASK.name, [1], tmp_path / "none") == []


class _Oracle:
    """A 'model' whose mean prediction is the true state change of a ball moving +1 in x each step
    (and the reward 0), or no change at all when `still`: its open-loop error is known exactly."""

    def __init__(self, direction: str, still: bool = False) -> None:
        self.direction, self.still, self.elites = direction, still, [0]

    def predict(self, states: torch.Tensor, actions: torch.Tensor):
        mean = torch.zeros(1, len(states), 1 + states.shape[1])
        if not self.still:
            mean[0, :, 1] = 1.0 if self.direction == "forward" else -1.0
        return mean, torch.zeros_like(mean)


def _walk(n: int = 12) -> Transitions:
    """One episode of a ball moving +1 in x each step."""
    obs = np.zeros((n, 2), dtype=np.float32)
    obs[:, 0] = np.arange(n)
    next_obs = obs.copy()
    next_obs[:, 0] += 1
    return Transitions(observations=obs, actions=np.zeros((n, 2), np.float32), rewards=np.zeros(n, np.float32),
                       next_observations=next_obs, terminals=np.zeros(n, bool), timeouts=np.zeros(n, bool),
                       episode_ids=np.zeros(n, int), returns=np.zeros(n, np.float32))


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_open_loop_errors_follow_the_dataset_forwards_or_backwards(direction: str) -> None:
    from romi.analysis.plots import open_loop_errors

    data, starts, horizon = _walk(), np.array([0, 3, 6]), 4
    assert open_loop_errors(_Oracle(direction), data, starts, horizon) == pytest.approx(np.zeros((horizon, 3)))
    # a model that never moves is k steps off after k steps: squared error k^2, averaged over 2 dimensions
    still = open_loop_errors(_Oracle(direction, still=True), data, starts, horizon)
    assert still == pytest.approx(np.repeat([[k * k / 2] for k in range(1, horizon + 1)], 3, axis=1))


def test_where_episodes_go_counts_steps_at_the_goal_and_the_end_position(tmp_path) -> None:
    """Figure 3's episodes in numbers: hand-made trajectories around the goal at (-1, 1)."""
    from romi.analysis.policy_episodes import PolicyEpisodes, where_episodes_go, write_where_policies_go
    from romi.layout import POLICY_EPISODES_FILE

    goal = goal_xy(TASK)
    arrive_and_stay = np.array([[goal[0] + 2, goal[1]], [goal[0] + 1, goal[1]], goal, goal + 0.1, goal + 0.1])
    corner = goal + np.array([-0.4, 0.4])
    overshoot_to_corner = np.array([[goal[0] + 1, goal[1]], goal, corner, corner])
    episodes = PolicyEpisodes(500, 10_000, np.array([3.0, 1.0]),
                              [np.hstack([t, np.zeros_like(t)]) for t in (arrive_and_stay, overshoot_to_corner)])
    table = where_episodes_go(episodes, goal, radius=0.5)
    assert list(table["steps at the goal"]) == [3, 1] and list(table["length"]) == [5, 4]
    assert table["closest to the goal"].tolist() == pytest.approx([0.0, 0.0])
    assert table["end distance to the goal"].tolist() == pytest.approx([0.1 * 2**0.5, 0.4 * 2**0.5])
    assert table["end x"].tolist() == pytest.approx([goal[0] + 0.1, goal[0] - 0.4])
    assert table["end y"].tolist() == pytest.approx([goal[1] + 0.1, goal[1] + 0.4])

    trials = tmp_path / "trials"
    (trials / f"{TASK.name}_ROMI-BCQ_seed1").mkdir(parents=True)
    episodes.save(trials / f"{TASK.name}_ROMI-BCQ_seed1" / POLICY_EPISODES_FILE)
    (trials / f"{TASK.name}_BCQ_seed1").mkdir()  # no kept episodes, no checkpoint: left out
    files = write_where_policies_go(trials, TASK.name, [1], tmp_path / "ends")
    assert [f.name for f in files] == ["ends.md", "ends.csv"]
    written = pd.read_csv(files[1])
    assert list(written["method"]) == ["ROMI-BCQ", "ROMI-BCQ"] and list(written["seed"]) == [1, 1]
    assert "within 0.5 of it" in files[0].read_text()
    assert write_where_policies_go(trials, TASK.name, [2], tmp_path / "none") == []
