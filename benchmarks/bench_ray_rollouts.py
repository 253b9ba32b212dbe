"""Model-buffer throughput with Ray rollout actors: 1 and 2 actors side by side with the in-process builder.

    python benchmarks/bench_ray_rollouts.py [--transitions 1000000] [--shard-size 50000] [--workers 1,2]

The request is the maze2d one of `bench_rollouts.py` (paper-sized reverse ensemble, uniform rollout
policy, h = 5, 1M start states). Each configuration builds the same shard plan; the buffers are checked
to be identical (they depend only on the shard seeds), and the time includes shipping the request
through the object store, starting the actors and gathering the shards: what a trial pays.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_rollouts import ACT, HORIZON, OBS, POOL, make_model

from romi.imagination.rollout import BufferRequest, build_buffer_in_process, shard_plan
from romi.imagination.workers import RayBufferBuilder
from romi.models.rollout_policy import UniformRolloutPolicy
from romi.types import Batch


def request(transitions: int, shard_size: int) -> BufferRequest:
    return BufferRequest(
        model=make_model(), policy=UniformRolloutPolicy([-1.0] * ACT, [1.0] * ACT),
        start_pool=torch.randn(POOL, OBS, generator=torch.Generator().manual_seed(1)), start_weights=None,
        plan=shard_plan(transitions, shard_size, base_seed=0), horizon=HORIZON, domain="maze2d", goal=None,
        start_batch_size=1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--shard-size", type=int, default=50_000)
    parser.add_argument("--workers", default="1,2", help="actor counts to time, comma-separated")
    args = parser.parse_args()

    torch.set_num_threads(1)
    req = request(args.transitions, args.shard_size)
    print(f"{args.transitions:,} reverse maze2d transitions in {len(req.plan)} shards; {os.cpu_count()} CPUs")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             object_store_memory=2 * 1024**3)

    started = time.perf_counter()
    reference: Batch = build_buffer_in_process(req)
    baseline = time.perf_counter() - started
    print(f"  in process, 1 thread      {baseline:7.1f} s  {args.transitions / baseline:9,.0f} transitions/s")
    for workers in (int(w) for w in args.workers.split(",")):
        builder = RayBufferBuilder(workers, log=lambda message: None)
        started = time.perf_counter()
        buffer = builder(req)
        seconds = time.perf_counter() - started
        rates = ", ".join(f"{rate:,.0f}/s" for rate in builder.rates_per_actor())
        same = all(torch.equal(getattr(buffer, f), getattr(reference, f)) for f in ("observations", "actions",
                                                                                   "rewards", "next_observations"))
        print(f"  {workers} Ray actor(s)          {seconds:7.1f} s  {args.transitions / seconds:9,.0f} transitions/s"
              f" in total (per actor while generating: {rates}); {baseline / seconds:.2f}x the in-process builder;"
              f" buffer identical: {same}")
    ray.shutdown()


if __name__ == "__main__":
    main()
