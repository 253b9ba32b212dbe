"""The registry of the paper's 24 tasks (Tables 1-4) and their paper-profile settings.

One `TaskSpec` per row of the paper's tables. Everything a run needs to know about a task that is
not a learner hyper-parameter lives here: which Minari datasets hold its data (the official id and
our home-made `local/...` twin), how to build its evaluation environment, its D4RL reference
scores, and the ROMI settings the paper used for it (spec §3).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from romi.errors import UnknownTaskError
from romi.types import RolloutKind

Domain = Literal["maze2d", "antmaze", "hopper", "walker2d", "halfcheetah"]
Recipe = Literal["maze", "locomotion-random", "locomotion-sac"]


@dataclass(frozen=True)
class PaperProfile:
    """ROMI's per-task settings in the paper (spec §3)."""

    horizon: int
    model_share: float
    rollout_policy: RolloutKind
    return_weighted: bool


@dataclass(frozen=True)
class TaskSpec:
    name: str
    domain: Domain
    official_id: str | None
    """Official Minari dataset id, or None where Minari has no such dataset (then only local data)."""
    local_id: str
    """Our home-made twin under the `local/` namespace (made by `romi data make`), by the default recipe."""
    recipe: Recipe | None
    """How `romi data make` builds the local dataset; None where it cannot be made here (antmaze)."""
    env_id: str
    """Gymnasium id of the simulator the data comes from."""
    horizon: int
    """Evaluation episode length."""
    obs_dim: int
    """Flat observation size the learners see (maze2d: x, y, vx, vy; antmaze: x, y + the ant's 27)."""
    act_dim: int
    d4rl_ref_min: float
    d4rl_ref_max: float
    paper: PaperProfile
    tables: tuple[int, ...]
    goal_cell: tuple[int, int] | None = None
    """Maze tasks: the fixed evaluation goal, (row, col) of the maze map (D4RL's convention)."""
    reset_cell: tuple[int, int] | None = None
    """Antmaze: the fixed start cell of evaluation episodes."""
    reward_type: Literal["sparse", "dense"] | None = None
    dataset_kind: str = ""
    """random / medium / medium-replay / medium-expert / expert for locomotion; fixed/play/diverse."""
    data_recipes: tuple[tuple[str, str], ...] = ()
    """(recipe, local dataset id) for each way `romi data make` can build this task's data, the default
    (whose id is `local_id`) first. maze2d: `d4rl` (D4RL's generator, the paper's data) and `minari`
    (Minari's regeneration scripts, as the official `D4RL/pointmaze` datasets). Empty: one recipe."""

    @property
    def is_maze(self) -> bool:
        return self.domain in ("maze2d", "antmaze")

    @property
    def default_data_recipe(self) -> str | None:
        return self.data_recipes[0][0] if self.data_recipes else None

    def local_dataset_id(self, recipe: str | None = None) -> str:
        """The local dataset id of `recipe` (None: the default recipe's, `local_id`)."""
        if recipe is None or recipe == self.default_data_recipe:
            return self.local_id
        recipes = dict(self.data_recipes)
        if recipe not in recipes:
            known = ", ".join(recipes) if recipes else "none: its data has one recipe"
            raise UnknownTaskError(f"task {self.name} has no data recipe {recipe!r}", f"recipes: {known}")
        return recipes[recipe]


_MAZE2D = {
    # layout: (gymnasium name, goal cell, horizon, d4rl sparse refs, d4rl dense refs, model share)
    "umaze": ("UMaze", (1, 1), 300, (23.85, 161.86), (68.54, 193.66), 0.7),
    "medium": ("Medium", (6, 6), 600, (13.13, 277.39), (44.26, 297.46), 0.5),
    "large": ("Large", (7, 9), 800, (6.7, 273.99), (30.57, 303.49), 0.3),
}

# D4RL's antmaze evaluation mazes: start at (1, 1), one fixed goal cell.
_ANTMAZE = {
    # task suffix: (official dataset name, gymnasium layout, goal cell, horizon, dataset kind)
    "umaze": ("umaze", "UMaze", (3, 1), 700, "fixed"),
    "umaze-diverse": ("umaze-diverse", "UMaze", (3, 1), 700, "diverse"),
    "medium-play": ("medium-play", "Medium", (6, 6), 1000, "play"),
    "medium-diverse": ("medium-diverse", "Medium", (6, 6), 1000, "diverse"),
    "large-play": ("large-play", "Large", (7, 9), 1000, "play"),
    "large-diverse": ("large-diverse", "Large", (7, 9), 1000, "diverse"),
}

