"""Random streams: one derivation, independent per purpose, the same in every process."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest
import torch

from romi.rng import Purpose, generator, seeded_init, spawn


def test_every_purpose_gets_its_own_stream() -> None:
    purposes = get_args(Purpose)
    seeds = {spawn(0, p) for p in purposes} | {spawn(1, p) for p in purposes}
    assert len(seeds) == 2 * len(purposes)
    assert all(0 <= s < 2**63 for s in seeds)
    # the sampler and the learner (which once shared one seed) draw different numbers
    assert not torch.equal(torch.rand(8, generator=generator(0, "sampler")),
                           torch.rand(8, generator=generator(0, "learner")))


def test_spawn_is_the_same_in_another_process() -> None:
    """crc32, not hash(): a Ray worker must derive the driver's stream."""
    code = "from romi.rng import spawn; print(spawn(7, 'dynamics'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123"})
    assert int(out.stdout) == spawn(7, "dynamics")


def test_seeded_init_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    with seeded_init(3, "learner-init"):
        a = torch.nn.Linear(4, 4).weight.clone()
    assert torch.equal(torch.rand(3), expected_next)
    with seeded_init(3, "learner-init"):
        b = torch.nn.Linear(4, 4).weight.clone()
    with seeded_init(3, "dynamics-init"):
        c = torch.nn.Linear(4, 4).weight.clone()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_negative_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        spawn(-1, "sampler")
