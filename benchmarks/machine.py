"""The machine's float32 matmul throughput with torch: the ceiling every gradient step is measured against.

    python benchmarks/machine.py
"""

from __future__ import annotations

import time

import torch


def matmul_gflops(n: int, k: int, m: int, repeats: int = 30) -> float:
    a, b = torch.randn(n, k), torch.randn(k, m)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2.0 * n * k * m * repeats / (time.perf_counter() - started) / 1e9


def peak_gflops() -> float:
    """Best of a few shapes typical of our networks (large square, BCQ's 1000 x 750 x 750)."""
    return max(matmul_gflops(1024, 1024, 1024), matmul_gflops(1000, 750, 750), matmul_gflops(256, 256, 256, 200))


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for shape in ((1024, 1024, 1024), (1000, 750, 750), (256, 256, 256), (100, 400, 300)):
        print(f"matmul {shape}: {matmul_gflops(*shape, repeats=100 if shape[0] < 500 else 30):7.1f} GFLOP/s")
