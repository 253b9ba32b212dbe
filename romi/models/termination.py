"""When an imagined step is done (spec §3), checked on the later state of the step.

Reverse rollouts check s' (the state the step leads into), forward rollouts s_next. A done
transition is stored with done=1 and its rollout stops there.
"""

from __future__ import annotations

import numpy as np
import torch

from romi.types import IsDone

DOMAINS = ("maze2d", "antmaze", "hopper", "walker2d", "halfcheetah")


def _never(states: torch.Tensor) -> torch.Tensor:
    return torch.zeros(states.shape[0], dtype=torch.bool, device=states.device)


def _hopper(states: torch.Tensor) -> torch.Tensor:
    height, angle = states[:, 0], states[:, 1]
    healthy = (
        torch.isfinite(states).all(dim=1)
        & (states[:, 1:].abs() < 100).all(dim=1)
        & (height > 0.7)
        & (angle.abs() < 0.2)
    )
    return ~healthy


def _walker2d(states: torch.Tensor) -> torch.Tensor:
    # No finiteness test here (the spec's rule has none); NaN fails every comparison, so it is done anyway.
    height, angle = states[:, 0], states[:, 1]
    healthy = (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def termination_fn(domain: str, goal_xy: np.ndarray | None = None) -> IsDone:
    """The done test of `domain`, as a batched function of states (B, obs_dim) -> bool (B,).

    Hopper and walker2d use the health rules of their gymnasium environments (obs[0] is the torso
    height, obs[1] its angle); antmaze is done at the goal (within 0.5 of `goal_xy`), which is why
    its dynamics model keeps terminal transitions (spec §1).
    """
    if domain in ("maze2d", "halfcheetah"):
        return _never
    if domain == "hopper":
        return _hopper
    if domain == "walker2d":
        return _walker2d
    if domain == "antmaze":
        if goal_xy is None:
            raise ValueError("antmaze termination needs the goal position")
        goal = torch.as_tensor(np.asarray(goal_xy, dtype=np.float32))
        if goal.shape != (2,):
            raise ValueError(f"antmaze goal must be an (x, y) pair, got shape {tuple(goal.shape)}")

        def reached_goal(states: torch.Tensor) -> torch.Tensor:
            # Antmaze states are [x, y, rest...]: the torso position comes first.
            return torch.linalg.vector_norm(states[:, :2] - goal.to(states.device), dim=1) <= 0.5

        return reached_goal
    raise ValueError(f"unknown domain {domain!r}; valid: {', '.join(DOMAINS)}")
