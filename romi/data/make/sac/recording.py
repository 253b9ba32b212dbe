"""Recording what the SAC samples: with a replay capacity >= the steps taken, the recording *is* its
replay buffer, in order. It is written at each checkpoint, gives medium-replay, and refills the buffer
on resume (RLlib's new-stack `Algorithm.get_state()` does not include the replay buffer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

RECORDERS: dict[str, Recorder] = {}
"""Live recorders by token: the env runner builds its env in this process and finds its recorder here."""


class Recorder:
    """Every transition the SAC's environment takes, in order, with a global episode index."""

    def __init__(self, next_episode: int) -> None:
        self.next_episode = next_episode
        self.episode = -1
        self.observation: np.ndarray | None = None
        self.rows: dict[str, list[Any]] = {k: [] for k in REPLAY_KEYS}
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
        for key, value in zip(REPLAY_KEYS, (self.observation, action, reward, observation, terminated, truncated,
                                              self.episode), strict=True):
            self.rows[key].append(value)
        self.observation = np.asarray(observation)
        self.steps += 1

    def take_new(self) -> dict[str, np.ndarray]:
        """The transitions since the last `take_new`, as arrays (they stay recorded for `flush`)."""
        chunk = {k: np.asarray(v[self.taken:], dtype=REPLAY_DTYPES[k]) for k, v in self.rows.items()}
        self.taken = len(self.rows["rewards"])
        return chunk

    def flush(self) -> dict[str, np.ndarray]:
        """The transitions since the last flush, as arrays (and forget them)."""
        assert self.taken == len(self.rows["rewards"]), "transitions recorded but not in the replay buffer"
        chunk = {k: np.asarray(v, dtype=REPLAY_DTYPES[k]) for k, v in self.rows.items()}
        self.rows = {k: [] for k in REPLAY_KEYS}
        self.taken = 0
        return chunk


REPLAY_KEYS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations",
                "episode_ids")
REPLAY_DTYPES: dict[str, Any] = {"observations": np.float64, "actions": np.float32, "rewards": np.float64,
                                  "next_observations": np.float64, "terminations": bool, "truncations": bool,
                                  "episode_ids": np.int64}


class RecordingEnv(gym.Wrapper):
    def __init__(self, env: gym.Env, recorder: Recorder) -> None:
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


def make_recording_env(env_config: Any) -> gym.Env:
    """RLlib env creator: the task's env, recording into the recorder registered under the token."""
    env = gym.make(env_config["env_id"], max_episode_steps=env_config["max_episode_steps"])
    recorder = RECORDERS.get(env_config["recorder"])
    if recorder is None:  # e.g. RLlib probing spaces outside a training session: nothing to record
        return env
    return RecordingEnv(env, recorder)


def replay_episodes(chunks: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Ordered transitions -> episodes (`observations` has one more row than the steps).

    An episode whose recording stops neither terminated nor truncated (it was running at the medium
    checkpoint, or at a checkpoint the run was resumed from) is marked truncated at its last step, and
    `cut` says so (the time limit did not end it).
    """
    if not chunks:
        return []
    data = {k: np.concatenate([c[k] for c in chunks]) for k in REPLAY_KEYS}
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
