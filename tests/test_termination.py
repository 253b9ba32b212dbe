"""Termination rules of spec §3, checked state by state against the rules written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from romi.models.termination import DOMAINS, termination_fn


def _state(dim: int, **values: float) -> torch.Tensor:
    row = torch.zeros(dim)
    for index, value in values.items():
        row[int(index[1:])] = value
    return row


def test_hopper_rules() -> None:
    hopper = termination_fn("hopper")
    cases = {
        "healthy": (_state(11, i0=1.25), False),
        "too low": (_state(11, i0=0.7), True),  # height must be strictly above 0.7
        "tilted": (_state(11, i0=1.25, i1=0.2), True),  # |angle| must be strictly below 0.2
        "tilted back": (_state(11, i0=1.25, i1=-0.25), True),
        "fast joint": (_state(11, i0=1.25, i7=100.0), True),
        "nan": (_state(11, i0=1.25, i5=float("nan")), True),
        "inf": (_state(11, i0=1.25, i10=float("inf")), True),
        "huge height is fine": (_state(11, i0=500.0), False),  # abs(obs[1:]) < 100 excludes the height
    }
    states = torch.stack([state for state, _ in cases.values()])
    assert dict(zip(cases, hopper(states).tolist(), strict=True)) == {k: v for k, (_, v) in cases.items()}


def test_walker_rules() -> None:
    walker = termination_fn("walker2d")
    heights_angles = [(1.2, 0.0, False), (0.8, 0.0, True), (2.0, 0.0, True), (1.9, 0.99, False),
                      (1.2, -1.0, True), (1.2, 1.5, True), (float("nan"), 0.0, True)]
    states = torch.zeros(len(heights_angles), 17)
    states[:, 0] = torch.tensor([h for h, _, _ in heights_angles])
    states[:, 1] = torch.tensor([a for _, a, _ in heights_angles])
    assert walker(states).tolist() == [d for _, _, d in heights_angles]


@pytest.mark.parametrize("domain", ["maze2d", "halfcheetah"])
def test_never_done(domain: str) -> None:
    states = torch.randn(8, 17) * 1e3
    states[0, 0] = float("nan")
    done = termination_fn(domain)(states)
    assert done.dtype == torch.bool and done.shape == (8,) and not done.any()


@settings(max_examples=50, deadline=None)
@given(x=st.floats(-10, 10), y=st.floats(-10, 10))
def test_antmaze_is_done_within_half_a_unit_of_the_goal(x: float, y: float) -> None:
    goal = np.array([1.0, -2.0])
    state = torch.zeros(1, 29)
    state[0, :2] = torch.tensor([x, y])
    state[0, 2:] = 50.0  # the rest of the state does not matter
    distance = math.hypot(np.float32(x) - 1.0, np.float32(y) + 2.0)
    if abs(distance - 0.5) > 1e-5:  # away from float32 rounding at the boundary
        assert termination_fn("antmaze", goal)(state).item() == (distance <= 0.5)


def test_antmaze_needs_a_goal_and_unknown_domains_name_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="goal"):
        termination_fn("antmaze")
    with pytest.raises(ValueError, match="goal"):
        termination_fn("antmaze", np.zeros(3))
    with pytest.raises(ValueError, match="valid: " + ", ".join(DOMAINS)):
        termination_fn("pong")


@pytest.mark.parametrize("domain", ["hopper", "walker2d", "maze2d"])
def test_termination_is_batched_row_by_row(domain: str) -> None:
    """Evaluating a batch equals evaluating each row alone (no cross-row reductions)."""
    fn = termination_fn(domain)
    states = torch.randn(64, 11) * torch.tensor([1.0, 0.3] + [30.0] * 9) + torch.tensor([1.0] + [0.0] * 10)
    batched = fn(states)
    assert batched.tolist() == [bool(fn(row[None])[0]) for row in states]
