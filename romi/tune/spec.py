"""Sweep files (`romi/sweeps/*.yaml`, or any path): which tasks x methods x seeds, with what resources.

A sweep file is validated completely before Ray starts: unknown keys, unknown tasks or methods, bad
override values and missing datasets are reported together, each with its fix.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from romi.config import (
    MAX_SEED,
    METHOD_TABLE,
    FrozenModel,
    Method,
    Profile,
    RunConfig,
    build_run_config,
    validation_problems,
)
from romi.errors import ConfigError, DatasetMissingError, RomiError
from romi.layout import trial_name


class TrialResources(FrozenModel):
    cpu: float = Field(1.0, gt=0)
    """CPUs of the trial's own process (learner and evaluation)."""
    gpu: float = Field(0.0, ge=0)
    """GPUs per trial; fractions share a GPU between trials."""
    rollout_workers: int = Field(1, ge=0)
    """Rollout actors of 1 CPU each that build the model buffer (0: in the trial's process)."""


def trial_bundles(method: str, resources: TrialResources) -> list[dict[str, float]]:
    """A trial's placement group: its own process, then one 1-CPU bundle per rollout actor if it imagines."""
    workers = resources.rollout_workers if METHOD_TABLE[method].direction is not None else 0
    return [{"CPU": resources.cpu, "GPU": resources.gpu}] + [{"CPU": 1.0}] * workers


class SweepSpec(FrozenModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    table: int | None = Field(None, ge=1, le=4)
    """The paper table this sweep reproduces (for reports)."""
    tasks: tuple[str, ...] = Field(min_length=1)
    methods: tuple[Method, ...] = Field(min_length=1)
    seeds: int | tuple[int, ...] = 3
    """A count (seeds 0..n-1, at least 1) or an explicit non-empty list of distinct seeds in [0, 2^32)."""
    profile: Profile = "paper"
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Config overrides applied to every trial (nested, as `--set` paths)."""
    resources: TrialResources = TrialResources()
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0)
    """Times a failing trial is retried from its last checkpoint."""
    exclude: tuple[str, ...] = ()
    """Trials of the grid not to run, by name (`<task>_<method>_seed<seed>`): finished elsewhere, e.g. on an
    earlier machine and kept with `romi export` (`romi sweep --exported DIR` fills this in)."""

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, value: int | tuple[int, ...]) -> int | tuple[int, ...]:
        # One check with one message: a union type's own errors would list both alternatives.
        if isinstance(value, int) and value < 1:
            raise ValueError(f"a seed count must be at least 1 (e.g. seeds: 3 for seeds 0, 1, 2), got {value}")
        if isinstance(value, tuple):
            if not value or min(value) < 0 or max(value) > MAX_SEED:
                raise ValueError(f"a seed list must be non-empty with seeds in [0, {MAX_SEED}] (e.g. seeds: "
                                 f"[0, 1, 2]), got {list(value)}")
            if len(set(value)) != len(value):
                raise ValueError(f"seeds {list(value)} repeat a seed (each trial is one seed)")
        return value

    @field_validator("tasks", "methods")
    @classmethod
    def _no_repeats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({item for item in value if value.count(item) > 1})
        if repeated:  # each would run the same trials again
            raise ValueError(f"{', '.join(repeated)} listed more than once (each is one column of trials)")
        return value

    @field_validator("overrides")
    @classmethod
    def _no_device_override(cls, value: dict[str, Any]) -> dict[str, Any]:
        # A trial's device follows the GPUs Tune gives it; a device override would bypass the reservation.
        if value.get("device") not in (None, "cpu"):
            raise ValueError("device is set by resources.gpu in a sweep, not by overrides.device")
        return value

    @model_validator(mode="after")
    def _exclude_names_trials_of_the_grid(self) -> SweepSpec:
        grid = {trial_name({"task": t, "method": m, "seed": s}) for t, m, s in self._cells()}
        unknown = [name for name in self.exclude if name not in grid]
        if unknown:
            raise ValueError(f"exclude names {', '.join(unknown)}, not a trial of this sweep "
                             f"(its trials: {', '.join(sorted(grid))})")
        return self

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seeds)) if isinstance(self.seeds, int) else self.seeds

    def _cells(self) -> Iterable[tuple[str, str, int]]:
        return itertools.product(self.tasks, self.methods, self.seed_list)

    def trial_configs(self) -> list[RunConfig]:
        """Every trial's resolved config, in grid order, less the excluded ones (also validates the
        overrides for every task and method)."""
        excluded = set(self.exclude)
        return [
            build_run_config(task, method, seed, self.profile, self.overrides)
            for task, method, seed in self._cells()
            if trial_name({"task": task, "method": method, "seed": seed}) not in excluded
        ]


SHIPPED_SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
"""The paper's sweep files, installed with the package (`tune_configs/` in a checkout links here)."""


def shipped_sweeps() -> dict[str, Path]:
    """Sweep name -> file, for the sweeps `romi sweep NAME` runs without a checkout."""
    return {path.stem: path for path in sorted(SHIPPED_SWEEPS.glob("*.yaml"))}


def resolve_sweep_path(path_or_name: str | Path) -> Path:
    """A sweep file path, or the name of a shipped sweep (`table1`, `quick`); a path wins if it exists."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = shipped_sweeps()
    if str(path_or_name) in shipped:
        return shipped[str(path_or_name)]
    problem = "is a directory, not a file" if path.is_dir() else "does not exist"
    raise ConfigError(f"sweep file {path} {problem}",
                      f"give a path, or a shipped sweep by name: {', '.join(shipped)} (`romi sweep --list`)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently,
    so `seeds: 3` then `seeds: [0]` would run something the file does not seem to say)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (keep one)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def load_sweep(path: str | Path, profile: str | None = None) -> SweepSpec:
    """Read and validate a sweep file (a path or a shipped sweep's name); `profile` (paper, reduced or
    quick) replaces the file's."""
    path = resolve_sweep_path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"sweep file {path} is not valid YAML: {err}",
                          "fix the YAML syntax at the line and column shown (see tune_configs/quick.yaml)") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"sweep file {path} cannot be read: {err}", "give a readable YAML sweep file") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep file {path} must be a mapping of keys to values",
                          "start from tune_configs/quick.yaml")
    raw.setdefault("name", path.stem)
    if profile is not None:
        raw["profile"] = profile
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(validation_problems(err, SweepSpec))
        raise ConfigError(f"sweep file {path}: {problems}", "fix the named keys") from None
    try:
        spec.trial_configs()
    except RomiError as err:
        raise type(err)(f"sweep file {path}: {err.problem}", err.hint) from None
    return spec


def check_datasets(spec: SweepSpec) -> dict[str, str]:
    """task -> dataset id for every task of the sweep; all missing ones reported at once."""
    from romi.data.minari_io import resolve_dataset_id
    from romi.tasks import get_task

    found, missing = {}, []
    # Each trial's own resolved config says where its data comes from (an override or a profile may set it).
    sources = {config.task: (config.data_source, config.data_recipe) for config in spec.trial_configs()}
    for task in spec.tasks:
        try:
            found[task] = resolve_dataset_id(get_task(task), *sources[task])
        except DatasetMissingError as err:
            missing.append(f"  {task}: {err.hint}")
    if missing:
        raise DatasetMissingError(
            f"sweep {spec.name}: {len(missing)} of {len(spec.tasks)} tasks have no dataset:\n" + "\n".join(missing),
            "get the datasets above, or drop those tasks from the sweep file",
        )
    return found
