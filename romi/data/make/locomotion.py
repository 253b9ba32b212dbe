"""Locomotion datasets: `random` (uniform actions, as D4RL's) on the Gymnasium `*-v5` simulators."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

from romi.data.make import Progress
from romi.data.make.common import RecipeResult, episode_buffer
from romi.data.tasks import TaskSpec

DEFAULT_STEPS = 1_000_000


def make_random_dataset(
    task: TaskSpec, *, steps: int | None, seed: int, ref_episodes: int, progress: Progress | None
) -> RecipeResult:
    """`steps` steps of uniform random actions, resetting on termination or the 1000-step limit."""
    del ref_episodes  # locomotion datasets use the D4RL reference scores (spec §7)
    steps = steps or DEFAULT_STEPS
    env = gym.make(task.env_id, max_episode_steps=task.horizon)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high

    started = time.perf_counter()
    episodes = []
    episode_seed = seed
    obs, _ = env.reset(seed=episode_seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    for t in range(steps):
        action = rng.uniform(low, high).astype(np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        last = t == steps - 1
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated or (last and not terminated))
        if terminated or truncated or last:
            episodes.append(
                episode_buffer(np.asarray(observations), np.asarray(actions), np.asarray(rewards),
                               np.asarray(terminations), np.asarray(truncations))
            )
            if not last:
                episode_seed += 1
                obs, _ = env.reset(seed=episode_seed)
                observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        if progress is not None and (t + 1) % 10_000 == 0:
            progress(10_000)
    if progress is not None and steps % 10_000:
        progress(steps % 10_000)
    env.close()
    return RecipeResult(
        episodes=episodes,
        ref_min_score=task.d4rl_ref_min,
        ref_max_score=task.d4rl_ref_max,
        description=(
            f"{task.name}: D4RL-style random data made by romi. {steps} steps of uniform random actions on "
            f"{task.env_id} (reset on termination or after {task.horizon} steps). Reference scores are "
            "D4RL's for this environment."
        ),
        generation_seconds=time.perf_counter() - started,
        eval_env_spec=task.env_id,
    )
