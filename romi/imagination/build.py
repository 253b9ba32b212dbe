"""ROMI's imagination stage in one place: the dynamics model and the rollout policy of a dataset,
trained once and shared through the `ArtifactStore`, and the model buffer made from them.

An artifact's identity is (dataset id and fingerprint, direction, seed, sizes, its config): every
run, sweep trial and `romi imagine` that asks for the same identity gets the same trained model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from romi.artifacts import ArtifactStore, artifact_key
from romi.config import DynamicsConfig, RolloutPolicyConfig, RunConfig
from romi.data.minari_io import Dataset
from romi.data.transitions import Transitions
from romi.envs import goal_xy
from romi.errors import ConfigError
from romi.imagination.rollout import BufferRequest, build_buffer_in_process, shard_plan
from romi.models.dynamics import DynamicsModel
from romi.models.rollout_policy import RolloutPolicyModule, build_rollout_policy, train_rollout_policy
from romi.progress import DynamicsEpoch, EpochTimer, Reporter
from romi.rng import spawn
from romi.tasks import TaskSpec
from romi.types import Batch, Direction, Log

TRAINING_RECIPE = 2
"""Part of every model's identity, bumped whenever the code changes what a model trains to from the same
data, seed and config (2: the seed streams of `romi.rng`), so a store never hands a run a model that the
current code would not have trained."""


@dataclass(frozen=True)
class DataIdentity:
    """What identifies the data an artifact was trained on."""

    dataset_id: str
    fingerprint: str
    obs_dim: int
    act_dim: int

    @staticmethod
    def of(dataset: Dataset) -> DataIdentity:
        return DataIdentity(dataset.id, dataset.fingerprint, dataset.transitions.obs_dim, dataset.transitions.act_dim)

    def with_(self, direction: Direction, seed: int) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id, "fingerprint": self.fingerprint, "direction": direction,
                "seed": seed, "obs_dim": self.obs_dim, "act_dim": self.act_dim, "recipe": TRAINING_RECIPE}


@dataclass(frozen=True)
class ArtifactId:
    """What a model is (its kind and everything it depends on) and, from that, its key in the store."""

    kind: str
    identity: dict[str, Any]

    @property
    def key(self) -> str:
        return artifact_key(self.kind, **self.identity)


def dynamics_id(identity: DataIdentity, direction: Direction, seed: int, config: DynamicsConfig) -> ArtifactId:
    """A dynamics model's id (what a sweep's plan asks the store about, and what a trial builds)."""
    return ArtifactId("dynamics", {**identity.with_(direction, seed), "config": config.model_dump()})


def rollout_policy_id(identity: DataIdentity, direction: Direction, seed: int,
                      config: RolloutPolicyConfig) -> ArtifactId:
    """A rollout policy's id (`config.kind` must be resolved)."""
    if config.kind is None:
        raise ValueError("the rollout policy kind must be resolved (RunConfig.resolved) before building it")
    return ArtifactId(f"rollout-{config.kind}",
                      {**identity.with_(direction, seed), "kind": config.kind, "config": config.model_dump()})


FIT_CHECKPOINT_EVERY_S = 60.0
"""How often an unfinished dynamics fit saves its resume state (at most a minute of training is lost)."""


def dynamics_model(store: ArtifactStore, data: Transitions, identity: DataIdentity, task: TaskSpec,
                   direction: Direction, seed: int, config: DynamicsConfig, log: Log = lambda _: None,
                   reporter: Reporter | None = None) -> DynamicsModel:
    """The trained ensemble of `direction` for this data and seed: loaded, or trained and saved once.

    While it trains, `reporter` (default: lines through `log`) hears about every epoch."""
    artifact_id = dynamics_id(identity, direction, seed, config)
    key = artifact_id.key
    reporter = reporter or Reporter(log)

    def fit() -> tuple[DynamicsModel, dict[str, Any]]:
        model = DynamicsModel(data.obs_dim, data.act_dim, config, direction)
        checkpoint = store.scratch(key) / "fit_state.pt"  # an interrupted fit continues from its last epoch
        if checkpoint.is_file():
            log(f"dynamics ({direction}): continuing an interrupted fit from {checkpoint}")
        timer = EpochTimer()  # times this session's epochs only (a resumed fit does not start at 1)

        def on_epoch(epoch: int, info: dict[str, float]) -> None:
            reporter.dynamics_epoch(DynamicsEpoch(
                direction=direction, epoch=epoch, max_epochs=config.max_epochs, patience=config.patience,
                epochs_since_update=int(info["epochs_since_update"]), holdout_mse=info["holdout_mse_best"],
                seconds_per_epoch=timer.epoch_done()))

        report = model.fit(data, keep_terminals=task.domain == "antmaze", seed=seed, checkpoint=checkpoint,
                           checkpoint_every_s=FIT_CHECKPOINT_EVERY_S, progress_callback=on_epoch)
        return model, report.to_dict()

    artifact = store.load_or_build(
        key,
        empty=lambda: DynamicsModel(data.obs_dim, data.act_dim, config, direction),
        build=fit,
        identity=artifact_id.identity,
    )
    reporter.dynamics_done(direction)
    if artifact.built:
        info = artifact.info
        resumed = (f" (continued from epoch {info['resumed_from_epoch']}: {info['train_seconds']:.1f} s in this run)"
                   if info["resumed_from_epoch"] else "")
        log(f"dynamics ({direction}): trained in {info['epochs']} epochs, {info['total_seconds']:.1f} s"
            f"{resumed}, elite holdout MSE {min(info['holdout_mse']):.4g} -> {artifact.path}")
    else:
        log(f"dynamics ({direction}): loaded {artifact.path}")
    return artifact.module.eval()  # type: ignore[return-value]


