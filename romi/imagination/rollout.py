"""Imagined rollouts and the model buffer (spec §3), pure and batched (no Ray here; `workers.py`
runs shards in parallel).

Reverse (ROMI): start from dataset states as s'; each step draws a ~ G(a | s') from the rollout
policy and (s, r) from the reverse model, stores (s, a, r, s'), and continues backwards from s.
Every reverse rollout therefore *ends* in a dataset state: the first transition stored for a start
row has that dataset state as its s'. Forward (FOMI): start from dataset states as s, store
(s, a, r, s'), continue from s'.

A stored transition is done when its later state (s' in both directions) is terminal; a done row is
stored with done=1 and stops there. A row whose prediction (or action, or reward) is not finite is
not stored at all and stops.

The buffer is a list of shards (`shard_plan`); each shard is `generate_shard(..., seed)`, whose
content depends only on its seed, so the buffer is the same whatever the number of workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from romi.config import ImaginationConfig
from romi.models.termination import termination_fn
from romi.types import Batch, IsDone, RolloutPolicy, StepModel

DEFAULT_START_BATCH_SIZE: int = ImaginationConfig.model_fields["start_batch_size"].default
"""Start states per batch of rollouts (spec §3: 1000); the config is the one source of the number."""


@dataclass(frozen=True)
class RowSampler:
    """Draws row indices in [0, num_rows): uniformly, or in proportion to fixed non-negative weights.

    Weighted draws invert a cumulative sum built once (searchsorted: O(n log N) per draw), where
    `torch.multinomial` re-scans all N weights at every call: on 2M rows and 100 draws it measured
    ~40x slower on this machine (benchmarks/bench_rollouts.py prints both). Zero-weight rows are
    never drawn: their cumulative sum equals their predecessor's, so no u in [0, 1) lands on them.
    """

    num_rows: int
    cdf: torch.Tensor | None  # (num_rows,) float64, last entry exactly 1; None = uniform

    @staticmethod
    def create(num_rows: int, weights: torch.Tensor | np.ndarray | None = None,
               device: str | torch.device = "cpu") -> RowSampler:
        if num_rows < 1:
            raise ValueError("cannot sample rows from an empty set")
        if weights is None:
            return RowSampler(num_rows, None)
        w = torch.as_tensor(weights, dtype=torch.float64, device=device)
        if w.shape != (num_rows,):
            raise ValueError(f"need one weight per row: {num_rows} rows, weights of shape {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("sampling weights must be finite, non-negative and not all zero")
        cdf = torch.cumsum(w, 0)
        return RowSampler(num_rows, cdf / cdf[-1])

    def __call__(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        device = generator.device if generator is not None else (self.cdf.device if self.cdf is not None else None)
        if self.cdf is None:
            return torch.randint(self.num_rows, (n,), device=device, generator=generator)
        u = torch.rand(n, dtype=torch.float64, device=self.cdf.device, generator=generator)
        # right=True: index i such that cdf[i-1] <= u < cdf[i]; the clamp only guards rounding.
        return torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.num_rows - 1)


def generate_rollouts(
    model: StepModel,
    policy: RolloutPolicy,
    start_states: torch.Tensor,
    horizon: int,
    is_done: IsDone,
    generator: torch.Generator | None = None,
) -> Batch:
    """Rollouts of at most `horizon` steps from each start state, in the model's direction.

    Transitions are stored step by step: first the step-1 transition of every surviving row, then
    step 2, and so on. For reverse rollouts, row k of step j+1 continues from the s of step j, so
    its s' equals that s (the chain); the rows of step 1 have the start states as s'.
    `generator=None` uses torch's global RNG (pass one for reproducible buffers).
    """
    if model.direction not in ("reverse", "forward"):
        raise ValueError(f"model.direction must be 'reverse' or 'forward', got {model.direction!r}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    reverse = model.direction == "reverse"
    current = start_states  # s' (reverse) or s (forward) of the next step
    parts: list[tuple[torch.Tensor, ...]] = []
    for _ in range(horizon):
        # The first step runs even on zero rows, so an empty result still has the right shapes.
        if parts and current.shape[0] == 0:
            break
        actions = policy.sample(current, generator)
        predicted, rewards = model.step(current, actions, generator)
        # On purpose unlike the official code, which stores non-finite predictions as they are: a NaN
        # or inf row would poison every learner batch that draws it, so it is dropped and its rollout ends.
        finite = (torch.isfinite(predicted).all(dim=1) & torch.isfinite(rewards)
                  & torch.isfinite(actions).all(dim=1))
        if reverse:  # stored (s = predicted, a, r, s' = current)
            obs, next_obs = predicted, current
        else:  # stored (s = current, a, r, s' = predicted)
            obs, next_obs = current, predicted
        done = is_done(next_obs).to(torch.bool) & finite  # always judged on the later state s'
        parts.append((obs[finite], actions[finite], rewards[finite], next_obs[finite], done[finite].float()))
        current = predicted[finite & ~done]  # done rows stop; so do non-finite ones (not stored)
    return Batch.concat([Batch(*part) for part in parts])


def fill_buffer(
    model: StepModel,
    policy: RolloutPolicy,
    sample_start_states: Callable[[int, torch.Generator | None], torch.Tensor],
    num_transitions: int,
    horizon: int,
    is_done: IsDone,
    start_batch_size: int = DEFAULT_START_BATCH_SIZE,
    generator: torch.Generator | None = None,
) -> Batch:
    """Exactly `num_transitions` imagined transitions: batches of `start_batch_size` rollouts until
    at least that many are stored, the last batch truncated.

    On purpose unlike the official code (a 4e6-row ring buffer refilled until full, so its last
    batches overwrite its first): the buffer holds exactly the first `num_transitions` rows, cut
    in shards (`shard_plan`) so that it is the same whatever the number of rollout actors.

    The result is allocated once and filled batch by batch, so the peak memory is the buffer plus one
    batch (collecting parts and concatenating would need twice the buffer: 1.3 GB for halfcheetah).
    """
    if num_transitions < 1:
        raise ValueError(f"num_transitions must be >= 1, got {num_transitions}")
    buffer: Batch | None = None
    stored, empty_batches = 0, 0
    with torch.no_grad():
        while stored < num_transitions:
            starts = sample_start_states(start_batch_size, generator)
            batch = generate_rollouts(model, policy, starts, horizon, is_done, generator)
            if len(batch) == 0:  # every start row's first prediction was non-finite
                empty_batches += 1
                if empty_batches >= 10:
                    raise RuntimeError("the model produced no finite transitions in 10 batches in a row: "
                                       "it has diverged")
                continue
            empty_batches = 0
            if buffer is None:
                buffer = Batch.allocate(batch, num_transitions)
            take = min(len(batch), num_transitions - stored)
            for room, rows in zip(buffer, batch, strict=True):
                room[stored:stored + take] = rows[:take]
            stored += take
    assert buffer is not None
    return buffer


class Shard(NamedTuple):
    """One piece of the model buffer: `size` transitions generated from `seed` alone."""

    size: int
    seed: int


def shard_plan(total: int, shard_size: int, base_seed: int) -> list[Shard]:
    """Every shard of the buffer; concatenated in this order the shards are the model buffer.

    Seeds are spawned from `np.random.SeedSequence(base_seed)`: independent streams, and shard i's
    seed does not depend on how many shards there are after it.
    """
    if total < 1 or shard_size < 1:
        raise ValueError(f"total and shard_size must be positive, got {total} and {shard_size}")
    sizes = [shard_size] * (total // shard_size) + ([total % shard_size] if total % shard_size else [])
    children = np.random.SeedSequence(base_seed).spawn(len(sizes))
    return [Shard(size, int(child.generate_state(1)[0])) for size, child in zip(sizes, children, strict=True)]


def generate_shard(
    model: StepModel,
    policy: RolloutPolicy,
    start_pool: torch.Tensor,
    start_weights: torch.Tensor | None,
    num_transitions: int,
    horizon: int,
    is_done: IsDone,
    start_batch_size: int,
    seed: int,
) -> Batch:
    """Exactly `num_transitions` imagined transitions whose content depends only on `seed`.

    Start states are drawn from `start_pool` with replacement, uniformly or in proportion to
    `start_weights` (return-weighted starts, spec §3). The official sum tree draws a batch without
    replacement; with 1000 starts out of 1e5-1e6 rows the two differ in a few repeated rows per batch.
    The generator lives on the pool's device.
    """
    generator = torch.Generator(device=start_pool.device).manual_seed(seed)
    rows = RowSampler.create(start_pool.shape[0], start_weights, device=start_pool.device)

    def sample_starts(n: int, gen: torch.Generator | None) -> torch.Tensor:
        return start_pool[rows(n, gen)]

    return fill_buffer(model, policy, sample_starts, num_transitions, horizon, is_done, start_batch_size, generator)


@dataclass(frozen=True)
class BufferRequest:
    """Everything needed to generate any shard of a model buffer; shipped once to each rollout actor."""

    model: StepModel
    policy: RolloutPolicy
    start_pool: torch.Tensor
    start_weights: torch.Tensor | None
    plan: list[Shard]
    horizon: int
    domain: str
    goal: np.ndarray | None
    start_batch_size: int

    def generate(self, size: int, seed: int) -> Batch:
        is_done = termination_fn(self.domain, self.goal)
        with torch.inference_mode():
            return generate_shard(self.model, self.policy, self.start_pool, self.start_weights, size, self.horizon,
                                  is_done, self.start_batch_size, seed)


def build_buffer_in_process(request: BufferRequest, log: Callable[[str], None] | None = None,
                            every: float = 10.0) -> Batch:
    """The model buffer, shard after shard in this process (`workers.RayBufferBuilder` uses actors). `log`
    hears how far it is, with an ETA, at most every `every` seconds (a 4M buffer takes minutes on a CPU)."""
    shards, started, last = [], time.perf_counter(), time.perf_counter()
    total, done = sum(size for size, _ in request.plan), 0
    for size, seed in request.plan:
        shards.append(request.generate(size, seed))
        done += size
        now = time.perf_counter()
        if log is not None and done < total and now - last >= every:
            eta = (total - done) * (now - started) / done
            log(f"model buffer: {done:,} / {total:,} transitions ({100 * done / total:.0f}%), ETA {eta:.0f} s")
            last = now
    return Batch.concat(shards)
