"""Random streams: every consumer of randomness draws from its own stream, derived from the run's
seed and a named purpose, so no two components ever share (and so correlate) a stream.

`spawn(seed, purpose)` is the one derivation (numpy's `SeedSequence` over the seed and a stable
hash of the purpose): the same seed and purpose give the same stream in every process, and
different purposes give independent ones. Generators are explicit `torch.Generator`s; the global
RNG is only used, under `seeded_init`, while networks are constructed.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

Purpose = Literal[
    "dynamics-init",  # the dynamics ensemble's initial weights
    "dynamics",  # the dynamics fit: holdout split, bootstrap, shuffles
    "rollout-policy-init",  # the rollout policy's initial weights
    "rollout-policy",  # rollout-policy training: minibatches, CVAE noise
    "imagination",  # the model buffer's shards (each shard spawns its own stream from this)
    "sampler",  # which real and model rows each learner batch draws
    "learner-init",  # the learner's initial weights
    "learner",  # the learner's training noise (BCQ's VAE and candidates, CQL's policy samples)
    "acting",  # the learner's noise while it acts (BCQ's candidate actions): never shifts training
    "evaluation",  # the evaluation episodes' reset seeds
]


def spawn(seed: int, purpose: Purpose) -> int:
    """A seed in [0, 2**63) for `purpose`'s stream, derived from the run's `seed`.

    crc32, not `hash()`: Python salts string hashes per process, and a Ray worker must derive the
    same stream as the driver."""
    if seed < 0:
        raise ValueError(f"seeds are non-negative integers, got {seed}")
    high, low = np.random.SeedSequence([seed, zlib.crc32(purpose.encode())]).generate_state(2, dtype=np.uint32)
    return (int(high) << 31) | (int(low) >> 1)


def generator(seed: int, purpose: Purpose, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on `device` seeded with `spawn(seed, purpose)`."""
    return torch.Generator(device=device).manual_seed(spawn(seed, purpose))


@contextlib.contextmanager
def seeded_init(seed: int, purpose: Purpose) -> Iterator[None]:
    """Network construction under a private RNG seeded for `purpose`: the same seed gives the same
    initial weights, and the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spawn(seed, purpose))
        yield