def rollout_policy(store: ArtifactStore, data: Transitions, identity: DataIdentity, direction: Direction,
                   seed: int, config: RolloutPolicyConfig, max_action: float, log: Log = lambda _: None
                   ) -> RolloutPolicyModule:
    """The trained rollout policy (`config.kind`, resolved) of `direction`: loaded, or trained once."""
    artifact_id = rollout_policy_id(identity, direction, seed, config)
    kind = artifact_id.identity["kind"]
    artifact = store.load_or_build(
        artifact_id.key,
        empty=lambda: build_rollout_policy(kind, data.obs_dim, data.act_dim, max_action, config),
        build=lambda: train_rollout_policy(kind, data, direction, config, max_action, seed=seed),
        identity=artifact_id.identity,
    )
    log(f"rollout policy ({kind}, {direction}): {'trained' if artifact.built else 'loaded'}")
    return artifact.module.eval()  # type: ignore[return-value]


def buffer_request(model: DynamicsModel, policy: RolloutPolicyModule, data: Transitions, task: TaskSpec, *,
                   size: int, shard_size: int, horizon: int, start_batch_size: int, seed: int,
                   start_weights: np.ndarray | None, device: str) -> BufferRequest:
    """Everything a buffer builder (in process or Ray actors) needs to make the model buffer."""
    return BufferRequest(
        model=model,  # type: ignore[arg-type]
        policy=policy,  # type: ignore[arg-type]
        start_pool=torch.as_tensor(data.anchor_states, device=device),
        start_weights=None if start_weights is None else torch.as_tensor(start_weights, device=device),
        plan=shard_plan(size, shard_size, base_seed=spawn(seed, "imagination")),
        horizon=horizon,
        domain=task.domain,
        goal=goal_xy(task) if task.domain == "antmaze" else None,
        start_batch_size=start_batch_size,
    )


BufferBuilder = Callable[[BufferRequest], Batch]
"""Builds the model buffer of a request (in process, or Ray actors: `romi.imagination.workers`); the result
depends only on the plan's seeds."""


BUFFER_COPIES = 2
"""Peak copies of the buffer in memory while it is made: the shards, then their concatenation."""


def buffer_bytes(size: int, obs_dim: int, act_dim: int) -> int:
    """Bytes of a model buffer of `size` float32 transitions (s, a, r, s', done)."""
    return size * (2 * obs_dim + act_dim + 2) * 4


def available_memory() -> int | None:
    """Bytes this machine can still give (Linux's MemAvailable), or None where it cannot tell."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_buffer_fits(config: RunConfig, obs_dim: int, act_dim: int) -> None:
    """Refuse, before minutes of dynamics training, a model buffer this machine cannot hold."""
    need = BUFFER_COPIES * buffer_bytes(config.imagination.buffer_size, obs_dim, act_dim)
    have = available_memory()
    if have is not None and need > have:
        raise ConfigError(
            f"a model buffer of {config.imagination.buffer_size:,} transitions needs about {need / 1e9:,.1f} GB "
            f"while it is made ({BUFFER_COPIES} copies of {need / BUFFER_COPIES / 1e9:,.1f} GB), "
            f"and this machine has {have / 1e9:,.1f} GB available",
            "lower imagination.buffer_size (the paper's is 4,000,000), or run on a machine with more memory")


def model_buffer(store: ArtifactStore, data: Transitions, identity: DataIdentity, task: TaskSpec,
                 config: RunConfig, max_action: float, builder: BufferBuilder, start_weights: np.ndarray | None,
                 log: Log = lambda _: None, reporter: Reporter | None = None) -> tuple[Batch, dict[str, float]]:
    """ROMI's stage (FOMI's with a forward model): the run's dynamics model and rollout policy from the
    artifact store (trained once), then the model buffer of imagined rollouts anchored on dataset states.
    Returns the buffer and the seconds each part took."""
    direction = config.method_spec.direction
    if direction is None:
        raise ValueError(f"{config.method} imagines nothing: it has no model buffer")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    dynamics = dynamics_model(store, data, identity, task, direction, config.seed, config.dynamics, log, reporter)
    seconds["dynamics"] = time.perf_counter() - started
    started = time.perf_counter()
    policy = rollout_policy(store, data, identity, direction, config.seed, config.rollout_policy, max_action, log)
    seconds["rollout_policy"] = time.perf_counter() - started

    imagination = config.imagination
    request = buffer_request(
        dynamics, policy, data, task, size=imagination.buffer_size, shard_size=imagination.shard_size,
        horizon=imagination.horizon or task.paper.horizon, start_batch_size=imagination.start_batch_size,
        seed=config.seed, start_weights=start_weights, device=config.device,
    )
    started = time.perf_counter()
    buffer = build_buffer_in_process(request, log) if builder is build_buffer_in_process else builder(request)
    seconds["imagination"] = elapsed = time.perf_counter() - started
    log(f"model buffer: {len(buffer):,} transitions in {elapsed:.1f} s ({len(buffer) / max(elapsed, 1e-9):,.0f}/s)")
    return buffer, seconds
