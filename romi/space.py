"""How much disk a run, a sweep or a dataset will write: estimates made before the work, so a disk that
cannot take it is refused up front (`romi.io.check_free_space`) instead of failing an hour later.

The estimates are upper-ish bounds from the config alone (parameter counts, steps), never exact sizes: a
checkpoint holds each network, its target copy and Adam's two moments; datasets are measured per step.
"""

from __future__ import annotations

from romi.config import RunConfig
from romi.tasks import TaskSpec

FLOAT = 4
MAZE_BYTES_PER_STEP = 400
"""A maze2d dataset's bytes per step on disk (measured: 343 for 1M steps of umaze, HDF5 overhead included)."""
CHECKPOINTS_KEPT = 2
"""Tune keeps this many checkpoints per trial (`romi.tune.sweep`); `romi train` writes one beside its last."""
MARGIN = 1.25


def learner_bytes(config: RunConfig, task: TaskSpec) -> int:
    """A learner's checkpoint: every parameter four times (network, target copy, Adam's two moments)."""
    from romi.agents import make_agent

    agent = make_agent(config.model_copy(update={"device": "cpu", "precision": "fp32"}), task.obs_dim,
                       task.act_dim, 1.0)
    modules = [getattr(agent, name) for name in ("actor", "critic", "vae", "policy") if hasattr(agent, name)]
    params = sum(p.numel() for module in modules for p in module.parameters())
    return 4 * params * FLOAT


def dynamics_bytes(config: RunConfig, task: TaskSpec) -> int:
    """A dynamics ensemble and its training state (artifacts store): its parameters three times."""
    d = config.dynamics
    inputs, outputs = task.obs_dim + task.act_dim, task.obs_dim + 1
    per_member = inputs * d.hidden_dim + (d.hidden_layers - 1) * d.hidden_dim ** 2 + 2 * d.hidden_dim * outputs
    return 3 * d.ensemble_size * per_member * FLOAT


def run_bytes(config: RunConfig, task: TaskSpec) -> int:
    """What one run writes: its checkpoint (twice, while the atomic write replaces the last) and, for
    ROMI/FOMI, its dynamics model and rollout policy in the artifact store."""
    total = CHECKPOINTS_KEPT * learner_bytes(config, task)
    if config.method_spec.direction is not None:
        total += dynamics_bytes(config, task) + learner_bytes(config, task)  # the rollout policy: a learner's worth
    return int(MARGIN * total)


def dataset_bytes(task: TaskSpec, steps: int) -> int:
    """A home-made dataset of `steps` steps, plus its decoded cache (`romi.data.minari_io.steps_cache_dir`)."""
    # Locomotion: observations (and next ones), actions, rewards and flags, in float64 as Minari stores them.
    per_step = MAZE_BYTES_PER_STEP if task.domain == "maze2d" else 8 * (2 * task.obs_dim + task.act_dim + 4)
    cache = FLOAT * (2 * task.obs_dim + task.act_dim + 4)
    return int(MARGIN * steps * (per_step + cache))
