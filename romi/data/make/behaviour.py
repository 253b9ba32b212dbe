"""SAC behaviour policies for the locomotion medium family, trained with RLlib (spec §7).

D4RL made `medium`, `medium-replay` and `expert` from one online SAC run per environment: "medium" is
the policy when it first reaches about a third of expert return, "medium-replay" is the replay
buffer up to that moment, "expert" is the converged policy. One `BehaviourRun` is that run for an
(environment, seed), kept on disk so every dataset of the family shares it:

    <minari store parent>/romi-behaviour/<env id>/seed<k>/
        state.json             the truth: config fingerprint, env steps, checkpoints and their eval returns,
                               which one is medium / expert, the resume checkpoint
        policies/step_N/       RLlib RLModule checkpoint of the policy after N env steps (all kept: the
                               threshold rule is a pure function of the list, and the best is always there)
        replay/step_N.npz      every transition the SAC sampled since the previous checkpoint, in order
        resume/step_N/         the full RLlib Algorithm (learner, optimisers, counters) of the last checkpoint

RLlib specifics (ray 2.6x, new API stack), and why:
- num_env_runners=0 and num_learners=0: sampling and learning run in this process, so a run needs one
  core and the environment wrapper below can hand its transitions to this process directly.
- One learner update of `batch_size` per env step (`updates_per_step`), as D4RL's SAC, made in
  fragments: the env runner takes `rollout_fragment_length` steps (default 1000) with the current
  policy, then the learner makes as many updates. That is rlkit's own loop (D4RL's SAC: 1000
  exploration steps, then 1000 updates, per train loop), and it pays RLlib's per-call costs (env
  runner call, weight sync, metrics) once per fragment instead of once per env step.
- Our training step and replay buffer (`_SACTrainingStep`, bound as `algo.training_step`, which is how
  RLlib customises an algorithm; `_UniformReplay`): RLlib's `EpisodeReplayBuffer` plus learner
  connector build a one-step episode object for every sampled transition and take it apart again,
  profiled at ~80 of the ~180 ms of an update of 256, more than the rest of RLlib's overhead together.
  Ours is RLlib's SAC step (sample, store, update, sync weights) on flat arrays: the same batch
  columns (n_step 1, importance weights 1), uniform over the stored transitions as D4RL's SAC
  (RLlib's default is prioritised), and seeded. What remains of an update is mostly torch (~16 of ~20
  ms with D4RL's networks, profiled). Measured A/B: see `SACBehaviourConfig.rollout_fragment_length`.
- The new-stack `Algorithm.get_state()` does not include a replay buffer, so we record every
  transition with a gymnasium wrapper around the env runner's environment (`_RecordingEnv`), and the
  replay buffer is filled from that recording, in order: with a capacity >= the steps taken, the
  recording *is* the buffer's content. It is written at each checkpoint, gives medium-replay, and
  refills the buffer on resume.
- The networks are D4RL's (`q_network="mlp"`): the policy is RLlib's (`hidden_sizes` MLP, squashed
  Gaussian) and each Q-function an MLP of `hidden_sizes` on concat(observation, action)
  (`_mlp_q_module_spec`). RLlib 2.6x's default SAC Q (`q_network="rllib"`) is a multi-stream encoder
  (an MLP per input, two fusion layers on their concatenation, an output layer: ~0.66M parameters
  at 256x256, ~9x rlkit's Q): ~60 of the ~76 ms of torch in an update (profiled), and a different
  function class than the SAC whose policies D4RL's datasets come from.
- torch uses one thread while training: RLlib's per-step updates are small, and on a shared 2-core
  machine extra torch threads spin against each other (measured ~7x slower with the default threads).
- Policies act through the RLModule's `forward_inference` outputs (the squashed-Gaussian inputs); the
  action is computed here (`squashed_gaussian_action`) so data collection is deterministic given a
  numpy generator, and the "deterministic" action is tanh(mean), as in SAC (RLlib's
  `to_deterministic()` returns the unsquashed mean).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from romi.errors import ConfigError, RomiError

Log = Callable[[str], None]
STATE_FILE = "state.json"
_STATE_VERSION = 1
_ENV_NAME = "romi-sac-recording-env"
_RATE_WINDOW = 5
"""Iterations over which steps/s (and so the ETA) is measured."""
_RECORDERS: dict[str, _Recorder] = {}
"""Live recorders by token: the env runner builds its env in this process and finds its recorder here."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SACBehaviourConfig:
    """How behaviour policies are trained and chosen. Defaults follow D4RL's SAC (rlkit) where RLlib allows."""

    medium_fraction: float = 1 / 3
    """medium = of the checkpoints up to the first whose eval return reaches this fraction of D4RL's expert
    reference return, the one closest to it (`closest_up_to_first_reaching`)."""
    expert_fraction: float = 1.0
    """Training for `expert` stops early at a checkpoint whose eval return reaches this fraction of the
    expert reference ("converged"); otherwise it runs to the budget. expert = the best checkpoint."""
    medium_budget: int = 1_000_000
    """At most this many SAC env steps to find the medium policy (then: a clear error, best kept)."""
    expert_budget: int = 1_000_000
    """SAC env steps for the expert policy (D4RL trained ~1M steps)."""
    checkpoint_every: int = 10_000
    """Env steps between checkpoints: each is evaluated, saved, and may become medium or expert."""
    report_every: int = 1_000
    """Env steps per RLlib training iteration, i.e. between progress lines."""
    eval_episodes: int = 10
    """Deterministic-policy episodes per checkpoint evaluation (fixed start seeds: returns comparable)."""
    learning_starts: int = 5_000
    """Env steps before the first update, sampled by the initial (untrained, stochastic) policy: RLlib's SAC has
    no uniform-random warm-up. They are the start of medium-replay, as the warm-up was in D4RL's."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layers of the policy and of each Q-function."""
    q_network: str = "mlp"
    """"mlp": D4RL's (rlkit's) Q-function, an MLP on concat(observation, action); "rllib": RLlib's default
    multi-stream Q (an MLP per input, then fusion layers of the same sizes: ~9x the parameters, ~4x slower runs)."""
    batch_size: int = 256
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    updates_per_step: float = 1.0
    """Learner updates of `batch_size` per env step, on average (D4RL's SAC: 1)."""
    rollout_fragment_length: int = 1000
    """Env steps the policy takes between rounds of updates (`updates_per_step` x as many updates follow them),
    as rlkit's 1000 exploration steps then 1000 updates per train loop; cut to end on `report_every`.
    Measured A/B, hopper, 256x256, batch 256, one update per env step, steps/s on the 2-core machine with both
    cores running other jobs (two runs each, interleaved):
        RLlib's replay buffer + RLlib's Q, fragment 1 (the previous default):   7.5, 8.2
        ours + RLlib's Q (q_network="rllib"), fragment 1 / 32 / 1000:           11.5, 12.2 / 12.2, 12.6 / 12.2, 13.1
        ours + D4RL's Q (q_network="mlp"), fragment 1 / 1000:                   39.7, 43.9 / 46.2, 51.3"""
    replay_capacity: int = 1_000_000
    torch_threads: int = 1

    def __post_init__(self) -> None:
        positive = ("medium_budget", "expert_budget", "checkpoint_every", "report_every", "eval_episodes",
                    "batch_size", "replay_capacity", "torch_threads", "rollout_fragment_length")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"SAC behaviour config: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.medium_fraction <= 1 or self.expert_fraction <= 0:
            raise ConfigError(
                f"SAC behaviour config: medium_fraction must be in (0, 1] and expert_fraction > 0, got "
                f"{self.medium_fraction} and {self.expert_fraction}"
            )
        if self.q_network not in ("mlp", "rllib"):
            raise ConfigError(f"SAC behaviour config: q_network must be 'mlp' or 'rllib', got {self.q_network!r}")
        if self.updates_per_step <= 0 or self.learning_starts < 0 or not self.hidden_sizes:
            raise ConfigError(
                "SAC behaviour config: needs updates_per_step > 0, learning_starts >= 0 and non-empty hidden_sizes"
            )

    def fingerprint(self) -> dict[str, Any]:
        """The settings that define the run itself; budgets and thresholds may change between invocations."""
        free = {"medium_fraction", "expert_fraction", "medium_budget", "expert_budget", "checkpoint_every",
                "report_every", "torch_threads"}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if k not in free}


