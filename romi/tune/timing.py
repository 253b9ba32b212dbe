"""Measured costs for a sweep's plan: a few dozen real gradient steps of each learner at the sweep's sizes,
a few action choices, a short real model-buffer shard, a few batches of dynamics and rollout-policy
training, timed with the trial's torch threads in a couple of seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from romi.agents import learner_config, make_agent
from romi.config import DynamicsConfig, Precision, RolloutPolicyConfig, RunConfig, check_device_available
from romi.errors import ConfigError
from romi.imagination.rollout import generate_shard
from romi.models.dynamics import DynamicsModel, gaussian_nll_per_member
from romi.models.rollout_policy import UniformRolloutPolicy, build_rollout_policy
from romi.models.termination import termination_fn
from romi.nets import compute_precision
from romi.types import Batch

TIMED_STEPS = 30
"""Gradient steps timed per learner (after a few untimed warm-up steps), at most `TIME_BUDGET_S`."""
TIME_BUDGET_S = 2.0


# --------------------------------------------------------------------------------------------
@contextmanager
def _measuring(threads: int) -> Iterator[None]:
    """Time with the trial's torch threads, and leave the driver's global RNG and threads as they were."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            yield
    finally:
        torch.set_num_threads(previous)


def _seconds_per_call(call: Callable[[], Any], *, warmup: int = 3, calls: int = TIMED_STEPS,
                      budget: float = TIME_BUDGET_S) -> float:
    for _ in range(warmup):
        call()
    started, done = time.perf_counter(), 0
    while done < calls and (done == 0 or time.perf_counter() - started < budget):
        call()
        done += 1
    return (time.perf_counter() - started) / done


def _random_batch(config: RunConfig, obs_dim: int, act_dim: int) -> Any:

    size = learner_config(config).batch_size
    return Batch(torch.randn(size, obs_dim), torch.rand(size, act_dim) * 2 - 1, torch.randn(size),
                 torch.randn(size, obs_dim), torch.zeros(size))


@dataclass(frozen=True)
class LearnerTiming:
    seconds_per_step: float
    seconds_per_action: float
    """One `agent.act` on one observation, as an evaluation episode calls it."""

    @property
    def steps_per_second(self) -> float:
        return 1.0 / self.seconds_per_step


def time_learner(config: RunConfig, obs_dim: int, act_dim: int, threads: int = 1) -> LearnerTiming:
    """Real gradient steps and action choices of the config's learner (BCQ or CQL) at its sizes, on
    random data (the cost of a step does not depend on the numbers in it), in the run's precision, on
    the run's device if this process has it, else on the CPU (a CPU-only head node planning GPU trials
    times them on its CPU: the plan then overestimates their duration)."""

    try:
        check_device_available(config.device)
    except ConfigError:
        config = config.model_copy(update={"device": "cpu"})
    with _measuring(threads):
        agent: Any = make_agent(config, obs_dim, act_dim, 1.0)
        if config.method_spec.learner == "cql":
            # Past the behaviour-cloning warm-up: the step most of a run's steps are (it also asks the critic).
            agent.step = config.cql.bc_steps
        batch = _random_batch(config, obs_dim, act_dim).to(config.device)
        step = _seconds_per_call(lambda: agent.update(batch))
        observation = torch.randn(obs_dim).numpy()
        act = _seconds_per_call(lambda: agent.act(observation), calls=10 * TIMED_STEPS, budget=TIME_BUDGET_S / 4)
    return LearnerTiming(step, act)


def time_dynamics_batch(config: DynamicsConfig, obs_dim: int, act_dim: int, threads: int = 1,
                        precision: Precision = "fp32") -> float:
    """Seconds per training batch of the dynamics ensemble (the loss and update of `DynamicsModel.fit`).
    `precision="bf16"` runs the forward pass under `compute_precision` (a benchmark row: runs train fp32)."""

    with _measuring(threads):
        model = DynamicsModel(obs_dim, act_dim, config, "reverse")
        ensemble = model.ensemble
        optimizer = torch.optim.Adam(ensemble.parameters(), lr=config.learning_rate)
        inputs = torch.randn(config.ensemble_size, config.batch_size, obs_dim + act_dim)
        targets = torch.randn(config.ensemble_size, config.batch_size, 1 + obs_dim)

        def batch() -> None:
            with compute_precision(precision, inputs.device):
                mean, logvar = ensemble(inputs)
            mean, logvar = mean.float(), logvar.float()
            loss = (gaussian_nll_per_member(mean, logvar, targets).sum() + ensemble.weight_decay_loss()
                    + config.logvar_bound_weight * ensemble.logvar_bound_loss())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return _seconds_per_call(batch, calls=10)


def time_rollout_policy_iteration(config: RolloutPolicyConfig, obs_dim: int, act_dim: int,
                                  threads: int = 1) -> float:
    """Seconds per training iteration of the rollout policy (0 for the uniform one, which trains nothing)."""

    assert config.kind is not None
    with _measuring(threads):
        policy = build_rollout_policy(config.kind, obs_dim, act_dim, 1.0, config)
        if isinstance(policy, UniformRolloutPolicy):
            return 0.0
        optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
        states, actions = torch.randn(config.batch_size, obs_dim), torch.rand(config.batch_size, act_dim) * 2 - 1

        def iteration() -> None:
            loss, _ = policy.loss(states, actions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return _seconds_per_call(iteration, calls=10)


def time_imagination(config: RunConfig, obs_dim: int, act_dim: int, domain: str, threads: int = 1,
                     precision: Precision = "fp32") -> float:
    """Seconds per imagined transition: a real shard of a few rollout batches of an untrained model
    (`precision="bf16"`: under `compute_precision`, a benchmark row: imagination runs fp32)."""

    imagination = config.imagination
    assert imagination.horizon is not None and config.rollout_policy.kind is not None
    with _measuring(threads):
        model = DynamicsModel(obs_dim, act_dim, config.dynamics, "reverse").eval()
        policy = build_rollout_policy(config.rollout_policy.kind, obs_dim, act_dim, 1.0, config.rollout_policy)
        pool = torch.randn(4 * imagination.start_batch_size, obs_dim)
        size = 3 * imagination.start_batch_size

        def shard() -> None:
            with compute_precision(precision, pool.device):
                generate_shard(model, policy, pool, None, size, imagination.horizon or 1,
                               termination_fn(domain, np.zeros(2) if domain == "antmaze" else None),
                               imagination.start_batch_size, seed=0)

        seconds = _seconds_per_call(shard, warmup=1, calls=2)
    return seconds / size
