"""One (task, method, seed) run as a sequence of stages, shared by `romi train` and the Tune trainable.

    data -> [dynamics model, rollout policy] -> [model buffer] -> mixed sampler -> learner -> evaluation

A method is a row of `METHOD_TABLE`: plain BCQ/CQL skip the bracketed stages. Models and rollout
policies come from the `ArtifactStore` (trained once per dataset, direction, seed and config); the
model buffer is rebuilt deterministically from its seed, by a pluggable builder (in-process here,
Ray actors in `romi.tune`). `Run.state_dict()` holds everything the next gradient step depends on,
so a run restored from a checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from romi.artifacts import ArtifactStore, artifact_key
from romi.config import RunConfig
from romi.data.minari_io import load_transitions, read_metadata, resolve_dataset_id
from romi.data.tasks import TaskSpec, get_task
from romi.data.transitions import Transitions
from romi.envs import goal_xy, make_eval_env
from romi.evaluation import DiscrepancyIndex, evaluate, normalized_score
from romi.imagination.rollout import BufferRequest, Rollouts, build_buffer_in_process, shard_plan
from romi.imagination.sampler import MixedSampler, return_weights
from romi.models.dynamics import DynamicsModel
from romi.models.rollout_policy import build_rollout_policy, train_rollout_policy

Log = Callable[[str], None]


BufferBuilder = Callable[[BufferRequest], Rollouts]
"""Builds the model buffer of a request; the result depends only on the plan's seeds."""


@dataclass
class EvalRecord:
    """One evaluation: what Tune reports and what `metrics.jsonl` holds, one line each."""

    step: int
    score: float
    """Mean return normalised with D4RL's reference scores (0 random, 100 expert)."""
    score_local: float
    """Normalised with the dataset's own reference scores, measured on our evaluation env (the
    headline for home-made `local/...` datasets; for official ones the refs their metadata carries)."""
    return_mean: float
    return_std: float
    discrepancy: float
    """Average trajectory discrepancy to the dataset (paper eq. 5)."""
    steps_per_second: float
    wall_time: float
    train: dict[str, float] = field(default_factory=dict)
    """Training metrics averaged since the previous evaluation."""
    dataset_id: str = ""
    """The dataset trained on: `local/...` ones are scored with `score_local` in the tables."""
    method_label: str = ""
    """The method as tables name it, with a tag for each setting off the paper's (`BCQ (rw)`)."""

    def flat(self) -> dict[str, float | str]:
        record = asdict(self)
        train = record.pop("train")
        return {**record, **{f"train/{k}": v for k, v in train.items()}}