def default_behaviour_root() -> Path:
    """Beside the Minari store (so tests that isolate the store isolate this too)."""
    from romi.data.minari_io import datasets_root

    return datasets_root().parent / "romi-behaviour"


# --------------------------------------------------------------------------------------------
# Checkpoint records and the threshold rule (pure functions)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointRecord:
    name: str
    env_steps: int
    eval_return: float
    eval_return_std: float
    train_return: float | None
    """RLlib's running mean of training-episode returns (stochastic policy), for the log."""
    training_seconds: float
    """Cumulative wall time of SAC training up to this checkpoint."""


class ThresholdNotReachedError(RomiError):
    """No checkpoint reached the medium threshold within the budget; `best` is kept on disk."""

    def __init__(self, problem: str, hint: str | None, best: CheckpointRecord | None) -> None:
        super().__init__(problem, hint)
        self.best = best


def best_checkpoint(checkpoints: Sequence[CheckpointRecord]) -> CheckpointRecord | None:
    """Highest eval return; the earliest among equals."""
    if not checkpoints:
        return None
    return max(checkpoints, key=lambda c: (c.eval_return, -c.env_steps))


def first_reaching(checkpoints: Sequence[CheckpointRecord], threshold: float) -> CheckpointRecord | None:
    """D4RL's medium rule: the first checkpoint (in training order) whose eval return is >= threshold."""
    for record in sorted(checkpoints, key=lambda c: c.env_steps):
        if record.eval_return >= threshold:
            return record
    return None


def closest_up_to_first_reaching(
    checkpoints: Sequence[CheckpointRecord], threshold: float
) -> CheckpointRecord | None:
    """Our medium rule: of the checkpoints up to the first reaching `threshold`, the one closest to it.

    D4RL stopped its SAC at "about" a third of expert return. Taking the first checkpoint at or above
    the threshold overshoots badly when the return jumps between two checkpoints: our Hopper-v5 run
    went 295 -> 3027 (threshold 1078) from 290k to 300k steps, so the first-reaching policy was an
    expert one (its 1M stochastic steps averaged 93 normalised). The closest checkpoint keeps
    "about a third" true on both sides. Ties go to the later checkpoint (the one that reached it).
    """
    first = first_reaching(checkpoints, threshold)
    if first is None:
        return None
    candidates = [c for c in checkpoints if c.env_steps <= first.env_steps]
    return min(candidates, key=lambda c: (abs(c.eval_return - threshold), -c.env_steps))


