"""The probabilistic ensemble dynamics model of spec §1: one class, two directions.

ROMI learns a *reverse* model p(s, r | s', a) and imagines trajectories backwards from dataset
states; its forward twin (FOMI, the paper's ablation) learns p(s', r | s, a). The two differ only in
which state is the input and which is the target, so `direction` is a parameter, never a copy:

    reverse: input [s', a], target [r, s - s'],  a step back is   s  = s' + delta
    forward: input [s, a],  target [r, s' - s],  a step ahead is  s' = s  + delta

Training follows the usual probabilistic-ensemble recipe (PETS / MBPO / ROMI): Gaussian NLL per
member on its own bootstrap resample, learned log-variance bounds, per-layer L2 decay, per-member
snapshots on holdout improvement, early stopping, and the best members kept as elites.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from romi.config import DynamicsConfig
from romi.data.transitions import Transitions
from romi.errors import DatasetTooSmallError
from romi.io import atomic_torch_save
from romi.models.ensemble import GaussianEnsemble
from romi.nets import standardization
from romi.rng import generator, seeded_init
from romi.types import Direction, ProgressCallback


# --------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------
def make_training_pairs(
    transitions: Transitions, direction: Direction, keep_terminals: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) for the model of `direction`, as float32 arrays.

    reverse: inputs [s', a], targets [r, s - s'];  forward: inputs [s, a], targets [r, s' - s].
    Transitions cut by a timeout are always dropped; terminal transitions are dropped unless
    `keep_terminals` (antmaze keeps them: reaching the goal is where its reverse rollouts start).
    """
    keep = ~transitions.timeouts.astype(bool)
    if not keep_terminals:
        keep &= ~transitions.terminals.astype(bool)
    given, predicted = (states[keep].astype(np.float32) for states in transitions.given_and_predicted(direction))
    actions = transitions.actions[keep].astype(np.float32)
    rewards = transitions.rewards[keep].astype(np.float32)[:, None]
    return np.concatenate([given, actions], 1), np.concatenate([rewards, predicted - given], 1)


