"""One (task, method, seed) run as a sequence of stages, shared by `romi train` and the Tune trainable.

    data -> [dynamics model, rollout policy] -> [model buffer] -> mixed sampler -> learner -> evaluation

A method is a row of `METHOD_TABLE`: plain BCQ/CQL skip the bracketed stages. Models and rollout
policies come from the `ArtifactStore` (trained once per dataset, direction, seed and config); the
model buffer is rebuilt deterministically from its seed, by a pluggable builder (in process, or Ray
actors: `romi.imagination.workers`). A `Run` is ready to train when constructed. `Run.save(dir)` writes
everything the next gradient step depends on (`romi.layout`); `read_state` + `load_state_dict`
continue from it exactly as if the run had never stopped. The two drivers (`romi.train`,
`romi.tune.trainable`) differ only in where that directory lives.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from romi.agents import learner_config, make_agent
from romi.artifacts import ArtifactStore
from romi.config import RunConfig, same_config
from romi.data.minari_io import load_dataset
from romi.data.transitions import Transitions
from romi.divergence import ValueBound, diverged_at
from romi.envs import make_eval_env
from romi.errors import CheckpointError, TrainingDivergedError
from romi.evaluation import Evaluator, Scores
from romi.imagination import build
from romi.imagination.build import BufferBuilder, DataIdentity
from romi.imagination.rollout import build_buffer_in_process
from romi.imagination.sampler import MixedSampler, return_weights
from romi.io import atomic_torch_save, atomic_write_text
from romi.layout import EVALUATIONS_FILE, STATE_FILE, evaluation_lines
from romi.nets import cpu_kind, has_native_bf16
from romi.progress import Reporter
from romi.tasks import TaskSpec, get_task
from romi.types import Log

PROGRESS_EVERY = 50
"""Gradient steps between two calls of `Reporter.gradient_steps`: a bar that moves about every second
at paper sizes on a CPU, for a cost (one call) far below that of a gradient step."""


@dataclass(frozen=True, kw_only=True)
class EvalRecord(Scores):
    """One evaluation: its `Scores` and where the run stood. `flat()` is a line of `evaluations.jsonl`
    (with the trial's identity and `done_fraction`, added by `Run`) and what Tune reports."""

    step: int
    steps_per_second: float
    wall_time: float
    train: dict[str, float] = field(default_factory=dict)
    """Training metrics averaged since the previous evaluation."""
    dataset_id: str = ""
    """The dataset trained on: `local/...` ones are scored with `score_local` in the tables."""
    method_label: str = ""
    """The method as tables name it, with a tag for each setting off the paper's (`BCQ (rw)`)."""
    value_bound_low: float | None = None
    value_bound_high: float | None = None
    """The range every true Q lies in on the rewards this run trains on (`romi.divergence`): a `train/q_mean`
    outside it means the critic has diverged. None when unbounded (gamma = 1), as JSON has no inf."""
    cpu: str = ""
    """The CPU the steps up to this evaluation ran on (`romi.nets.cpu_kind`; a run resumed on another
    machine changes it mid-run): numbers are bit-for-bit reproducible on the same kind only."""

    def flat(self) -> dict[str, float | str]:
        record = asdict(self)
        train = record.pop("train")
        return {**record, **{f"train/{k}": v for k, v in train.items()}}


def cpus_of(records: list[dict[str, Any]]) -> list[str]:
    """The kinds of CPU a run's evaluations were computed on, in order (one, unless it moved machines)."""
    return list(dict.fromkeys(str(r["cpu"]) for r in records if r.get("cpu")))


class Run:
    """A single (task, method, seed) run, ready to train once constructed: iterate `train()` for
    evaluations, `save(dir)` after any of them."""

    def __init__(self, config: RunConfig, artifacts: ArtifactStore, *,
                 buffer_builder: BufferBuilder = build_buffer_in_process, log: Log = lambda message: None,
                 reporter: Reporter | None = None) -> None:
        self.config = config = config.resolved()
        task = get_task(config.task)
        self.task: TaskSpec = task
        self.log = log
        self.reporter = reporter or Reporter(log)
        self.history: list[dict[str, Any]] = []
        """Every evaluation so far, as `evaluations.jsonl` holds them (see `romi.layout`)."""
        self.stage_seconds: dict[str, float] = {}
        torch.manual_seed(config.seed)  # library code draws from explicit generators; this is a backstop

        started = time.perf_counter()
        self.dataset = dataset = load_dataset(task, config.data_source, config.data_recipe)
        data = dataset.transitions
        log(f"data: {self.dataset_id} ({len(data):,} transitions, {data.num_episodes:,} episodes); compute: "
            f"{torch.get_num_threads()} torch thread(s) on {cpu_kind()}")
        for setting in config.deviations().values():
            log(f"differs from the paper: {setting}")
        if config.precision == "bf16" and has_native_bf16(torch.device(config.device)) is False:
            log(f"precision bf16 on {config.device} without native bf16 matmuls (capability "
                f"{torch.backends.cpu.get_cpu_capability()}): torch emulates them, expect it slower than fp32")
        self.stage_seconds["data"] = time.perf_counter() - started

        if config.method_spec.direction is not None:  # before minutes of model training, not after
            build.check_buffer_fits(config, data.obs_dim, data.act_dim)
        env = make_eval_env(task)
        max_action = float(env.action_space.high[0])
        self.evaluator = Evaluator(env, data.observations, episodes=config.eval.episodes, seed=config.seed,
                                   d4rl_refs=dataset.d4rl_refs, local_refs=dataset.local_refs)

        real_weights = return_weights(data.returns) if config.return_weighted else None
        buffer = None
        if config.method_spec.direction is not None:  # ROMI / FOMI: the model buffer (romi.imagination.build)
            identity = DataIdentity.of(dataset)
            buffer, seconds = build.model_buffer(artifacts, data, identity, task, config, max_action, buffer_builder,
                                                 real_weights, log, self.reporter)
            self.stage_seconds.update(seconds)
        rewards = [float(data.rewards.min()), float(data.rewards.max())]
        if buffer is not None and len(buffer):
            rewards += [float(buffer.rewards.min()), float(buffer.rewards.max())]
        self.value_bound = ValueBound.of(min(rewards), max(rewards), learner_config(config).gamma)
        """Where Q must stay on this run's rewards (dataset, and model buffer when there is one)."""
        log(f"value bound: Q in [{self.value_bound.low:g}, {self.value_bound.high:g}] (rewards in "
            f"[{min(rewards):g}, {max(rewards):g}], gamma {learner_config(config).gamma:g}); a mean Q outside it "
            "is flagged as diverged")
        self.sampler = MixedSampler(data, buffer, model_share=config.model_share or 0.0, real_weights=real_weights,
                                    batch_size=learner_config(config).batch_size, seed=config.seed,
                                    device=config.device)
        self.agent = make_agent(config, data.obs_dim, data.act_dim, max_action)
        self.stage_seconds["setup_total"] = time.perf_counter() - started
        self._wall_offset, self._started_at = 0.0, time.perf_counter()  # wall time: from here, plus a restored run's

    @property
    def dataset_id(self) -> str:
        return self.dataset.id

    @property
    def data(self) -> Transitions:
        return self.dataset.transitions

    @property
    def step(self) -> int:
        """Gradient steps taken: the learner's own count (one counter, saved with the learner)."""
        return self.agent.step

    @property
    def finished(self) -> bool:
        return self.step >= (self.config.gradient_steps or 0)

    def train(self) -> Iterator[EvalRecord]:
        """Gradient steps until the end, yielding an `EvalRecord` at every evaluation point."""
        every, total = self.config.eval.every, self.config.gradient_steps or 0
        sums: dict[str, float] = {}
        count, window_start = 0, time.perf_counter()
        self.reporter.gradient_steps(self.step, total)  # where a resumed run starts
        while self.step < total:
            metrics = self.agent.update(self.sampler.sample())
            if self.step % PROGRESS_EVERY == 0:
                self.reporter.gradient_steps(self.step, total)
            check_finite(metrics, "loss", self.config, self.step)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            if self.step % every == 0 or self.step == total:
                rate = count / max(time.perf_counter() - window_start, 1e-9)
                yield self.evaluate(train={k: v / count for k, v in sums.items()}, steps_per_second=rate)
                sums, count, window_start = {}, 0, time.perf_counter()

    def evaluate(self, train: dict[str, float] | None = None, steps_per_second: float = 0.0) -> EvalRecord:
        config = self.config
        record = EvalRecord(
            **asdict(self.evaluator(self.agent.act, self.step)), step=self.step, steps_per_second=steps_per_second,
            wall_time=self._wall_offset + time.perf_counter() - self._started_at, train=train or {},
            dataset_id=self.dataset_id, method_label=config.method_label, **self.value_bound.as_record(),
            cpu=cpu_kind())
        check_finite(record.flat(), "evaluation", config, self.step)
        identity = {"task": config.task, "method": config.method, "seed": config.seed, "profile": config.profile}
        self.history.append({**identity, **record.flat(), "done_fraction": self.step / (config.gradient_steps or 1)})
        return record

    def summary(self) -> dict[str, Any]:
        """Final and last-k mean scores (spec §6), plus where the time went."""
        k, config = self.config.eval.last_k, self.config
        scores = [h["score"] for h in self.history]
        local = [h["score_local"] for h in self.history]
        return {
            "task": config.task, "method": config.method, "seed": config.seed,
            "method_label": config.method_label, "deviations": config.deviations(),
            "dataset_id": self.dataset_id, "steps": self.step,
            "final_score": scores[-1] if scores else float("nan"),
            "last_k_score": float(np.mean(scores[-k:])) if scores else float("nan"),
            "final_score_local": local[-1] if local else float("nan"),
            "last_k_score_local": float(np.mean(local[-k:])) if local else float("nan"),
            "stage_seconds": self.stage_seconds,
            "cpus": cpus_of(self.history),
            "value_bound": list(self.value_bound.as_record().values()),
            "diverged_at_step": self.diverged_at_step,
            "q_mean_peak": max((h["train/q_mean"] for h in self.history if "train/q_mean" in h), default=None),
        }

    @property
    def diverged_at_step(self) -> int | None:
        """The step of the first evaluation whose mean Q left `value_bound` (None: it never has)."""
        return diverged_at(self.history)

    # ---- saving and continuing ---------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """The whole state (`run.pt`) and every evaluation so far (`evaluations.jsonl`), each atomically."""
        directory.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(self.state_dict(), directory / STATE_FILE)
        atomic_write_text(directory / EVALUATIONS_FILE, evaluation_lines(self.history))

    def state_dict(self) -> dict[str, Any]:
        # "step" repeats the agent's own count: `read_state` reads it without unpickling the agent.
        return {"config": self.config.to_json(), "step": self.step, "history": self.history,
                "agent": self.agent.state_dict(), "sampler": self.sampler.state_dict(),
                "wall_time": self._wall_offset + time.perf_counter() - self._started_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not same_config(json.loads(state["config"]), self.config):
            raise ValueError("checkpoint was written by a run with a different config")
        self.history = list(state["history"])
        self.agent.load_state_dict(state["agent"])
        self.sampler.load_state_dict(state["sampler"])
        self._wall_offset, self._started_at = float(state["wall_time"]), time.perf_counter()


def check_finite(values: Mapping[str, float | str], what: str, config: RunConfig, step: int) -> None:
    """Stop at the first non-finite loss or evaluation: a diverged policy must never be scored, and JSON
    (evaluations.jsonl, Tune's result.json) has no NaN. (Labels such as the dataset id are strings.)"""
    bad = {key: value for key, value in values.items() if isinstance(value, int | float) and not math.isfinite(value)}
    if not bad:
        return
    named = ", ".join(f"{key} = {value}" for key, value in bad.items())
    rates = "bcq.learning_rate" if config.method_spec.learner == "bcq" else "cql.policy_lr / cql.q_lr / cql.alpha_lr"
    raise TrainingDivergedError(
        f"{config.task} {config.method} seed {config.seed}: training diverged at gradient step {step:,}: "
        f"{what} {named}; no score is reported for a diverged policy",
        f"lower the learning rate ({rates}) or check the overrides; evaluations up to the last checkpoint are "
        "kept, rerunning the same settings diverges again",
    )


def read_state(directory: Path, config: RunConfig, start_over: str) -> dict[str, Any] | None:
    """The state `Run.save` left in `directory` for this config (None if there is none), or a
    `CheckpointError` naming the file and, in `start_over`, how to go on without it. Read before the
    minutes of a run's setup, so a damaged checkpoint is refused at once."""
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=config.device, weights_only=False)
    except Exception as err:  # torch raises RuntimeError/EOFError/UnpicklingError/... on damaged files
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {err})",
                              start_over) from None
    if not isinstance(state, dict) or not {"config", "step", "history", "agent", "sampler"} <= set(state):
        raise CheckpointError(f"checkpoint {path} is not a romi run checkpoint", start_over)
    if not same_config(json.loads(state["config"]), config.resolved()):
        raise CheckpointError(f"checkpoint {path} was written by a run with a different config",
                              "choose another output directory, or " + start_over)
    return state