def choose_medium(checkpoints: Sequence[CheckpointRecord], threshold: float, *, where: str = "") -> CheckpointRecord:
    """`closest_up_to_first_reaching`, or a `ThresholdNotReachedError` naming the best checkpoint and its return."""
    chosen = closest_up_to_first_reaching(checkpoints, threshold)
    if chosen is not None:
        return chosen
    best = best_checkpoint(checkpoints)
    steps = max((c.env_steps for c in checkpoints), default=0)
    if best is None:
        problem = f"no checkpoint yet, so none reaches the medium threshold {threshold:.1f}"
    else:
        problem = (
            f"no checkpoint within {steps:,} SAC env steps reaches the medium threshold {threshold:.1f}; the best "
            f"is {best.name} with eval return {best.eval_return:.1f} (kept{' in ' + where if where else ''})"
        )
    return _raise_not_reached(problem, best)


def _raise_not_reached(problem: str, best: CheckpointRecord | None) -> CheckpointRecord:
    raise ThresholdNotReachedError(
        problem,
        "re-run with a larger --budget to continue training from the last checkpoint, or lower the threshold "
        "with --medium-fraction",
        best,
    )


# --------------------------------------------------------------------------------------------
# Acting with a learned SAC policy
# --------------------------------------------------------------------------------------------


def squashed_gaussian_action(
    dist_inputs: np.ndarray, low: np.ndarray, high: np.ndarray, noise: np.ndarray | None = None
) -> np.ndarray:
    """SAC's action from the policy head's outputs `[mean, log_std]`, mapped to the env's bounds.

    noise None: the deterministic action tanh(mean). Otherwise tanh(mean + std * noise) with
    log_std clipped to RLlib's range, as RLlib's `TorchSquashedGaussian` samples, then scaled from
    [-1, 1] to [low, high] as RLlib's action normalisation does (all three envs use [-1, 1]).
    """
    from ray.rllib.utils.numpy import MAX_LOG_NN_OUTPUT, MIN_LOG_NN_OUTPUT

    mean, log_std = np.split(np.asarray(dist_inputs, dtype=np.float64), 2, axis=-1)
    pre_squash = mean
    if noise is not None:
        pre_squash = mean + np.exp(np.clip(log_std, MIN_LOG_NN_OUTPUT, MAX_LOG_NN_OUTPUT)) * noise
    unit = np.tanh(pre_squash)
    return np.clip(low + (unit + 1.0) * 0.5 * (high - low), low, high).astype(np.float32)


class SACPolicy:
    """A checkpointed SAC policy (RLlib RLModule) as a numpy function of one observation."""

    def __init__(self, module: Any, action_space: gym.spaces.Box) -> None:
        self.module = module
        self.low = action_space.low.astype(np.float64)
        self.high = action_space.high.astype(np.float64)

    @classmethod
    def load(cls, path: Path, action_space: gym.spaces.Box) -> SACPolicy:
        from ray.rllib.core.rl_module.rl_module import RLModule

        return cls(RLModule.from_checkpoint(str(path)), action_space)

    def dist_inputs(self, observation: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)[None])
            out = self.module.forward_inference({"obs": obs})
        return out["action_dist_inputs"][0].numpy()

    def act(self, observation: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Stochastic with `rng` (the behaviour policy that made the data), deterministic without."""
        inputs = self.dist_inputs(observation)
        noise = None if rng is None else rng.standard_normal(len(self.low))
        return squashed_gaussian_action(inputs, self.low, self.high, noise)


# --------------------------------------------------------------------------------------------
# Recording what the SAC samples (= its replay buffer, in order)
# --------------------------------------------------------------------------------------------


class _Recorder:
    """Every transition the SAC's environment takes, in order, with a global episode index."""

    def __init__(self, next_episode: int) -> None:
        self.next_episode = next_episode
        self.episode = -1
        self.observation: np.ndarray | None = None
        self.rows: dict[str, list[Any]] = {k: [] for k in _REPLAY_KEYS}
        self.steps = 0
        self.taken = 0
        """Rows already handed to the replay buffer by `take_new`."""

    def on_reset(self, observation: np.ndarray) -> None:
        self.episode = self.next_episode
        self.next_episode += 1
        self.observation = np.asarray(observation)

    def on_step(self, action: np.ndarray, observation: np.ndarray, reward: float, terminated: bool,
                truncated: bool) -> None:
        assert self.observation is not None, "step before reset"
        for key, value in zip(_REPLAY_KEYS, (self.observation, action, reward, observation, terminated, truncated,
                                              self.episode), strict=True):
            self.rows[key].append(value)
        self.observation = np.asarray(observation)
        self.steps += 1

    def take_new(self) -> dict[str, np.ndarray]:
        """The transitions since the last `take_new`, as arrays (they stay recorded for `flush`)."""
        chunk = {k: np.asarray(v[self.taken:], dtype=_REPLAY_DTYPES[k]) for k, v in self.rows.items()}
        self.taken = len(self.rows["rewards"])
        return chunk

    def flush(self) -> dict[str, np.ndarray]:
        """The transitions since the last flush, as arrays (and forget them)."""
        assert self.taken == len(self.rows["rewards"]), "transitions recorded but not in the replay buffer"
        chunk = {k: np.asarray(v, dtype=_REPLAY_DTYPES[k]) for k, v in self.rows.items()}
        self.rows = {k: [] for k in _REPLAY_KEYS}
        self.taken = 0
        return chunk


_REPLAY_KEYS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations",
                "episode_ids")