class Run:
    """A single (task, method, seed) run: `setup()`, then iterate `train()` for evaluations."""

    def __init__(
        self,
        config: RunConfig,
        artifacts: ArtifactStore,
        *,
        buffer_builder: BufferBuilder = build_buffer_in_process,
        log: Log = lambda message: None,
    ) -> None:
        self.config = config.resolved()
        self.task: TaskSpec = get_task(self.config.task)
        self.artifacts = artifacts
        self.buffer_builder = buffer_builder
        self.log = log
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.stage_seconds: dict[str, float] = {}
        self._wall_offset = 0.0

    # ------------------------------------------------------------------------------------
    # Stages
    # ------------------------------------------------------------------------------------
    def setup(self) -> None:
        config, task = self.config, self.task
        torch.manual_seed(config.seed)  # library code draws from explicit generators; this is a backstop
        started = time.perf_counter()
        self.dataset_id = resolve_dataset_id(task, config.data_source)
        self.data = load_transitions(self.dataset_id)
        self.dataset_fingerprint = _fingerprint(self.dataset_id)
        self.log(f"data: {self.dataset_id} ({len(self.data):,} transitions, {self.data.num_episodes:,} episodes)")
        for setting in config.deviations().values():
            self.log(f"differs from the paper: {setting}")
        self.stage_seconds["data"] = time.perf_counter() - started

        self.env = make_eval_env(task)
        self.max_action = float(self.env.action_space.high[0])
        meta = read_metadata(self.dataset_id)
        self.local_refs = (
            float(meta.get("ref_min_score", task.d4rl_ref_min)),
            float(meta.get("ref_max_score", task.d4rl_ref_max)),
        )
        self.discrepancy = DiscrepancyIndex(self.data.observations)

        real_weights = return_weights(self.data.returns) if config.return_weighted else None
        model_buffer = self._model_buffer(real_weights) if config.method_spec.direction else None
        self.sampler = MixedSampler(
            self.data,
            model_buffer,
            model_share=config.model_share or 0.0,
            real_weights=real_weights,
            batch_size=self._learner_config.batch_size,
            seed=config.seed,
            device=config.device,
        )
        self.agent = self._make_agent()
        self.stage_seconds["setup_total"] = time.perf_counter() - started

    @property
    def _learner_config(self):
        return self.config.bcq if self.config.method_spec.learner == "bcq" else self.config.cql

    def _make_agent(self):
        from romi.agents.bcq import BCQ
        from romi.agents.cql import CQL

        cls = BCQ if self.config.method_spec.learner == "bcq" else CQL
        return cls(self.data.obs_dim, self.data.act_dim, self.max_action, self._learner_config,
                   seed=self.config.seed, device=self.config.device)

    def _model_buffer(self, real_weights: np.ndarray | None) -> Rollouts:
        config, task = self.config, self.task
        direction = config.method_spec.direction
        assert direction is not None
        identity = {"dataset_id": self.dataset_id, "fingerprint": self.dataset_fingerprint,
                    "direction": direction, "seed": config.seed,
                    "obs_dim": self.data.obs_dim, "act_dim": self.data.act_dim}

        started = time.perf_counter()
        dynamics_identity = {**identity, "config": config.dynamics.model_dump()}
        dynamics = self.artifacts.load_or_build(
            artifact_key("dynamics", **dynamics_identity),
            empty=lambda: DynamicsModel(self.data.obs_dim, self.data.act_dim, config.dynamics, direction),
            build=lambda: self._fit_dynamics(direction),
            identity=dynamics_identity,
        )
        self.log(f"dynamics ({direction}): {'trained' if dynamics.built else 'loaded'} {dynamics.path}")
        self.stage_seconds["dynamics"] = time.perf_counter() - started

        started = time.perf_counter()
        kind = config.rollout_policy.kind
        assert kind is not None
        policy_identity = {**identity, "kind": kind, "config": config.rollout_policy.model_dump()}
        policy = self.artifacts.load_or_build(
            artifact_key(f"rollout-{kind}", **policy_identity),
            empty=lambda: build_rollout_policy(kind, self.data.obs_dim, self.data.act_dim, self.max_action,
                                               config.rollout_policy),
            build=lambda: train_rollout_policy(kind, self.data, direction, config.rollout_policy,
                                               self.max_action, seed=config.seed),
            identity=policy_identity,
        )
        self.log(f"rollout policy ({kind}, {direction}): {'trained' if policy.built else 'loaded'}")
        self.stage_seconds["rollout_policy"] = time.perf_counter() - started

        # Start states are the dataset's `observations` in both directions, as in the official code
        # (`model_utils.py`): reverse rollouts take them as s' and imagine backwards, so every imagined
        # trajectory ends in a dataset state; forward ones take them as s. The `observations` field
        # never holds a terminal state (hopper/walker falls, antmaze goals are only `next_observations`).
        pool = self.data.observations
        started = time.perf_counter()
        imagination = config.imagination
        plan = shard_plan(imagination.buffer_size, imagination.shard_size, base_seed=config.seed)
        dynamics.module.eval()
        policy.module.eval()
        buffer = self.buffer_builder(BufferRequest(
            model=dynamics.module,  # type: ignore[arg-type]
            policy=policy.module,  # type: ignore[arg-type]
            start_pool=torch.as_tensor(pool, device=config.device),
            start_weights=None if real_weights is None else torch.as_tensor(real_weights, device=config.device),
            plan=plan,
            horizon=imagination.horizon or task.paper.horizon,
            domain=task.domain,
            goal=goal_xy(task) if task.domain == "antmaze" else None,
            start_batch_size=imagination.start_batch_size,
        ))
        seconds = time.perf_counter() - started
        self.stage_seconds["imagination"] = seconds
        self.log(f"model buffer: {len(buffer):,} transitions in {seconds:.1f} s ({len(buffer) / seconds:,.0f}/s)")
        return buffer

    def _fit_dynamics(self, direction: str) -> tuple[DynamicsModel, dict[str, Any]]:
        model = DynamicsModel(self.data.obs_dim, self.data.act_dim, self.config.dynamics, direction)  # type: ignore[arg-type]
        report = model.fit(
            self.data, keep_terminals=self.task.domain == "antmaze", seed=self.config.seed,
            progress_callback=lambda epoch, info: self.log(f"dynamics epoch {epoch}: {info}")
            if epoch % 10 == 0 else None,
        )
        return model, report.to_dict()

    # ------------------------------------------------------------------------------------
    # Training and evaluation
    # ------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.step >= (self.config.gradient_steps or 0)

    def train(self) -> Iterator[EvalRecord]:
        """Gradient steps until the end, yielding an `EvalRecord` at every evaluation point."""
        every = self.config.eval.every
        total = self.config.gradient_steps or 0
        sums: dict[str, float] = {}
        count = 0
        window_start = time.perf_counter()
        while self.step < total:
            metrics = self.agent.update(self.sampler.sample())
            self.step += 1
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            if self.step % every == 0 or self.step == total:
                elapsed = time.perf_counter() - window_start
                record = self.evaluate(
                    train={k: v / count for k, v in sums.items()}, steps_per_second=count / max(elapsed, 1e-9)
                )
                sums, count = {}, 0
                yield record
                window_start = time.perf_counter()

    def evaluate(self, train: dict[str, float] | None = None, steps_per_second: float = 0.0) -> EvalRecord:
        config, task = self.config, self.task
        # Each evaluation point has its own seed, so an evaluation is reproducible on its own.
        result = evaluate(self.agent.act, self.env, episodes=config.eval.episodes,
                          seed=config.seed * 1_000_003 + self.step, record_states=True)
        returns = np.asarray(result.returns, dtype=np.float64)
        record = EvalRecord(
            step=self.step,
            score=float(normalized_score(returns, task.d4rl_ref_min, task.d4rl_ref_max).mean()),
            score_local=float(normalized_score(returns, *self.local_refs).mean()),
            return_mean=float(returns.mean()),
            return_std=float(returns.std()),
            discrepancy=float(self.discrepancy.query(result.trajectories)),
            steps_per_second=steps_per_second,
            wall_time=self._wall_offset + time.perf_counter() - self._started_at,
            train=train or {},
            dataset_id=self.dataset_id,
            method_label=config.method_label,
        )
        self.history.append(record.flat())
        return record

    def start_clock(self) -> None:
        self._started_at = time.perf_counter()

    def summary(self) -> dict[str, Any]:
        """Final and last-k mean scores (spec §6), plus where the time went."""
        k = self.config.eval.last_k
        scores = [h["score"] for h in self.history]
        local = [h["score_local"] for h in self.history]
        return {
            "task": self.config.task,
            "method": self.config.method,
            "seed": self.config.seed,
            "method_label": self.config.method_label,
            "deviations": self.config.deviations(),
            "dataset_id": self.dataset_id,
            "steps": self.step,
            "final_score": scores[-1] if scores else float("nan"),
            "last_k_score": float(np.mean(scores[-k:])) if scores else float("nan"),
            "final_score_local": local[-1] if local else float("nan"),
            "last_k_score_local": float(np.mean(local[-k:])) if local else float("nan"),
            "stage_seconds": self.stage_seconds,
        }

    # ------------------------------------------------------------------------------------
    # Checkpointing
    # ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_json(),
            "step": self.step,
            "history": self.history,
            "agent": self.agent.state_dict(),
            "sampler": self.sampler.state_dict(),
            "wall_time": self._wall_offset + time.perf_counter() - self._started_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = json.loads(state["config"])
        if saved != json.loads(self.config.to_json()):
            raise ValueError("checkpoint was written by a run with a different config")
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.agent.load_state_dict(state["agent"])
        self.sampler.load_state_dict(state["sampler"])
        self._wall_offset = float(state["wall_time"])
        self._started_at = time.perf_counter()


def _fingerprint(dataset_id: str) -> str:
    """What identifies a dataset's content for artifact keys: its id, size and creation record."""
    meta = read_metadata(dataset_id)
    keys = ("dataset_id", "total_steps", "total_episodes", "romi_seed", "romi_generation_seconds", "minari_version")
    return json.dumps({k: meta.get(k) for k in keys}, sort_keys=True)


def transitions_summary(data: Transitions) -> dict[str, float]:
    return {"transitions": len(data), "episodes": data.num_episodes, "mean_reward": float(data.rewards.mean())}