def gaussian_nll_per_member(mean: torch.Tensor, logvar: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-member mean over batch and dims of (mu - y)^2 exp(-lv) + lv: Gaussian NLL up to constants.

    mean, logvar, targets: (E, B, D) -> (E,).
    """
    return ((mean - targets).pow(2) * torch.exp(-logvar) + logvar).mean(dim=(1, 2))


@dataclass(frozen=True)
class FitReport:
    epochs: int
    holdout_mse: list[float]
    """Per member, after restoring its best snapshot."""
    elites: list[int]
    """Members with the lowest holdout MSE, best first."""
    train_seconds: float
    """Wall time of this call (after a resume: since the resume)."""
    num_train: int
    num_holdout: int
    resumed_from_epoch: int = 0
    """The epoch an interrupted fit was continued from (0: trained from scratch)."""
    total_seconds: float = 0.0
    """Wall time of the whole fit, every call that trained it (an interrupted call counted up to its last
    saved epoch: the epochs after it were trained again)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class DynamicsModel(nn.Module):
    """A probabilistic ensemble predicting (r, delta state) in one `direction` (spec §1).

    Implements the `StepModel` protocol of `romi.types`. The input normalisation and the elite
    indices are buffers, so `state_dict()` holds everything needed to predict after loading.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: DynamicsConfig, direction: Direction) -> None:
        super().__init__()
        if direction not in ("reverse", "forward"):
            raise ValueError(f"direction must be 'reverse' or 'forward', got {direction!r}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.config = config
        self.direction: Direction = direction
        in_dim, out_dim = obs_dim + act_dim, 1 + obs_dim
        self.ensemble = GaussianEnsemble.from_config(in_dim, out_dim, config)
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_std", torch.ones(in_dim))
        self.register_buffer("elites", torch.arange(config.num_elites, dtype=torch.long))

    # ---- prediction ----------------------------------------------------------------------
    def _normalise(self, inputs: torch.Tensor) -> torch.Tensor:
        return (inputs - self.input_mean) / self.input_std

    def predict(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's Gaussian over [r, delta] for raw (B, obs) states and (B, act) actions.

        Returns (mean, logvar), each (E, B, 1 + obs_dim).
        """
        x = self._normalise(torch.cat([states, actions], dim=-1))
        return self.ensemble(x.unsqueeze(0).expand(self.config.ensemble_size, -1, -1))

    @torch.no_grad()
    def step(
        self, states: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One imagined step: reverse (s', a) -> (s, r); forward (s, a) -> (s', r).

        Every member predicts; each row draws mu + std * eps from one elite chosen uniformly at
        random. No ensemble averaging, no uncertainty penalty (spec §1).
        """
        mean, logvar = self.predict(states, actions)
        eps = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        samples = mean + torch.exp(0.5 * logvar) * eps  # (E, B, 1 + obs)
        batch = states.shape[0]
        pick = torch.randint(
            self.elites.numel(), (batch,), device=self.elites.device, generator=generator
        )
        chosen = samples[self.elites[pick], torch.arange(batch, device=samples.device)]  # (B, 1 + obs)
        rewards, delta = chosen[:, 0], chosen[:, 1:]
        return states + delta, rewards

    # ---- training ------------------------------------------------------------------------
    def fit(
        self,
        transitions: Transitions,
        *,
        keep_terminals: bool = False,
        seed: int,
        progress_callback: ProgressCallback | None = None,
        checkpoint: Path | None = None,
        checkpoint_every_s: float = 60.0,
    ) -> FitReport:
        """Train all members from scratch on `transitions` (spec §1) and pick the elites.

        Every random choice comes from `seed`'s streams (`romi.rng`: the initial weights, and one
        generator for the holdout split, bootstraps and shuffles), so the same data and seed give the same model
        bit for bit on CPU.

        `checkpoint`: a file the fit saves its state to at the end of an epoch once `checkpoint_every_s`
        seconds have passed since the last save (0: every epoch), and continues from when it exists
        (written atomically). Early stopping on 1M transitions takes tens of ~1.5-minute epochs, longer
        than a working session may last; an interrupted fit resumes at its last saved epoch and ends bit
        for bit where an uninterrupted one would. Saving by time, not by epoch, keeps the quick
        profile's many short epochs from paying a ~10 MB fsync'ed write each (at most a minute is
        lost). The caller removes the file afterwards.
        """
        cfg = self.config
        started = time.perf_counter()
        device = self.input_mean.device
        gen = generator(seed, "dynamics", device)

        inputs_np, targets_np = make_training_pairs(transitions, self.direction, keep_terminals)
        n = len(inputs_np)
        if n < 2:
            raise DatasetTooSmallError(
                f"the dataset has {n} transition(s) a dynamics model can learn from (terminal and time-out "
                f"steps left out); fitting one needs at least 2", "make a larger dataset (romi data make TASK "
                "--steps N --overwrite), or run a method without a model (BCQ, CQL)")
        inputs = torch.as_tensor(inputs_np, device=device)
        targets = torch.as_tensor(targets_np, device=device)

        # Holdout split: min(20% of N, max_holdout), at least one transition each side.
        num_holdout = min(max(int(cfg.holdout_ratio * n), 1), cfg.max_holdout, n - 1)
        order = torch.randperm(n, device=device, generator=gen)
        holdout_idx, train_idx = order[:num_holdout], order[num_holdout:]
        train_x, train_y = inputs[train_idx], targets[train_idx]
        num_train = len(train_x)

        # Inputs standardised with the training split's statistics; targets stay raw.
        mean, std = standardization(train_x)
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)
        train_x = self._normalise(train_x)
        E = cfg.ensemble_size
        holdout_x = self._normalise(inputs[holdout_idx]).unsqueeze(0).expand(E, -1, -1)
        holdout_y = targets[holdout_idx].unsqueeze(0).expand(E, -1, -1)

        with seeded_init(seed, "dynamics-init"):
            self.ensemble.reset_parameters()
        optimizer = torch.optim.Adam(self.ensemble.parameters(), lr=cfg.learning_rate)
        # Each member trains on its own bootstrap resample of the training split.
        bootstrap = torch.randint(num_train, (E, num_train), device=device, generator=gen)

        def holdout_mse() -> torch.Tensor:
            with torch.no_grad():
                mean, _ = self.ensemble(holdout_x)
                return (mean - holdout_y).pow(2).mean(dim=(1, 2))  # (E,)

        best = torch.full((E,), float("inf"), device=device)
        snapshots: list[dict[str, torch.Tensor] | None] = [None] * E
        epochs_since_update, epoch, earlier_seconds = 0, 0, 0.0
        # Everything above is replayed from the seed; what the epochs changed comes from the checkpoint.
        saved = torch.load(checkpoint, map_location=device, weights_only=True) if (
            checkpoint is not None and checkpoint.is_file()) else None
        if saved is not None:
            if (saved["num_train"], saved["seed"]) != (num_train, seed):
                raise ValueError(f"fit checkpoint {checkpoint} belongs to another fit (seed or data differ)")
            self.ensemble.load_state_dict(saved["ensemble"])
            optimizer.load_state_dict(saved["optimizer"])
            best, snapshots = saved["best"], saved["snapshots"]
            epoch, epochs_since_update = saved["epoch"], saved["epochs_since_update"]
            gen.set_state(saved["generator"])
            earlier_seconds = float(saved.get("seconds", 0.0))  # checkpoints before this field: unknown, 0
        resumed_from_epoch = epoch
        last_saved = time.perf_counter()

        # Stop after more than `patience` epochs in which no member improved, or at the epoch cap.
        while epochs_since_update <= cfg.patience and (cfg.max_epochs is None or epoch < cfg.max_epochs):
            epoch += 1
            # Reshuffle every member's resample independently each epoch.
            shuffled = torch.stack(
                [bootstrap[m, torch.randperm(num_train, device=device, generator=gen)] for m in range(E)]
            )
            loss_sum, num_batches = 0.0, 0
            starts = range(0, num_train, cfg.batch_size)
            if cfg.batches_per_epoch is not None:
                # A shorter "epoch" (quick profile): a fresh random part of every member's resample.
                starts = starts[: cfg.batches_per_epoch]
            for start in starts:
                idx = shuffled[:, start : start + cfg.batch_size]  # (E, b)
                mean, logvar = self.ensemble(train_x[idx])
                loss = (
                    gaussian_nll_per_member(mean, logvar, train_y[idx]).sum()
                    + self.ensemble.weight_decay_loss()
                    + cfg.logvar_bound_weight * self.ensemble.logvar_bound_loss()
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach())
                num_batches += 1

            # A member keeps a snapshot when its holdout MSE improves by more than the threshold.
            mse = holdout_mse()
            improved = mse < best * (1.0 - cfg.improvement_threshold)
            for m in torch.nonzero(improved).flatten().tolist():
                best[m] = mse[m]
                snapshots[m] = self._member_state(m)
            epochs_since_update = 0 if bool(improved.any()) else epochs_since_update + 1
            if checkpoint is not None and time.perf_counter() - last_saved >= checkpoint_every_s:
                last_saved = time.perf_counter()
                atomic_torch_save({
                    "seed": seed, "num_train": num_train, "epoch": epoch, "epochs_since_update": epochs_since_update,
                    "ensemble": self.ensemble.state_dict(), "optimizer": optimizer.state_dict(),
                    "best": best, "snapshots": snapshots, "generator": gen.get_state(),
                    "seconds": earlier_seconds + last_saved - started,
                }, checkpoint)
            if progress_callback is not None:
                progress_callback(
                    epoch,
                    {
                        "train_loss": loss_sum / max(num_batches, 1),
                        "holdout_mse_mean": float(mse.mean()),
                        "holdout_mse_best": float(best.min()),
                        "epochs_since_update": float(epochs_since_update),
                    },
                )

        for m, snapshot in enumerate(snapshots):
            if snapshot is not None:
                self._load_member_state(m, snapshot)
        final_mse = holdout_mse()
        elites = torch.argsort(final_mse, stable=True)[: cfg.num_elites]
        self.elites.copy_(elites)
        return FitReport(
            epochs=epoch,
            holdout_mse=[float(v) for v in final_mse],
            elites=[int(i) for i in elites],
            train_seconds=(seconds := time.perf_counter() - started),
            num_train=num_train,
            num_holdout=num_holdout,
            resumed_from_epoch=resumed_from_epoch,
            total_seconds=earlier_seconds + seconds,
        )

    def _member_state(self, member: int) -> dict[str, torch.Tensor]:
        """A copy of one member's weights and biases (the shared log-variance bounds are not per member)."""
        state = {}
        for i, layer in enumerate(self.ensemble.ensemble_layers()):
            state[f"{i}.weight"] = layer.weight.detach()[member].clone()
            state[f"{i}.bias"] = layer.bias.detach()[member].clone()
        return state

    def _load_member_state(self, member: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, layer in enumerate(self.ensemble.ensemble_layers()):
                layer.weight[member].copy_(state[f"{i}.weight"])
                layer.bias[member].copy_(state[f"{i}.bias"])