_REPLAY_DTYPES: dict[str, Any] = {"observations": np.float64, "actions": np.float32, "rewards": np.float64,
                                  "next_observations": np.float64, "terminations": bool, "truncations": bool,
                                  "episode_ids": np.int64}


class _RecordingEnv(gym.Wrapper):
    def __init__(self, env: gym.Env, recorder: _Recorder) -> None:
        super().__init__(env)
        self.recorder = recorder

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self.recorder.on_reset(observation)
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.recorder.on_step(np.asarray(action, dtype=np.float32), observation, float(reward), bool(terminated),
                              bool(truncated))
        return observation, reward, terminated, truncated, info


def _make_recording_env(env_config: Any) -> gym.Env:
    """RLlib env creator: the task's env, recording into the recorder registered under the token."""
    env = gym.make(env_config["env_id"], max_episode_steps=env_config["max_episode_steps"])
    recorder = _RECORDERS.get(env_config["recorder"])
    if recorder is None:  # e.g. RLlib probing spaces outside a training session: nothing to record
        return env
    return _RecordingEnv(env, recorder)


def replay_episodes(chunks: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Ordered transitions -> episodes (`observations` has one more row than the steps).

    An episode whose recording stops neither terminated nor truncated (it was running at the medium
    checkpoint, or at a checkpoint the run was resumed from) is marked truncated at its last step, and
    `cut` says so (the time limit did not end it).
    """
    if not chunks:
        return []
    data = {k: np.concatenate([c[k] for c in chunks]) for k in _REPLAY_KEYS}
    if len(data["rewards"]) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, data["episode_ids"][1:] != data["episode_ids"][:-1]])
    ends = np.r_[starts[1:], len(data["rewards"])]
    episodes = []
    for start, end in zip(starts, ends, strict=True):
        truncations = data["truncations"][start:end].copy()
        terminations = data["terminations"][start:end]
        cut = not (terminations[-1] or truncations[-1])
        truncations[-1] |= cut
        episodes.append({
            "observations": np.concatenate([data["observations"][start:end], data["next_observations"][end - 1:end]]),
            "actions": data["actions"][start:end],
            "rewards": data["rewards"][start:end],
            "terminations": terminations,
            "truncations": truncations,
            "cut": np.asarray(cut),
        })
    return episodes


# --------------------------------------------------------------------------------------------
# The SAC's replay buffer and training step (RLlib's, without its per-transition Python)
# --------------------------------------------------------------------------------------------


def unit_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Env actions -> the module's [-1, 1] actions, which RLlib's SAC learns from (it scales them to the bounds)."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return ((np.asarray(actions, dtype=np.float64) - low) / (high - low) * 2.0 - 1.0).astype(np.float32)


class _UniformReplay:
    """SAC's replay buffer as flat arrays: filled with the recording, in order (FIFO beyond `capacity`), and
    sampled uniformly into RLlib's train-batch columns.

    It stands in for RLlib's `EpisodeReplayBuffer` + learner connector, which hand the learner the same
    batch (uniform over stored transitions, n_step 1, weights 1) but build a one-step episode object per
    sampled transition and take it apart again: ~80 of the ~180 ms of an update of 256 (profiled).
    Unlike RLlib's buffer (unseeded), it draws from a seeded generator.
    """

    def __init__(self, capacity: int, observation_space: gym.spaces.Box, action_space: gym.spaces.Box,
                 seed: int) -> None:
        self.capacity = capacity
        self.low, self.high = action_space.low, action_space.high
        self.rng = np.random.default_rng(seed)
        shapes = {"obs": observation_space.shape, "new_obs": observation_space.shape, "actions": action_space.shape,
                  "rewards": (), "terminateds": (), "truncateds": ()}
        self.columns = {k: np.zeros((0, *shape), dtype=bool if k.endswith("eds") else np.float32)
                        for k, shape in shapes.items()}
        self.size = 0
        self.added = 0
        """Transitions ever added: the run's env steps."""

    def add(self, chunk: dict[str, np.ndarray]) -> int:
        """Append a recorded chunk (`_REPLAY_KEYS` arrays); returns its number of transitions."""
        n = len(chunk["rewards"])
        if n == 0:
            return 0
        rows = {
            "obs": chunk["observations"], "new_obs": chunk["next_observations"],
            "actions": unit_actions(chunk["actions"], self.low, self.high), "rewards": chunk["rewards"],
            "terminateds": chunk["terminations"], "truncateds": chunk["truncations"],
        }
        keep = min(n, self.capacity)  # of a chunk larger than the whole buffer only its end stays
        needed = min(self.capacity, self.added + n)
        if needed > len(self.columns["rewards"]):  # grow geometrically up to the capacity
            size = min(self.capacity, max(needed, 2 * len(self.columns["rewards"]), 4096))
            for key, column in self.columns.items():
                grown = np.zeros((size, *column.shape[1:]), dtype=column.dtype)
                grown[:len(column)] = column
                self.columns[key] = grown
        positions = (self.added + n - keep + np.arange(keep)) % self.capacity
        for key, value in rows.items():
            self.columns[key][positions] = value[n - keep:]
        self.added += n
        self.size = min(self.capacity, self.added)
        return n

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """`batch_size` transitions drawn uniformly with replacement, as RLlib's SAC learner reads them."""
        index = self.rng.integers(self.size, size=batch_size)
        batch = {key: column[index] for key, column in self.columns.items()}
        batch["n_step"] = np.ones(batch_size, dtype=np.int64)
        batch["weights"] = np.ones(batch_size, dtype=np.float32)
        return batch


class _SACTrainingStep:
    """RLlib SAC's training step (DQN's `_training_step_new_api_stack`) on the `_UniformReplay`.

    Bound as `algo.training_step`. Each call samples a fragment of up to `rollout_fragment_length` env
    steps with the local env runner (cut so that no fragment crosses a multiple of `period` steps from
    `origin`: RLlib's iterations, hence progress lines and checkpoints, end exactly on them), adds it
    to the replay buffer from the recording, makes `updates_per_step` learner updates per env step
    from `learning_starts` on (a fraction carries over), each on `batch_size` transitions drawn
    uniformly, and sends the new weights to the env runner. RLlib's own replay buffer stays empty.
    """

    def __init__(self, algo: Any, recorder: _Recorder, replay: _UniformReplay, config: SACBehaviourConfig, *,
                 period: int, origin: int) -> None:
        self.algo, self.recorder, self.replay, self.config = algo, recorder, replay, config
        self.period, self.origin = period, origin
        self.owed = 0.0

    def __call__(self) -> None:
        from ray.rllib.core import DEFAULT_MODULE_ID
        from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
        from ray.rllib.utils.metrics import (
            ALL_MODULES,
            ENV_RUNNER_RESULTS,
            ENV_RUNNER_SAMPLING_TIMER,
            LEARNER_RESULTS,
            LEARNER_UPDATE_TIMER,
            NUM_AGENT_STEPS_SAMPLED_LIFETIME,
            NUM_ENV_STEPS_SAMPLED_LIFETIME,
            SYNCH_WORKER_WEIGHTS_TIMER,
            TD_ERROR_KEY,
            TIMERS,
        )

        algo, cfg, replay = self.algo, self.config, self.replay
        before = replay.added
        fragment = min(cfg.rollout_fragment_length, self.period - (before - self.origin) % self.period)
        with algo.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            algo.env_runner.sample(num_timesteps=fragment)
        algo.metrics.aggregate([algo.env_runner.get_metrics()], key=ENV_RUNNER_RESULTS)
        replay.add(self.recorder.take_new())
        if replay.added >= cfg.learning_starts:  # as RLlib: the step reaching learning_starts has its update
            self.owed += cfg.updates_per_step * (replay.added - max(before, cfg.learning_starts - 1))
        updates = int(self.owed)
        self.owed -= updates
        if updates == 0:
            return
        timesteps = {
            NUM_ENV_STEPS_SAMPLED_LIFETIME: algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME),
                                                              default=0),
            NUM_AGENT_STEPS_SAMPLED_LIFETIME: algo.metrics.peek(
                (ENV_RUNNER_RESULTS, NUM_AGENT_STEPS_SAMPLED_LIFETIME), default={}),
        }
        with algo.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            for _ in range(updates):
                batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(replay.sample(cfg.batch_size))},
                                        env_steps=cfg.batch_size)
                learner_results = algo.learner_group.update(batch=batch, timesteps=timesteps)
                for result in learner_results:  # per-transition TD errors: only for prioritised replay
                    for module_results in result.values():
                        module_results.pop(TD_ERROR_KEY, None)
                algo.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        with algo.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            algo.env_runner_group.sync_weights(
                from_worker_or_learner_group=algo.learner_group,
                policies=set(learner_results[0].keys()) - {ALL_MODULES}, global_vars=None, inference_only=True,
            )


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingProgress:
    env_id: str
    seed: int
    env_steps: int
    target_steps: int
    """The budget of this phase (medium search or expert training): an upper bound."""
    train_return: float | None
    last_eval_return: float | None
    steps_per_second: float
    eta_seconds: float | None


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def format_progress(p: TrainingProgress) -> str:
    train = "-" if p.train_return is None else f"{p.train_return:.1f}"
    last = "-" if p.last_eval_return is None else f"{p.last_eval_return:.1f}"
    return (
        f"SAC {p.env_id} seed {p.seed}: {p.env_steps:,}/{p.target_steps:,} env steps  train return {train}  "
        f"last eval {last}  {p.steps_per_second:.1f} steps/s  ETA to budget {format_duration(p.eta_seconds)}"
    )


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class _State:
    env_id: str
    seed: int
    horizon: int
    fingerprint: dict[str, Any]
    env_steps: int = 0
    next_episode: int = 0
    resumes: int = 0
    resume: str | None = None
    training_seconds: float = 0.0
    checkpoints: list[CheckpointRecord] = field(default_factory=list)
    medium: dict[str, Any] | None = None
    expert: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["version"] = _STATE_VERSION
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> _State:
        raw = dict(raw)
        raw.pop("version", None)
        raw["checkpoints"] = [CheckpointRecord(**c) for c in raw.get("checkpoints", [])]
        return cls(**raw)


