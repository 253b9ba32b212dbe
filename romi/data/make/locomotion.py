"""Locomotion datasets on the Gymnasium `*-v5` simulators (spec §7).

- `random`: uniform random actions, as D4RL's.
- `medium`, `medium-replay`, `medium-expert` (and `expert`, written beside them): D4RL's recipe with an
  online SAC run per (environment, seed) trained with RLlib (`romi.data.make.sac`): medium = the
  checkpoint closest to a third of expert return (of those up to the first reaching it), acting
  stochastically; medium-replay = everything the SAC sampled up to that checkpoint, in order; expert =
  the best checkpoint of the run trained to its budget (or to expert return); medium-expert = medium +
  expert episodes, as `minari.combine_datasets`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from romi.data.make import Progress
from romi.data.make.common import RecipeResult, episode_buffer
from romi.data.make.sac import (
    BehaviourRun,
    CheckpointRecord,
    SACBehaviourConfig,
    first_reaching,
)
from romi.progress import format_duration
from romi.tasks import TaskSpec
from romi.types import Log

DEFAULT_STEPS = 1_000_000


def rollout_episodes(
    env_id: str, horizon: int, act: Callable[[np.ndarray], np.ndarray], steps: int, seed: int,
    progress: Progress | None,
) -> list[Any]:
    """`steps` steps of `act`, resetting on termination or after `horizon` steps; episode i resets with seed + i.

    The last episode is cut at `steps` and marked truncated. Deterministic given `act` and `seed`.
    """
    env = gym.make(env_id, max_episode_steps=horizon)
    episodes = []
    episode_seed = seed
    obs, _ = env.reset(seed=episode_seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    for t in range(steps):
        action = act(obs)
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
    return episodes


def make_random_dataset(
    task: TaskSpec, *, steps: int | None, seed: int, ref_episodes: int, progress: Progress | None
) -> RecipeResult:
    """`steps` steps of uniform random actions, resetting on termination or the 1000-step limit."""
    del ref_episodes  # locomotion datasets use the D4RL reference scores (spec §7)
    steps = steps or DEFAULT_STEPS
    space = gym.make(task.env_id).action_space
    rng = np.random.default_rng(seed)
    low, high = space.low, space.high

    started = time.perf_counter()
    episodes = rollout_episodes(
        task.env_id, task.horizon, lambda obs: rng.uniform(low, high).astype(np.float32), steps, seed, progress
    )
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


# --------------------------------------------------------------------------------------------
# The SAC family
# --------------------------------------------------------------------------------------------


def data_steps(task: TaskSpec, steps: int | None) -> int | None:
    """How many simulated data steps `romi data make` will report for `task` (None: set by the SAC run)."""
    if task.recipe == "maze":
        from romi.data.make.maze import default_steps

        return steps or default_steps(task)
    steps = steps or DEFAULT_STEPS
    if task.recipe != "locomotion-sac":
        return steps
    return {"medium": steps, "medium-expert": 2 * steps}.get(task.dataset_kind)


def expert_dataset_id(task: TaskSpec) -> str:
    """Where the expert half of medium-expert is written too (no paper task reads it; D4RL has it)."""
    return f"local/{task.domain}/expert-v0"


def make_sac_dataset(
    task: TaskSpec,
    *,
    steps: int | None,
    seed: int,
    ref_episodes: int,
    progress: Progress | None,
    budget: int | None = None,
    medium_fraction: float | None = None,
    config: SACBehaviourConfig | None = None,
    behaviour_root: Path | None = None,
    log: Log | None = None,
) -> RecipeResult:
    """medium / medium-replay / medium-expert of `task` from the SAC run of (its env, `seed`).

    budget: SAC env steps the run may reach (default: the config's medium / expert budget).
    medium_fraction: the medium threshold as a fraction of D4RL's expert reference return.
    config: SAC and checkpoint settings (tests use tiny networks). The run is trained only as far as
    this dataset needs, and reused (or resumed) by the other datasets of the family.
    """
    del ref_episodes  # locomotion datasets use the D4RL reference scores (spec §7)
    log = log or (lambda message: None)
    cfg = config or SACBehaviourConfig()
    if medium_fraction is not None:
        cfg = dataclasses.replace(cfg, medium_fraction=medium_fraction)
    steps = steps or DEFAULT_STEPS
    kind = task.dataset_kind
    if kind not in ("medium", "medium-replay", "medium-expert"):
        raise ValueError(f"{task.name}: the SAC recipe makes medium, medium-replay and medium-expert, not {kind}")
    run = BehaviourRun(task.env_id, seed, cfg, horizon=task.horizon, root=behaviour_root)
    threshold = cfg.medium_fraction * task.d4rl_ref_max
    medium_budget = budget or cfg.medium_budget
    log(_plan(task, run, threshold, medium_budget, budget or cfg.expert_budget, steps))

    started = time.perf_counter()
    medium = run.medium(threshold, budget=medium_budget, log=log)
    log(f"medium policy: {medium.name} (eval return {medium.eval_return:.1f}, the closest to the threshold "
        f"{threshold:.1f} of the checkpoints up to the first reaching it; after {medium.env_steps:,} SAC env steps)")
    behaviour: dict[str, Any] = {
        "run_dir": str(run.directory), "env_id": task.env_id, "seed": seed, "config": run.state.fingerprint,
        "config_hash": run.fingerprint_hash, "medium_fraction": cfg.medium_fraction, "medium_threshold": threshold,
        "medium": dataclasses.asdict(medium),
    }
    sac = _sac_summary(cfg)
    if kind == "medium":
        episodes = _policy_episodes(task, run, medium, steps, seed, stream=1, progress=progress)
        description = (
            f"{task.name}: D4RL-style medium data made by romi. {steps:,} steps of the medium SAC policy acting "
            f"stochastically on {task.env_id} (data seed {seed}; reset on termination or after {task.horizon} "
            f"steps). {_medium_sentence(medium, threshold, cfg, task, seed, sac)} Reference scores are D4RL's."
        )
    elif kind == "medium-replay":
        episodes = [episode_buffer(e["observations"], e["actions"], e["rewards"], e["terminations"], e["truncations"])
                    for e in run.replay_until(medium)]
        if progress is not None:
            progress(medium.env_steps)
        description = (
            f"{task.name}: D4RL-style medium-replay data made by romi: all {medium.env_steps:,} transitions the "
            f"online SAC run sampled on {task.env_id} up to the medium checkpoint, in order (its replay buffer: "
            f"the first {cfg.learning_starts:,} steps from the initial policy, then the learning policy acting "
            "stochastically; the episode running at the checkpoint is cut and marked truncated). "
            f"{_medium_sentence(medium, threshold, cfg, task, seed, sac)} Reference scores are D4RL's."
        )
    else:
        expert_budget = budget or cfg.expert_budget
        expert = run.expert(cfg.expert_fraction * task.d4rl_ref_max, budget=expert_budget, log=log)
        log(f"expert policy: {expert.name} (best eval return {expert.eval_return:.1f} of "
            f"{len(run.checkpoints)} checkpoints, {run.state.env_steps:,} SAC env steps)")
        behaviour["expert"] = dataclasses.asdict(expert)
        behaviour["expert_budget"] = expert_budget
        medium_episodes = _policy_episodes(task, run, medium, steps, seed, stream=1, progress=progress)
        expert_episodes = _policy_episodes(task, run, expert, steps, seed, stream=2, progress=progress)
        expert_sentence = (
            f"The expert policy is checkpoint {expert.name} of the same run, the best of its "
            f"{len(run.checkpoints)} checkpoints (eval return {expert.eval_return:.1f} ± "
            f"{expert.eval_return_std:.1f} after {expert.env_steps:,} env steps; trained to {expert_budget:,} "
            f"steps or an eval return of {cfg.expert_fraction:g} x D4RL's expert reference)."
        )
        _write_expert(task, expert_episodes, seed, steps, behaviour, expert_sentence, log)
        episodes = medium_episodes + expert_episodes
        description = (
            f"{task.name}: D4RL-style medium-expert data made by romi: {steps:,} steps of the medium SAC policy "
            f"then {steps:,} steps of the expert SAC policy, both acting stochastically on {task.env_id} (data "
            f"seed {seed}), concatenated as minari.combine_datasets does (the medium half equals "
            f"{task.local_id.replace('medium-expert', 'medium')}, the expert half {expert_dataset_id(task)}). "
            f"{_medium_sentence(medium, threshold, cfg, task, seed, sac)} {expert_sentence} Reference scores are "
            "D4RL's."
        )
    return RecipeResult(
        episodes=episodes,
        ref_min_score=task.d4rl_ref_min,
        ref_max_score=task.d4rl_ref_max,
        description=description,
        generation_seconds=time.perf_counter() - started,
        eval_env_spec=task.env_id,
        extra_metadata={"romi_behaviour": behaviour, "romi_data_steps_per_policy": steps},
    )


def _policy_episodes(
    task: TaskSpec, run: BehaviourRun, record: CheckpointRecord, steps: int, seed: int, *, stream: int,
    progress: Progress | None,
) -> list[Any]:
    """`steps` steps of a checkpoint acting stochastically; `stream` separates the medium and expert noise."""
    policy = run.load_policy(record)
    rng = np.random.default_rng([seed, stream])
    return rollout_episodes(task.env_id, task.horizon, lambda obs: policy.act(obs, rng), steps, seed, progress)


def _write_expert(
    task: TaskSpec, episodes: list[Any], seed: int, steps: int, behaviour: dict[str, Any], sentence: str, log: Log
) -> None:
    from romi.data.minari_io import dataset_present
    from romi.data.minari_write import write_dataset

    dataset_id = expert_dataset_id(task)
    if dataset_present(dataset_id):
        log(f"replacing {dataset_id} with the expert half of this dataset")
    write_dataset(
        dataset_id,
        episodes,
        env_id=task.env_id,
        eval_env=task.env_id,
        ref_min_score=task.d4rl_ref_min,
        ref_max_score=task.d4rl_ref_max,
        description=(
            f"{task.domain}-expert: D4RL-style expert data made by romi (beside {task.local_id}). {steps:,} steps "
            f"of the expert SAC policy acting stochastically on {task.env_id} (data seed {seed}). {sentence} "
            "Reference scores are D4RL's."
        ),
        extra_metadata={
            "romi_task": None, "romi_recipe": task.recipe, "romi_seed": seed, "romi_made_with": task.name,
            "d4rl_ref_min_score": task.d4rl_ref_min, "d4rl_ref_max_score": task.d4rl_ref_max,
            "romi_behaviour": behaviour, "romi_data_steps_per_policy": steps,
        },
        overwrite=True,
    )


def _sac_summary(cfg: SACBehaviourConfig) -> str:
    hidden = "x".join(map(str, cfg.hidden_sizes))
    return (f"{hidden} networks, batch {cfg.batch_size}, {cfg.updates_per_step:g} update(s) per env step, "
            f"{cfg.learning_starts:,} initial steps")


def _medium_sentence(
    medium: CheckpointRecord, threshold: float, cfg: SACBehaviourConfig, task: TaskSpec, seed: int, sac: str
) -> str:
    return (
        f"The medium policy is checkpoint {medium.name} of an online RLlib SAC run (seed {seed}; {sac}; a "
        f"checkpoint every {cfg.checkpoint_every:,} env steps, evaluated deterministically over "
        f"{cfg.eval_episodes} episodes), the closest to the threshold {threshold:.1f} = "
        f"{cfg.medium_fraction:.3g} x D4RL's expert reference {task.d4rl_ref_max} of those up to the first "
        f"reaching it; its eval return is "
        f"{medium.eval_return:.1f} ± {medium.eval_return_std:.1f}, after {medium.env_steps:,} env steps "
        f"({format_duration(medium.training_seconds)} of SAC training)."
    )


def _plan(task: TaskSpec, run: BehaviourRun, threshold: float, medium_budget: int, expert_budget: int,
          steps: int) -> str:
    """What is about to happen and how long it may take, printed before anything runs."""
    state = run.state
    have_medium = first_reaching(state.checkpoints, threshold) is not None
    needs_expert = task.dataset_kind == "medium-expert"
    target = expert_budget if needs_expert else medium_budget
    data = {"medium": f"then {steps:,} steps of data", "medium-replay": "then its replay buffer as data",
            "medium-expert": f"then {2 * steps:,} steps of data"}[task.dataset_kind]
    if have_medium and (not needs_expert or state.env_steps >= expert_budget):
        return (f"{task.name}: reusing the SAC run in {run.directory} ({state.env_steps:,} env steps, "
                f"{len(state.checkpoints)} checkpoints), {data}")
    goal = (f"until a checkpoint's eval return reaches {threshold:.1f} ({run.config.medium_fraction:.3g} x D4RL's "
            f"expert reference {task.d4rl_ref_max})")
    if needs_expert:
        goal += f", then on to {expert_budget:,} steps for the expert policy"
    history = ""
    if state.env_steps and state.training_seconds > 0:
        rate = state.env_steps / state.training_seconds
        left = max(0, target - state.env_steps) / rate
        history = (f" This run has {state.env_steps:,} steps so far at {rate:.1f} steps/s: up to "
                   f"{format_duration(left)} more.")
    return (
        f"{task.name}: RLlib SAC on {task.env_id} (seed {run.seed}) for up to {target:,} env steps {goal}, "
        f"{data}. At full size this is HOURS of CPU per environment (one core; SAC's steps/s and ETA are "
        f"printed as it trains).{history} Checkpoints go to {run.directory}: interrupt at any time and re-run "
        "the same command to resume; medium, medium-replay and medium-expert share this run."
    )
