"""One online SAC run per (environment, seed), resumable, kept on disk so every dataset of the family
shares it:

    <minari store parent>/romi-behaviour/<env id>/seed<k>/
        state.json             the truth: config fingerprint, env steps, checkpoints and their eval returns,
                               which one is medium / expert, the resume checkpoint
        policies/step_N/       RLlib RLModule checkpoint of the policy after N env steps (all kept: the
                               threshold rule is a pure function of the list, and the best is always there)
        replay/step_N.npz      every transition the SAC sampled since the previous checkpoint, in order
        resume/step_N/         the full RLlib Algorithm (learner, optimisers, counters) of the last checkpoint
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from romi.data.make.sac.config import SACBehaviourConfig, default_behaviour_root
from romi.data.make.sac.policy import SACPolicy
from romi.data.make.sac.recording import RECORDERS, REPLAY_KEYS, Recorder, make_recording_env, replay_episodes
from romi.data.make.sac.rllib import (
    ENV_NAME,
    SACTrainingStep,
    UniformReplay,
    mlp_q_module_spec,
    quiet_rllib,
    ray_session,
    torch_threads,
)
from romi.data.make.sac.selection import CheckpointRecord, best_checkpoint, choose_medium, first_reaching
from romi.errors import RomiError
from romi.io import atomic_dir, atomic_save_npz, atomic_write_text
from romi.progress import format_duration
from romi.types import Log

STATE_FILE = "state.json"
_STATE_VERSION = 1
_RATE_WINDOW = 5
"""Iterations over which steps/s (and so the ETA) is measured."""


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
        # atomic: a crash leaves the old state or the new, never half
        atomic_write_text(self.state_path, json.dumps(self.state.to_json(), indent=1))

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
                chunks.append({k: f[k] for k in REPLAY_KEYS})
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
        recorder = Recorder(next_episode=self.state.next_episode)
        token = uuid.uuid4().hex
        RECORDERS[token] = recorder
        with ray_session(), torch_threads(cfg.torch_threads), quiet_rllib():
            # One RLlib iteration samples this many steps (fragments are cut to end on it): a progress line each,
            # and no overshoot of a small budget.
            iteration = max(1, min(cfg.report_every, cfg.checkpoint_every, budget - self.state.env_steps))
            algo = self._algorithm_config(token, iteration).build_algo()
            replay = UniformReplay(cfg.replay_capacity, self.observation_space, self.action_space,
                                    seed=self._session_seed())
            algo.training_step = SACTrainingStep(algo, recorder, replay, cfg, period=iteration,
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
                RECORDERS.pop(token, None)

    def _algorithm_config(self, token: str, iteration_steps: int) -> Any:
        from ray.rllib.algorithms.sac import SACConfig
        from ray.tune.registry import register_env

        register_env(ENV_NAME, make_recording_env)
        cfg = self.config
        hidden = list(cfg.hidden_sizes)
        # training_intensity = replayed / sampled transitions; one update of batch_size per env step by default.
        intensity = cfg.batch_size * cfg.updates_per_step
        return (
            SACConfig()
            .environment(ENV_NAME, env_config={"env_id": self.env_id, "max_episode_steps": self.horizon,
                                                "recorder": token})
            .env_runners(num_env_runners=0, rollout_fragment_length=cfg.rollout_fragment_length)
            .learners(num_learners=0)
            .rl_module(model_config={"fcnet_hiddens": hidden, "fcnet_activation": "relu",
                                     "fusionnet_hiddens": hidden, "fusionnet_activation": "relu"},
                       **({"rl_module_spec": mlp_q_module_spec()} if cfg.q_network == "mlp" else {}))
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

    def _restore(self, algo: Any, replay: UniformReplay, log: Log) -> None:
        """Learner, optimisers and counters from RLlib's checkpoint; the replay buffer from our recording."""
        algo.restore_from_path(str(self.directory / "resume" / self.state.resume))
        for chunk in self._chunks(self.state.env_steps):
            replay.add(chunk)
        self.state.resumes += 1
        self._save_state()
        log(f"  resumed from {self.state.resume}: {self.state.env_steps:,} env steps, replay buffer refilled with "
            f"{replay.size:,} transitions")

    def _checkpoint(self, algo: Any, recorder: Recorder, env_steps: int, train_return: float | None,
                    training_seconds: float) -> CheckpointRecord:
        """Save policy, replay chunk and resume state, evaluate, then commit them in state.json."""
        from romi.evaluation import evaluate

        name = f"step_{env_steps:010d}"
        policies, replay, resume = (self.directory / d for d in ("policies", "replay", "resume"))
        for d in (policies, replay, resume):
            d.mkdir(parents=True, exist_ok=True)
        atomic_dir(policies / name, lambda p: algo.get_module().save_to_path(str(p)))
        chunk = recorder.flush()
        atomic_save_npz(replay / f"{name}.npz", chunk)
        atomic_dir(resume / name, lambda p: algo.save_to_path(str(p)))

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