class BehaviourRun:
    """One online SAC run on `env_id` with `seed`, checkpointed under `root/<env_id>/seed<seed>`; resumable."""

    def __init__(
        self, env_id: str, seed: int, config: SACBehaviourConfig | None = None, *, horizon: int = 1000,
        root: Path | None = None,
    ) -> None:
        self.env_id = env_id
        self.seed = seed
        self.config = config or SACBehaviourConfig()
        self.horizon = horizon
        self.directory = (root or default_behaviour_root()) / env_id / f"seed{seed}"
        probe = _make_env(env_id, horizon)  # fail here, clearly, on an unknown env
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        if not isinstance(self.action_space, gym.spaces.Box):
            raise RomiError(f"environment {env_id} has a {type(self.action_space).__name__} action space; "
                            "the SAC behaviour recipe needs continuous (Box) actions")
        self.state = self._load_state()

    # ---- state -------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def fingerprint_hash(self) -> str:
        text = json.dumps(self.state.fingerprint, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def _load_state(self) -> _State:
        fingerprint = self.config.fingerprint()
        if not self.state_path.is_file():
            return _State(env_id=self.env_id, seed=self.seed, horizon=self.horizon, fingerprint=fingerprint)
        try:
            state = _State.from_json(json.loads(self.state_path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise RomiError(f"behaviour-policy state {self.state_path} is unreadable ({err})",
                            f"delete {self.directory} to start that SAC run afresh") from err
        if state.fingerprint != fingerprint or state.horizon != self.horizon or state.env_id != self.env_id:
            changed = sorted(k for k in set(fingerprint) | set(state.fingerprint)
                             if fingerprint.get(k) != state.fingerprint.get(k))
            raise RomiError(
                f"the SAC run in {self.directory} was trained with other settings ({', '.join(changed) or 'env'} "
                "differ), so it cannot be continued with these",
                f"use another --seed, the run's original settings, or delete {self.directory}",
            )
        return state

    def _save_state(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{STATE_FILE}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(self.state.to_json(), indent=1))
        os.replace(tmp, self.state_path)  # atomic: a crash leaves the old state or the new, never half

    @property
    def checkpoints(self) -> list[CheckpointRecord]:
        return list(self.state.checkpoints)

    def policy_path(self, record: CheckpointRecord) -> Path:
        return self.directory / "policies" / record.name

    def load_policy(self, record: CheckpointRecord) -> SACPolicy:
        return SACPolicy.load(self.policy_path(record), self.action_space)

    def replay_until(self, record: CheckpointRecord) -> list[dict[str, np.ndarray]]:
        """Every transition the SAC sampled up to `record`, in order, as episodes."""
        return replay_episodes(self._chunks(record.env_steps))

    def _chunks(self, up_to: int) -> list[dict[str, np.ndarray]]:
        chunks = []
        for record in sorted(self.state.checkpoints, key=lambda c: c.env_steps):
            if record.env_steps > up_to:
                break
            with np.load(self.directory / "replay" / f"{record.name}.npz") as f:
                chunks.append({k: f[k] for k in _REPLAY_KEYS})
        return chunks

    # ---- choosing policies ---------------------------------------------------------------------

    def medium(self, threshold: float, *, budget: int | None = None, log: Log | None = None,
               on_progress: Callable[[TrainingProgress], None] | None = None) -> CheckpointRecord:
        """Train (or resume) until a checkpoint's eval return reaches `threshold`; then `choose_medium`'s pick.

        Raises `ThresholdNotReachedError` (naming the best checkpoint, which stays on disk) when the
        budget runs out first.
        """
        budget = budget or self.config.medium_budget
        self.train(lambda cps: first_reaching(cps, threshold) is not None, budget=budget, log=log,
                   on_progress=on_progress, phase=f"medium (eval return >= {threshold:.1f})")
        record = choose_medium(self.state.checkpoints, threshold, where=str(self.directory))
        self.state.medium = {"checkpoint": record.name, "threshold": threshold}
        self._save_state()
        return record

    def expert(self, target: float, *, budget: int | None = None, log: Log | None = None,
               on_progress: Callable[[TrainingProgress], None] | None = None) -> CheckpointRecord:
        """Train to `budget` env steps or until a checkpoint reaches `target`; the best checkpoint."""
        budget = budget or self.config.expert_budget
        self.train(lambda cps: first_reaching(cps, target) is not None, budget=budget, log=log,
                   on_progress=on_progress, phase=f"expert (to {budget:,} steps or eval return >= {target:.1f})")
        record = best_checkpoint(self.state.checkpoints)
        if record is None:  # only with a budget below one report interval of a fresh run
            raise RomiError(f"the SAC run in {self.directory} has no checkpoint", "pass a larger --budget")
        self.state.expert = {"checkpoint": record.name, "target": target, "budget": budget}
        self._save_state()
        return record

    # ---- training ------------------------------------------------------------------------------

    def train(
        self, done: Callable[[list[CheckpointRecord]], bool], *, budget: int, log: Log | None = None,
        on_progress: Callable[[TrainingProgress], None] | None = None, phase: str = "",
    ) -> None:
        """Run SAC until `done(checkpoints)` or `budget` env steps in total, checkpointing as it goes.

        Continues from the last checkpoint if the run was interrupted; steps taken after it are re-done.
        """
        log = log or (lambda message: None)
        if done(self.state.checkpoints) or self.state.env_steps >= budget:
            return
        self._discard_uncommitted()
        cfg = self.config
        log(f"SAC {self.env_id} seed {self.seed}: {phase + '; ' if phase else ''}{self.state.env_steps:,} of at most "
            f"{budget:,} env steps done, checkpoints in {self.directory}")
        recorder = _Recorder(next_episode=self.state.next_episode)
        token = uuid.uuid4().hex
        _RECORDERS[token] = recorder
        with _ray_session(), _torch_threads(cfg.torch_threads), _quiet_rllib():
            # One RLlib iteration samples this many steps (fragments are cut to end on it): a progress line each,
            # and no overshoot of a small budget.
            iteration = max(1, min(cfg.report_every, cfg.checkpoint_every, budget - self.state.env_steps))
            algo = self._algorithm_config(token, iteration).build_algo()
            replay = _UniformReplay(cfg.replay_capacity, self.observation_space, self.action_space,
                                    seed=self._session_seed())
            algo.training_step = _SACTrainingStep(algo, recorder, replay, cfg, period=iteration,
                                                  origin=self.state.env_steps)
            try:
                if self.state.resume is not None:
                    self._restore(algo, replay, log)
                started, steps_at_start = time.perf_counter(), self.state.env_steps
                # steps/s over the last iterations: the first `learning_starts` steps (no updates) run ~30x
                # faster than the rest, so a whole-session average would promise far too early an ETA.
                window: collections.deque[tuple[float, int]] = collections.deque([(started, steps_at_start)],
                                                                                 maxlen=_RATE_WINDOW + 1)
                seconds_at_start = self.state.training_seconds
                next_checkpoint = (self.state.env_steps // cfg.checkpoint_every + 1) * cfg.checkpoint_every
                train_return: float | None = None
                while True:
                    result = algo.train()
                    env_steps = steps_at_start + recorder.steps
                    train_return = _episode_return_mean(result, train_return)
                    now = time.perf_counter()
                    elapsed = now - started
                    window.append((now, env_steps))
                    rate = (window[-1][1] - window[0][1]) / max(window[-1][0] - window[0][0], 1e-9)
                    if env_steps >= next_checkpoint or env_steps >= budget:
                        record = self._checkpoint(algo, recorder, env_steps, train_return,
                                                  seconds_at_start + elapsed)
                        log(f"  checkpoint {record.name}: eval return {record.eval_return:.1f} "
                            f"± {record.eval_return_std:.1f} over {cfg.eval_episodes} episodes")
                        next_checkpoint = (env_steps // cfg.checkpoint_every + 1) * cfg.checkpoint_every
                    last = self.state.checkpoints[-1].eval_return if self.state.checkpoints else None
                    progress = TrainingProgress(
                        self.env_id, self.seed, env_steps, budget, train_return, last, rate,
                        (budget - env_steps) / rate if rate > 0 else None,
                    )
                    log(format_progress(progress))
                    if on_progress is not None:
                        on_progress(progress)
                    if self.state.env_steps >= budget or done(self.state.checkpoints):
                        break
            finally:
                algo.stop()
                _RECORDERS.pop(token, None)

    def _algorithm_config(self, token: str, iteration_steps: int) -> Any:
        from ray.rllib.algorithms.sac import SACConfig
        from ray.tune.registry import register_env

        register_env(_ENV_NAME, _make_recording_env)
        cfg = self.config
        hidden = list(cfg.hidden_sizes)
        # training_intensity = replayed / sampled transitions; one update of batch_size per env step by default.
        intensity = cfg.batch_size * cfg.updates_per_step
        return (
            SACConfig()
            .environment(_ENV_NAME, env_config={"env_id": self.env_id, "max_episode_steps": self.horizon,
                                                "recorder": token})
            .env_runners(num_env_runners=0, rollout_fragment_length=cfg.rollout_fragment_length)
            .learners(num_learners=0)
            .rl_module(model_config={"fcnet_hiddens": hidden, "fcnet_activation": "relu",
                                     "fusionnet_hiddens": hidden, "fusionnet_activation": "relu"},
                       **({"rl_module_spec": _mlp_q_module_spec()} if cfg.q_network == "mlp" else {}))
            .training(
                actor_lr=cfg.actor_lr, critic_lr=cfg.critic_lr, alpha_lr=cfg.alpha_lr, gamma=cfg.gamma, tau=cfg.tau,
                train_batch_size_per_learner=cfg.batch_size, training_intensity=intensity,
                num_steps_sampled_before_learning_starts=cfg.learning_starts,
                replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": cfg.replay_capacity},
            )
            .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=iteration_steps)
            .debugging(seed=self._session_seed(), log_level="ERROR")
        )

    def _session_seed(self) -> int:
        """A new seed after each resume: RLlib re-seeds its envs and torch from it on build (and the replay buffer
        its sampling), and replaying the very same start states and exploration noise as the first session would
        add nothing."""
        return self.seed + 1_000_003 * self.state.resumes

    def _restore(self, algo: Any, replay: _UniformReplay, log: Log) -> None:
        """Learner, optimisers and counters from RLlib's checkpoint; the replay buffer from our recording."""
        algo.restore_from_path(str(self.directory / "resume" / self.state.resume))
        for chunk in self._chunks(self.state.env_steps):
            replay.add(chunk)
        self.state.resumes += 1
        self._save_state()
        log(f"  resumed from {self.state.resume}: {self.state.env_steps:,} env steps, replay buffer refilled with "
            f"{replay.size:,} transitions")

    def _checkpoint(self, algo: Any, recorder: _Recorder, env_steps: int, train_return: float | None,
                    training_seconds: float) -> CheckpointRecord:
        """Save policy, replay chunk and resume state, evaluate, then commit them in state.json."""
        from romi.evaluation import evaluate

        name = f"step_{env_steps:010d}"
        policies, replay, resume = (self.directory / d for d in ("policies", "replay", "resume"))
        for d in (policies, replay, resume):
            d.mkdir(parents=True, exist_ok=True)
        _atomic_dir(policies / name, lambda p: algo.get_module().save_to_path(str(p)))
        chunk = recorder.flush()
        tmp = replay / f".{name}.{uuid.uuid4().hex[:8]}.npz"
        np.savez(tmp, **chunk)
        os.replace(tmp, replay / f"{name}.npz")
        _atomic_dir(resume / name, lambda p: algo.save_to_path(str(p)))

        policy = SACPolicy(algo.get_module(), self.action_space)
        env = _make_env(self.env_id, self.horizon)
        # The same start states at every checkpoint, so returns are comparable across checkpoints.
        result = evaluate(policy.act, env, episodes=self.config.eval_episodes, seed=10_000 + 1_000 * self.seed)
        env.close()
        record = CheckpointRecord(
            name=name, env_steps=env_steps, eval_return=float(result.mean_return),
            eval_return_std=float(np.std(result.returns)), train_return=train_return,
            training_seconds=training_seconds,
        )
        previous_resume = self.state.resume
        self.state.checkpoints.append(record)
        self.state.env_steps = env_steps
        self.state.next_episode = recorder.next_episode
        self.state.resume = name
        self.state.training_seconds = training_seconds
        self._save_state()
        if previous_resume is not None and previous_resume != name:
            shutil.rmtree(resume / previous_resume, ignore_errors=True)  # only the last one is needed
        return record

    def _discard_uncommitted(self) -> None:
        """Files of a checkpoint that was being written when the run was interrupted (not in state.json)."""
        known = {c.name for c in self.state.checkpoints}
        for sub, suffix in (("policies", ""), ("replay", ".npz"), ("resume", "")):
            folder = self.directory / sub
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                stem = path.name[: -len(suffix)] if suffix and path.name.endswith(suffix) else path.name
                keep = stem in known and (sub != "resume" or stem == self.state.resume)
                if keep:
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


@functools.cache
def _mlp_q_module_spec() -> Any:
    """RLlib's SAC module with D4RL's Q-functions: `fcnet_hiddens` on concat(observation, action), then a linear
    output (RLlib's Q head); the policy is unchanged (`fcnet_hiddens` on the observation, squashed Gaussian).

    Classes made here pickle by value into RLlib's checkpoints, so those load without this module.
    """
    import torch
    from ray.rllib.algorithms.sac.sac_catalog import SACCatalog
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.models.base import ENCODER_OUT
    from ray.rllib.core.models.configs import MLPEncoderConfig
    from ray.rllib.core.models.torch.encoder import TorchMLPEncoder
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    class ConcatQEncoder(TorchMLPEncoder):
        def _forward(self, inputs: dict, **kwargs: Any) -> dict:
            return {ENCODER_OUT: self.net(torch.cat([inputs[Columns.OBS], inputs[Columns.ACTIONS]], dim=-1))}

    class MLPQCatalog(SACCatalog):
        def _build_qf_encoder_continuous(self, framework: str) -> Any:
            hidden = list(self._model_config_dict["fcnet_hiddens"])
            activation = self._model_config_dict["fcnet_activation"]
            config = MLPEncoderConfig(
                input_dims=(int(np.prod(self.observation_space.shape)) + int(np.prod(self.action_space.shape)),),
                hidden_layer_dims=hidden[:-1], hidden_layer_activation=activation,
                output_layer_dim=hidden[-1], output_layer_activation=activation,
            )
            return ConcatQEncoder(config)

    return RLModuleSpec(catalog_class=MLPQCatalog)


def _make_env(env_id: str, horizon: int) -> gym.Env:
    try:
        return gym.make(env_id, max_episode_steps=horizon)
    except gym.error.Error as err:
        raise RomiError(f"unknown environment {env_id!r} ({err})",
                        "use a Gymnasium MuJoCo id such as Hopper-v5; `romi data list` shows the tasks") from err


def _episode_return_mean(result: dict[str, Any], previous: float | None) -> float | None:
    value = result.get("env_runners", {}).get("episode_return_mean")
    if value is None or not math.isfinite(float(value)):
        return previous
    return float(value)


def _atomic_dir(final: Path, write: Callable[[Path], Any]) -> None:
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}")
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


@contextlib.contextmanager
def _ray_session() -> Iterator[None]:
    """Use the caller's Ray if it is up; otherwise a small private one (never someone else's cluster)."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2, logging_level=logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _quiet_rllib() -> Iterator[None]:
    """RLlib warns on every build that SAC runs on the new API stack (that is what we want), and gymnasium
    that RLlib re-registers its env; the build also sets the "ray.rllib" logger's level, restored here."""
    import warnings

    logger = logging.getLogger("ray.rllib")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Overriding environment rllib-single-agent-env-v0")
            yield
    finally:
        logger.setLevel(previous)