_LOCOMOTION = {
    # env: (gymnasium id, (obs dim, act dim), d4rl refs, paper rollout policy, paper horizon)
    "hopper": ("Hopper-v5", (11, 3), (-20.272305, 3234.3), "uniform", 5),
    "walker2d": ("Walker2d-v5", (17, 6), (1.629008, 4592.3), "cvae", 1),
    "halfcheetah": ("HalfCheetah-v5", (17, 6), (-280.178953, 12135.0), "cvae", 1),
}
_LOCOMOTION_KINDS = ("random", "medium", "medium-replay", "medium-expert")
# Minari publishes only medium and expert for these; random, medium-replay and medium-expert are made.
_OFFICIAL_LOCOMOTION = ("medium",)


def _build_registry() -> dict[str, TaskSpec]:
    tasks: dict[str, TaskSpec] = {}
    for layout, (gym_name, goal, horizon, sparse_refs, dense_refs, share) in _MAZE2D.items():
        for reward_type, refs in (("sparse", sparse_refs), ("dense", dense_refs)):
            dense = "Dense" if reward_type == "dense" else ""
            suffix = "-dense" if reward_type == "dense" else ""
            name = f"maze2d-{layout}-{reward_type}"
            tasks[name] = TaskSpec(
                name=name,
                domain="maze2d",
                official_id=f"D4RL/pointmaze/{layout}{suffix}-v2",
                local_id=f"local/pointmaze/{layout}{suffix}-d4rl-v0",
                # The Minari recipe keeps the id its data always had (results made on it name it).
                data_recipes=(("d4rl", f"local/pointmaze/{layout}{suffix}-d4rl-v0"),
                              ("minari", f"local/pointmaze/{layout}{suffix}-v0")),
                recipe="maze",
                env_id=f"PointMaze_{gym_name}{dense}-v3",
                horizon=horizon,
                obs_dim=4,
                act_dim=2,
                d4rl_ref_min=refs[0],
                d4rl_ref_max=refs[1],
                paper=PaperProfile(horizon=5, model_share=share, rollout_policy="uniform", return_weighted=False),
                tables=(1, 3),
                goal_cell=goal,
                reward_type=reward_type,
                dataset_kind=reward_type,
            )
    for suffix, (official, gym_layout, goal, horizon, kind) in _ANTMAZE.items():
        name = f"antmaze-{suffix}"
        tasks[name] = TaskSpec(
            name=name,
            domain="antmaze",
            official_id=f"D4RL/antmaze/{official}-v1",
            local_id=f"local/antmaze/{official}-v0",
            recipe=None,
            env_id=f"AntMaze_{gym_layout}-v4",  # v4 like the official Minari data: 27-dim ant obs
            horizon=horizon,
            obs_dim=29,
            act_dim=8,
            d4rl_ref_min=0.0,
            d4rl_ref_max=1.0,
            paper=PaperProfile(horizon=5, model_share=0.1, rollout_policy="cvae", return_weighted=True),
            tables=(1, 3, 4),
            goal_cell=goal,
            reset_cell=(1, 1),
            reward_type="sparse",
            dataset_kind=kind,
        )
    for env, (env_id, dims, refs, rollout, h) in _LOCOMOTION.items():
        for kind in _LOCOMOTION_KINDS:
            name = f"{env}-{kind}"
            tasks[name] = TaskSpec(
                name=name,
                domain=env,  # type: ignore[arg-type]
                official_id=f"mujoco/{env}/{kind}-v0" if kind in _OFFICIAL_LOCOMOTION else None,
                local_id=f"local/{env}/{kind}-v0",
                recipe="locomotion-random" if kind == "random" else "locomotion-sac",
                env_id=env_id,
                horizon=1000,
                obs_dim=dims[0],
                act_dim=dims[1],
                d4rl_ref_min=refs[0],
                d4rl_ref_max=refs[1],
                paper=PaperProfile(horizon=h, model_share=0.1, rollout_policy=rollout, return_weighted=True),
                tables=(2,),
                dataset_kind=kind,
            )
    return tasks


TASKS: Mapping[str, TaskSpec] = MappingProxyType(_build_registry())


def _dataset_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for task in TASKS.values():
        index[task.local_id] = task.name
        for _, dataset_id in task.data_recipes:
            index[dataset_id] = task.name
        if task.official_id is not None:
            # The sparse and dense maze tasks have their own official datasets, so the map is 1:1.
            index.setdefault(task.official_id, task.name)
    return index


DATASET_TO_TASK: Mapping[str, str] = MappingProxyType(_dataset_index())


def get_task(name: str) -> TaskSpec:
    """The task called `name`, or a dataset id that belongs to one; a clear error with suggestions otherwise."""
    if name in TASKS:
        return TASKS[name]
    if name in DATASET_TO_TASK:
        return TASKS[DATASET_TO_TASK[name]]
    candidates = list(TASKS) + list(DATASET_TO_TASK)
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run `romi data list` to see every task"
    raise UnknownTaskError(f"unknown task or dataset id {name!r}", hint)


def tasks_in_table(table: int) -> list[TaskSpec]:
    return [task for task in TASKS.values() if table in task.tables]
