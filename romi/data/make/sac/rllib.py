"""The RLlib adapter: SAC on RLlib (ray 2.6x, new API stack) with our replay buffer, training step and
Q-networks.

Why each piece:
- num_env_runners=0 and num_learners=0: sampling and learning run in this process, so a run needs one
  core and the environment wrapper below can hand its transitions to this process directly.
- One learner update of `batch_size` per env step (`updates_per_step`), as D4RL's SAC, made in
  fragments: the env runner takes `rollout_fragment_length` steps (default 1000) with the current
  policy, then the learner makes as many updates. That is rlkit's own loop (D4RL's SAC: 1000
  exploration steps, then 1000 updates, per train loop), and it pays RLlib's per-call costs (env
  runner call, weight sync, metrics) once per fragment instead of once per env step.
- Our training step and replay buffer (`SACTrainingStep`, bound as `algo.training_step`, which is how
  RLlib customises an algorithm; `UniformReplay`): RLlib's `EpisodeReplayBuffer` plus learner
  connector build a one-step episode object for every sampled transition and take it apart again,
  profiled at ~80 of the ~180 ms of an update of 256, more than the rest of RLlib's overhead together.
  Ours is RLlib's SAC step (sample, store, update, sync weights) on flat arrays: the same batch
  columns (n_step 1, importance weights 1), uniform over the stored transitions as D4RL's SAC
  (RLlib's default is prioritised), and seeded. What remains of an update is mostly torch (~16 of ~20
  ms with D4RL's networks, profiled). Measured A/B: see `SACBehaviourConfig.rollout_fragment_length`.
- The new-stack `Algorithm.get_state()` does not include a replay buffer, so we record every
  transition with a gymnasium wrapper around the env runner's environment (`RecordingEnv`), and the
  replay buffer is filled from that recording, in order: with a capacity >= the steps taken, the
  recording *is* the buffer's content. It is written at each checkpoint, gives medium-replay, and
  refills the buffer on resume.
- The networks are D4RL's (`q_network="mlp"`): the policy is RLlib's (`hidden_sizes` MLP, squashed
  Gaussian) and each Q-function an MLP of `hidden_sizes` on concat(observation, action)
  (`mlp_q_module_spec`). RLlib 2.6x's default SAC Q (`q_network="rllib"`) is a multi-stream encoder
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

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np

from romi.data.make.sac.config import SACBehaviourConfig
from romi.data.make.sac.recording import Recorder

ENV_NAME = "romi-sac-recording-env"
"""The name the recording env is registered under with RLlib."""


def unit_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Env actions -> the module's [-1, 1] actions, which RLlib's SAC learns from (it scales them to the bounds)."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return ((np.asarray(actions, dtype=np.float64) - low) / (high - low) * 2.0 - 1.0).astype(np.float32)


class UniformReplay:
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
        """Append a recorded chunk (`REPLAY_KEYS` arrays); returns its number of transitions."""
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


class SACTrainingStep:
    """RLlib SAC's training step (DQN's `_training_step_new_api_stack`) on the `UniformReplay`.

    Bound as `algo.training_step`. Each call samples a fragment of up to `rollout_fragment_length` env
    steps with the local env runner (cut so that no fragment crosses a multiple of `period` steps from
    `origin`: RLlib's iterations, hence progress lines and checkpoints, end exactly on them), adds it
    to the replay buffer from the recording, makes `updates_per_step` learner updates per env step
    from `learning_starts` on (a fraction carries over), each on `batch_size` transitions drawn
    uniformly, and sends the new weights to the env runner. RLlib's own replay buffer stays empty.
    """

    def __init__(self, algo: Any, recorder: Recorder, replay: UniformReplay, config: SACBehaviourConfig, *,
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


@functools.cache
def mlp_q_module_spec() -> Any:
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


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
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
def torch_threads(threads: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def quiet_rllib() -> Iterator[None]:
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
