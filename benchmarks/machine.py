"""The machine's float32 matmul throughput with torch: the ceiling every gradient step is measured against.

    python benchmarks/machine.py [--threads N]

Each shape is timed twice: by the wall clock and by this process's CPU time. On a machine shared with
other jobs the wall clock also counts time the process spent descheduled; with one thread, CPU time is
a fair estimate of what an idle core would do (with more threads it also counts OpenMP spin-waiting).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

# (label, batch, n, k, m): batch x (n x k) @ (k x m). The small ones are the shapes of our networks.
SHAPES: list[tuple[str, int, int, int, int]] = [
    ("1024 x 1024 @ 1024 x 1024", 1, 1024, 1024, 1024),
    ("1000 x 750 @ 750 x 750 (BCQ VAE, target pass)", 1, 1000, 750, 750),
    ("100 x 750 @ 750 x 750 (BCQ VAE, batch)", 1, 100, 750, 750),
    ("256 x 256 @ 256 x 256", 1, 256, 256, 256),
    ("2 x [256 x 256 @ 256 x 256] (bmm)", 2, 256, 256, 256),
    ("2 x [7936 x 256 @ 256 x 256] (CQL critics)", 2, 7936, 256, 256),
]


def time_call(fn: Callable[[], object], seconds: float = 0.3) -> tuple[float, float]:
    """(wall seconds, CPU seconds) per call, after a warm-up, repeating for at least `seconds` of wall time."""
    for _ in range(3):
        fn()
    calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds or calls < 5:
        fn()
        calls += 1
    return (time.perf_counter() - wall0) / calls, (time.process_time() - cpu0) / calls


def matmul_gflops(batch: int, n: int, k: int, m: int) -> tuple[float, float]:
    """(wall, CPU-time) GFLOP/s of a float32 (batched) matmul; one multiply-add = 2 FLOPs."""
    a, b = torch.randn(batch, n, k), torch.randn(batch, k, m)
    fn = (lambda: torch.mm(a[0], b[0])) if batch == 1 else (lambda: torch.bmm(a, b))
    wall, cpu = time_call(fn)
    flops = 2.0 * batch * n * k * m
    return flops / wall / 1e9, flops / cpu / 1e9


def peak_gflops() -> tuple[float, float]:
    """Best (wall, CPU-time) GFLOP/s over the shapes above: the reference for '% of peak'."""
    results = [matmul_gflops(*shape[1:]) for shape in SHAPES]
    return max(r[0] for r in results), max(r[1] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
    print(f"{'matmul':48s} {'GFLOP/s wall':>13s} {'GFLOP/s cpu':>12s}")
    for label, *shape in SHAPES:
        wall, cpu = matmul_gflops(*shape)
        print(f"{label:48s} {wall:13.1f} {cpu:12.1f}")


if __name__ == "__main__":
    main()
