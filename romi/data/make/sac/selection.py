"""Which checkpoint is "medium" and which "expert": pure functions of the evaluated checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from romi.errors import RomiError


@dataclass(frozen=True)
class CheckpointRecord:
    name: str
    env_steps: int
    eval_return: float
    eval_return_std: float
    train_return: float | None
    """RLlib's running mean of training-episode returns (stochastic policy), for the log."""
    training_seconds: float
    """Cumulative wall time of SAC training up to this checkpoint."""


class ThresholdNotReachedError(RomiError):
    """No checkpoint reached the medium threshold within the budget; `best` is kept on disk."""

    def __init__(self, problem: str, hint: str | None, best: CheckpointRecord | None) -> None:
        super().__init__(problem, hint)
        self.best = best


def best_checkpoint(checkpoints: Sequence[CheckpointRecord]) -> CheckpointRecord | None:
    """Highest eval return; the earliest among equals."""
    if not checkpoints:
        return None
    return max(checkpoints, key=lambda c: (c.eval_return, -c.env_steps))


def first_reaching(checkpoints: Sequence[CheckpointRecord], threshold: float) -> CheckpointRecord | None:
    """D4RL's medium rule: the first checkpoint (in training order) whose eval return is >= threshold."""
    for record in sorted(checkpoints, key=lambda c: c.env_steps):
        if record.eval_return >= threshold:
            return record
    return None


def closest_up_to_first_reaching(
    checkpoints: Sequence[CheckpointRecord], threshold: float
) -> CheckpointRecord | None:
    """Our medium rule: of the checkpoints up to the first reaching `threshold`, the one closest to it.

    D4RL stopped its SAC at "about" a third of expert return. Taking the first checkpoint at or above
    the threshold overshoots badly when the return jumps between two checkpoints: our Hopper-v5 run
    went 295 -> 3027 (threshold 1078) from 290k to 300k steps, so the first-reaching policy was an
    expert one (its 1M stochastic steps averaged 93 normalised). The closest checkpoint keeps
    "about a third" true on both sides. Ties go to the later checkpoint (the one that reached it).
    """
    first = first_reaching(checkpoints, threshold)
    if first is None:
        return None
    candidates = [c for c in checkpoints if c.env_steps <= first.env_steps]
    return min(candidates, key=lambda c: (abs(c.eval_return - threshold), -c.env_steps))


def choose_medium(checkpoints: Sequence[CheckpointRecord], threshold: float, *, where: str = "") -> CheckpointRecord:
    """`closest_up_to_first_reaching`, or a `ThresholdNotReachedError` naming the best checkpoint and its return."""
    chosen = closest_up_to_first_reaching(checkpoints, threshold)
    if chosen is not None:
        return chosen
    best = best_checkpoint(checkpoints)
    steps = max((c.env_steps for c in checkpoints), default=0)
    if best is None:
        problem = f"no checkpoint yet, so none reaches the medium threshold {threshold:.1f}"
    else:
        problem = (
            f"no checkpoint within {steps:,} SAC env steps reaches the medium threshold {threshold:.1f}; the best "
            f"is {best.name} with eval return {best.eval_return:.1f} (kept{' in ' + where if where else ''})"
        )
    return _raise_not_reached(problem, best)


def _raise_not_reached(problem: str, best: CheckpointRecord | None) -> CheckpointRecord:
    raise ThresholdNotReachedError(
        problem,
        "re-run with a larger --budget to continue training from the last checkpoint, or lower the threshold "
        "with --medium-fraction",
        best,
    )
