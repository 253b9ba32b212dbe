"""Training batches mixed from real and imagined data (spec §3).

Every batch holds round(model_share * B) model transitions drawn uniformly from the model buffer and
the rest from the dataset, uniformly or in proportion to each transition's trajectory return
(min-max normalised, `return_weights`). The data is put on the trial's device as float32 tensors
once, here: no numpy<->torch round trip per batch. Weighted draws use `RowSampler` (a cumulative sum
built once + searchsorted), much faster than `torch.multinomial` on millions of rows.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from romi.data.transitions import Transitions
from romi.imagination.rollout import RowSampler
from romi.rng import generator
from romi.types import Batch


def return_weights(returns: np.ndarray) -> np.ndarray:
    """Per-transition sampling probabilities from trajectory returns (spec §3).

    w = (R - Rmin) / max(1, Rmax - Rmin), normalised to sum to one. The max(1, .) keeps tiny return
    ranges (sparse mazes: returns 0 or 1) from being blown up. The lowest-return trajectory gets
    weight zero, so it is never sampled. If every weight is zero (all returns equal) there is
    nothing to prefer: fall back to uniform, and say so.
    """
    returns = np.asarray(returns, dtype=np.float64)
    if returns.ndim != 1 or returns.size == 0:
        raise ValueError(f"returns must be a non-empty 1-D array, got shape {returns.shape}")
    if not np.isfinite(returns).all():
        raise ValueError("returns must be finite")
    weights = (returns - returns.min()) / max(1.0, float(returns.max() - returns.min()))
    total = weights.sum()
    if total <= 0:
        warnings.warn(
            "return-weighted sampling: every trajectory has the same return, so all weights are zero; "
            "sampling the real data uniformly instead",
            stacklevel=2,
        )
        return np.full(len(returns), 1.0 / len(returns))
    return weights / total


class MixedSampler:
    """Draws `Batch`es of `batch_size`: round(model_share * B) model rows, then the real rows.

    The real part's dones are the dataset's terminals (time-outs are not dones: learners bootstrap
    through them). The sampler owns its generator (seeded by `seed`); `state_dict` saves it so a
    resumed run draws the same batches.
    """

    def __init__(
        self,
        real: Transitions,
        model: Batch | None,
        *,
        model_share: float,
        real_weights: np.ndarray | None,
        batch_size: int,
        seed: int,
        device: str | torch.device = "cpu",
    ) -> None:
        if not 0.0 <= model_share <= 1.0:
            raise ValueError(f"model_share must be in [0, 1], got {model_share}")
        if model_share > 0 and (model is None or len(model) == 0):
            raise ValueError(f"model_share={model_share} > 0 needs a non-empty model buffer, got none")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = torch.device(device)
        self.batch_size = batch_size
        # round() and the real rows take the rest, so a batch is always `batch_size` rows. The official
        # code takes int(B * share + 0.1) of each part, which can lose one row (CQL: 230 + 25 = 255).
        self.num_model = round(model_share * batch_size)
        self.num_real = batch_size - self.num_model
        if self.num_real > 0 and len(real) == 0:
            raise ValueError("the real data is empty")

        self.real = Batch(*(torch.as_tensor(column) for column in (
            real.observations, real.actions, real.rewards, real.next_observations, real.terminals.astype(np.float32)
        ))).to(device)
        self.model = None
        if model is not None and self.num_model > 0:
            self.model = model.to(device)
            if self.model.observations.shape[1] != self.real.observations.shape[1] or (
                    self.model.actions.shape[1] != self.real.actions.shape[1]):
                raise ValueError(f"model buffer (obs {self.model.observations.shape[1]}, act "
                                 f"{self.model.actions.shape[1]}) does not match the data (obs "
                                 f"{self.real.observations.shape[1]}, act {self.real.actions.shape[1]})")
        self.real_rows = RowSampler.create(len(real), real_weights, device=device) if len(real) else None
        self.model_rows = None if self.model is None else RowSampler.create(len(self.model))
        self.generator = generator(seed, "sampler", device)

    def sample(self) -> Batch:
        batch = self.real.head(0)
        if self.real_rows is not None and self.num_real > 0:
            # With replacement (weighted or not); the official sum tree draws a weighted batch without.
            batch = self.real.take(self.real_rows(self.num_real, self.generator))
        if self.model is not None and self.model_rows is not None:
            batch = Batch.concat([batch, self.model.take(self.model_rows(self.num_model, self.generator))])
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
