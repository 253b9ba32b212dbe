"""Training batches mixed from real and imagined data (spec §3).

Every batch holds round(model_share * B) model transitions drawn uniformly from the model buffer and
the rest from the dataset, uniformly or in proportion to each transition's trajectory return
(min-max normalised). Data lives on the trial's device as tensors from the start: no numpy<->torch
round trips per batch. Weighted draws use a cumulative sum + searchsorted, which costs O(B log N)
per batch where torch.multinomial re-scans all N weights every call.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from romi.data.transitions import Transitions
from romi.imagination.rollout import Rollouts
from romi.types import Batch


def return_weights(returns: np.ndarray) -> np.ndarray:
    """(R - Rmin) / max(1, Rmax - Rmin), normalised to sum to one (uniform, with a warning, if all zero)."""
    returns = np.asarray(returns, dtype=np.float64)
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
    def __init__(
        self,
        real: Transitions,
        model: Rollouts | None,
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
            raise ValueError("model_share > 0 needs a non-empty model buffer")
        device = torch.device(device)
        self.batch_size = batch_size
        self.num_model = round(model_share * batch_size) if model is not None else 0
        self.num_real = batch_size - self.num_model

        def put(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)

        self.real = (put(real.observations), put(real.actions), put(real.rewards), put(real.next_observations),
                     put(real.terminals.astype(np.float32)))
        self.model = None if model is None or self.num_model == 0 else tuple(
            t.to(device=device, dtype=torch.float32)
            for t in (model.observations, model.actions, model.rewards, model.next_observations, model.dones)
        )
        self.real_cdf = None
        if real_weights is not None:
            cdf = torch.cumsum(torch.as_tensor(real_weights, dtype=torch.float64, device=device), 0)
            self.real_cdf = cdf / cdf[-1]
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.num_real_rows = len(real)

    def _real_index(self, n: int) -> torch.Tensor:
        device = self.real[0].device
        if self.real_cdf is None:
            return torch.randint(self.num_real_rows, (n,), device=device, generator=self.generator)
        u = torch.rand(n, dtype=torch.float64, device=device, generator=self.generator)
        return torch.searchsorted(self.real_cdf, u, right=True).clamp_(max=self.num_real_rows - 1)

    def sample(self) -> Batch:
        index = self._real_index(self.num_real)
        columns = [t[index] for t in self.real]
        if self.model is not None:
            model_index = torch.randint(self.model[0].shape[0], (self.num_model,), device=self.model[0].device,
                                        generator=self.generator)
            columns = [torch.cat([c, m[model_index]]) for c, m in zip(columns, self.model, strict=True)]
        return Batch(*columns)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
