"""The Ray layer of imagination: rollout actors fill the model buffer in the object store.

Each actor receives the dynamics model, the rollout policy and the start-state pool once, through
the object store (`ray.put` by the trainer, resolved when the actor is created). The buffer is a
list of shards, one `generate(size, seed)` task each: a shard's content depends only on its seed
(`shard_plan`), so the buffer is identical whatever the number of actors or the order in which they
finish. Shards come back as numpy arrays, which Ray hands to the trainer as zero-copy views of the
shared-memory object store; the trainer then concatenates them once into its own tensors.

An actor that dies is restarted (`max_restarts`) and its pending and running shards are retried on
the new process (`max_task_retries`), so the buffer still holds exactly the planned transitions.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from romi.imagination.rollout import Rollouts, generate_shard
from romi.models.termination import termination_fn

MAX_RESTARTS = 3


class RolloutWorker:
    """One rollout actor (wrapped with `ray.remote` by `rollout_worker_class`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        policy: torch.nn.Module,
        start_pool: np.ndarray,
        start_weights: np.ndarray | None,
        horizon: int,
        domain: str,
        goal: np.ndarray | None,
        start_batch_size: int,
        threads: int = 1,
    ) -> None:
        torch.set_num_threads(threads)  # one actor per CPU: no oversubscription
        self.model, self.policy = model.eval(), policy.eval()
        # The pool arrives as a read-only view of the object store; torch only reads it (no copy).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.start_pool = torch.as_tensor(np.asarray(start_pool))
            self.start_weights = None if start_weights is None else torch.as_tensor(np.asarray(start_weights))
        self.horizon, self.start_batch_size = horizon, start_batch_size
        self.is_done = termination_fn(domain, goal)

    def generate(self, size: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        started = time.perf_counter()
        with torch.inference_mode():
            shard = generate_shard(self.model, self.policy, self.start_pool, self.start_weights, size,
                                   self.horizon, self.is_done, self.start_batch_size, seed)
        seconds = time.perf_counter() - started
        return shard.to_numpy(), {"transitions": float(len(shard)), "seconds": seconds, "pid": float(os.getpid())}

    def pid(self) -> int:
        return os.getpid()


def rollout_worker_class() -> Any:
    import ray

    return ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(RolloutWorker)


@dataclass
class RayBufferBuilder:
    """A `BufferBuilder` (see `romi.pipeline`) that spreads the shard plan over `num_workers` actors."""

    num_workers: int
    log: Any = print
    stats: list[dict[str, float]] = field(default_factory=list)
    workers: list[Any] = field(default_factory=list)
    on_workers_started: Any = None
    """Called with the actor handles before any shard is submitted (tests use it to kill one)."""

    def __call__(
        self,
        model: torch.nn.Module,
        policy: torch.nn.Module,
        start_pool: torch.Tensor,
        start_weights: torch.Tensor | None,
        plan: list[tuple[int, int]],
        horizon: int,
        domain: str,
        goal: np.ndarray | None,
        start_batch_size: int,
    ) -> Rollouts:
        import ray

        started = time.perf_counter()
        # Weights go into the object store once; every actor (and any restarted one) reads them there.
        model_ref = ray.put(copy.deepcopy(model).cpu())
        policy_ref = ray.put(copy.deepcopy(policy).cpu())
        pool_ref = ray.put(start_pool.cpu().numpy())
        weights_ref = ray.put(None if start_weights is None else start_weights.cpu().numpy())
        worker_cls = rollout_worker_class()
        self.workers = [
            worker_cls.remote(model_ref, policy_ref, pool_ref, weights_ref, horizon, domain, goal, start_batch_size)
            for _ in range(self.num_workers)
        ]
        if self.on_workers_started is not None:
            self.on_workers_started(self.workers)
        pending = [
            self.workers[i % self.num_workers].generate.options(num_returns=2).remote(size, seed)
            for i, (size, seed) in enumerate(plan)
        ]
        shard_refs = [refs[0] for refs in pending]
        self.stats = ray.get([refs[1] for refs in pending])
        shards = [Rollouts.from_numpy(arrays) for arrays in ray.get(shard_refs)]
        buffer = Rollouts.concat(shards)
        del shards, shard_refs, pending  # release the object-store copies
        for worker in self.workers:
            ray.kill(worker)
        seconds = time.perf_counter() - started
        total = sum(s["transitions"] for s in self.stats)
        per_worker: dict[float, float] = {}
        for s in self.stats:
            per_worker[s["pid"]] = per_worker.get(s["pid"], 0.0) + s["seconds"]
        rates = [f"{sum(x['transitions'] for x in self.stats if x['pid'] == p) / t:,.0f}/s"
                 for p, t in per_worker.items()]
        self.log(f"model buffer: {int(total):,} transitions from {self.num_workers} actors in {seconds:.1f} s "
                 f"({total / seconds:,.0f}/s in total; per actor {', '.join(rates)})")
        return buffer
