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
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from romi.imagination.rollout import BufferRequest
from romi.types import Batch

MAX_RESTARTS = 3


class RolloutWorker:
    """One rollout actor (wrapped with `ray.remote` by `rollout_worker_class`)."""

    def __init__(self, request: BufferRequest, threads: int = 1) -> None:
        torch.set_num_threads(threads)  # one actor per CPU: no oversubscription
        self.request = request

    def generate(self, size: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        started = time.perf_counter()
        shard = self.request.generate(size, seed)
        seconds = time.perf_counter() - started
        return shard.to_numpy(), {"transitions": float(len(shard)), "seconds": seconds, "pid": float(os.getpid())}

    def pid(self) -> int:
        """The actor's process (the fault-tolerance test kills it mid-buffer)."""
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

    def __call__(self, request: BufferRequest) -> Batch:
        import ray

        started = time.perf_counter()
        # The request (model and policy weights, start states) goes into the object store once;
        # every actor, and any restarted one, reads it from there.
        cpu_request = dataclasses.replace(
            request,
            model=copy.deepcopy(request.model).cpu(),  # type: ignore[attr-defined]
            policy=copy.deepcopy(request.policy).cpu(),  # type: ignore[attr-defined]
            start_pool=request.start_pool.cpu(),
            start_weights=None if request.start_weights is None else request.start_weights.cpu(),
        )
        request_ref = ray.put(cpu_request)
        worker_cls = rollout_worker_class()
        self.workers = [worker_cls.remote(request_ref) for _ in range(self.num_workers)]
        pending = [
            self.workers[i % self.num_workers].generate.options(num_returns=2).remote(size, seed)
            for i, (size, seed) in enumerate(request.plan)
        ]
        shard_refs = [refs[0] for refs in pending]
        self.stats = ray.get([refs[1] for refs in pending])
        shards = [Batch.from_numpy(arrays) for arrays in ray.get(shard_refs)]
        buffer = Batch.concat(shards)
        del shards, shard_refs, pending  # release the object-store copies
        for worker in self.workers:
            ray.kill(worker)
        seconds = time.perf_counter() - started
        total = sum(s["transitions"] for s in self.stats)
        rates = ", ".join(f"{rate:,.0f}/s" for rate in self.rates_per_actor())
        self.log(f"model buffer: {int(total):,} transitions from {self.num_workers} actors in {seconds:.1f} s "
                 f"({total / seconds:,.0f}/s in total; per actor process {rates})")
        return buffer

    def rates_per_actor(self) -> list[float]:
        """Transitions per second of each actor process while it was generating (last build)."""
        busy: dict[float, list[float]] = {}
        for s in self.stats:
            transitions_seconds = busy.setdefault(s["pid"], [0.0, 0.0])
            transitions_seconds[0] += s["transitions"]
            transitions_seconds[1] += s["seconds"]
        return [n / t for n, t in busy.values()]
