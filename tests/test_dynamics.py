"""Tests of the ensemble layers and the dynamics model (spec §1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from romi.config import DynamicsConfig
from romi.data.transitions import Transitions
from romi.errors import DatasetTooSmallError
from romi.models.dynamics import DynamicsModel, gaussian_nll_per_member, make_training_pairs
from romi.models.ensemble import GaussianEnsemble, soft_bound_logvar
from romi.nets import EnsembleLinear
from romi.types import StepModel

# Small enough to train in about a second on one core.
TINY = DynamicsConfig(
    ensemble_size=4,
    num_elites=2,
    hidden_dim=32,
    hidden_layers=2,
    weight_decays=(2.5e-5, 5e-5, 1e-4),
    batch_size=64,
    max_epochs=40,
)


def make_transitions(
    obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    next_obs: np.ndarray,
    terminals: np.ndarray | None = None,
    timeouts: np.ndarray | None = None,
) -> Transitions:
    n = len(obs)
    return Transitions(
        observations=obs.astype(np.float32),
        actions=actions.astype(np.float32),
        rewards=rewards.astype(np.float32),
        next_observations=next_obs.astype(np.float32),
        terminals=np.zeros(n, bool) if terminals is None else terminals,
        timeouts=np.zeros(n, bool) if timeouts is None else timeouts,
        episode_ids=np.zeros(n, np.int64),
        returns=np.zeros(n, np.float32),
    )


def linear_system(n: int, seed: int = 0, noise: float = 0.01) -> tuple[Transitions, dict[str, np.ndarray]]:
    """s' = A s + B a + noise, r = c . s, with A well conditioned (so s is recoverable from s', a)."""
    rng = np.random.default_rng(seed)
    A = np.array([[0.9, 0.2, 0.0], [-0.2, 0.9, 0.1], [0.0, -0.1, 1.0]])
    B = np.array([[0.5, 0.0], [0.0, 0.5], [0.3, -0.3]])
    c = np.array([1.0, -0.5, 0.25])
    s = rng.normal(size=(n, 3))
    a = rng.uniform(-1, 1, size=(n, 2))
    s_next = s @ A.T + a @ B.T + noise * rng.normal(size=(n, 3))
    return make_transitions(s, a, s @ c, s_next), {"A": A, "B": B, "c": c}


# ---- ensemble layers ---------------------------------------------------------------------------
def test_ensemble_linear_equals_per_member_linear() -> None:
    torch.manual_seed(0)
    layer = EnsembleLinear(5, 7, 3)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, 11, 7)
    out = layer(x)
    assert out.shape == (5, 11, 3)
    for e in range(5):
        expected = F.linear(x[e], layer.weight[e].T, layer.bias[e, 0])
        torch.testing.assert_close(out[e], expected)


def test_ensemble_linear_init() -> None:
    layer = EnsembleLinear(8, 400, 300)
    std = 1 / (2 * 400**0.5)
    assert torch.all(layer.bias == 0)
    assert layer.weight.abs().max() <= 2 * std + 1e-7  # truncated at two std
    # A normal truncated at +-2 std has std ~0.88 of the untruncated one.
    assert abs(float(layer.weight.detach().std()) / std - 0.88) < 0.02


def test_logvar_soft_bounds_hold() -> None:
    max_lv, min_lv = torch.tensor([0.5, 1.0]), torch.tensor([-10.0, -3.0])
    raw = torch.linspace(-1e4, 1e4, 2001).unsqueeze(1).expand(-1, 2)
    lv = soft_bound_logvar(raw, max_lv, min_lv)
    assert torch.all(lv >= min_lv)
    # The second softplus can overshoot max by at most softplus(min - max), a tiny amount.
    assert torch.all(lv <= max_lv + F.softplus(min_lv - max_lv) + 1e-6)
    # Well inside a wide range the bounds barely matter.
    mid = soft_bound_logvar(torch.tensor([-5.0]), torch.tensor([0.5]), torch.tensor([-10.0]))
    assert abs(float(mid) + 5.0) < 0.01
    # And the network's outputs obey them for any input.
    net = GaussianEnsemble(3, 4, 2, hidden_dim=16, hidden_layers=2, weight_decays=(0.0, 0.0, 0.0),
                           logvar_max_init=0.5, logvar_min_init=-10.0)
    _, logvar = net(1e3 * torch.randn(3, 50, 4))
    assert torch.all(logvar >= net.min_logvar) and torch.all(logvar <= net.max_logvar + 1e-4)


def test_weight_decay_and_bound_losses_by_hand() -> None:
    net = GaussianEnsemble(2, 3, 4, hidden_dim=5, hidden_layers=2, weight_decays=(1.0, 2.0, 3.0),
                           logvar_max_init=0.5, logvar_min_init=-10.0)
    with torch.no_grad():
        for layer in net.ensemble_layers():
            layer.weight.fill_(1.0)
    # 0.5 * (1*2*3*5 + 2*2*5*5 + 3*2*5*4 [mean head] + 3*2*5*4 [logvar head])
    assert float(net.weight_decay_loss().detach()) == pytest.approx(0.5 * (30 + 100 + 120 + 120))
    assert float(net.logvar_bound_loss().detach()) == pytest.approx(4 * 0.5 - 4 * -10.0)


def test_gaussian_nll_by_hand() -> None:
    mean = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])  # (E=2, B=1, D=2)
    logvar = torch.tensor([[[0.0, np.log(4.0)]], [[0.0, 0.0]]], dtype=torch.float32)
    y = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]]])
    # member 0: ((1)^2*1 + 0 + (2)^2/4 + log 4) / 2;  member 1: (1 + 1) / 2
    expected = torch.tensor([(1 + 1 + np.log(4.0)) / 2, 1.0], dtype=torch.float32)
    torch.testing.assert_close(gaussian_nll_per_member(mean, logvar, y), expected)


# ---- training pairs ----------------------------------------------------------------------------
def test_make_training_pairs_directions_and_filtering() -> None:
    obs = np.array([[0.0], [1.0], [2.0], [3.0]])
    next_obs = np.array([[1.0], [2.0], [3.0], [4.0]])
    actions = np.array([[10.0], [11.0], [12.0], [13.0]])
    rewards = np.array([0.5, 1.5, 2.5, 3.5])
    terminals = np.array([False, True, False, False])
    timeouts = np.array([False, False, True, False])
    t = make_transitions(obs, actions, rewards, next_obs, terminals, timeouts)

    x, y = make_training_pairs(t, "reverse")
    np.testing.assert_array_equal(x, [[1.0, 10.0], [4.0, 13.0]])  # [s', a]
    np.testing.assert_array_equal(y, [[0.5, -1.0], [3.5, -1.0]])  # [r, s - s']
    assert x.dtype == np.float32 and y.dtype == np.float32

    x, y = make_training_pairs(t, "forward", keep_terminals=True)
    np.testing.assert_array_equal(x, [[0.0, 10.0], [1.0, 11.0], [3.0, 13.0]])  # timeout still dropped
    np.testing.assert_array_equal(y, [[0.5, 1.0], [1.5, 1.0], [3.5, 1.0]])  # [r, s' - s]

    with pytest.raises(ValueError):
        make_training_pairs(t, "sideways")  # type: ignore[arg-type]


# ---- learning ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def system() -> tuple[Transitions, dict[str, np.ndarray]]:
    return linear_system(3000)


@pytest.fixture(scope="module")
def reverse_model(system: tuple[Transitions, dict[str, np.ndarray]]) -> DynamicsModel:
    model = DynamicsModel(3, 2, TINY, "reverse")
    model.fit(system[0], seed=0)
    return model


def test_reverse_model_recovers_previous_state(reverse_model: DynamicsModel) -> None:
    test, _ = linear_system(500, seed=1)
    s, a, s_next = (torch.as_tensor(v) for v in (test.observations, test.actions, test.next_observations))
    s_pred, r_pred = reverse_model.step(s_next, a, torch.Generator().manual_seed(0))
    assert s_pred.shape == (500, 3) and r_pred.shape == (500,)
    model_mse = float((s_pred - s).pow(2).mean())
    naive_mse = float((s_next - s).pow(2).mean())  # "the state did not change"
    assert model_mse < 0.05 * naive_mse, (model_mse, naive_mse)
    reward_mse = float((r_pred - torch.as_tensor(test.rewards)).pow(2).mean())
    assert reward_mse < 0.05 * float(torch.as_tensor(test.rewards).var())


def test_forward_model_recovers_next_state(system: tuple[Transitions, dict[str, np.ndarray]]) -> None:
    model = DynamicsModel(3, 2, TINY, "forward")
    model.fit(system[0], seed=0)
    test, _ = linear_system(500, seed=1)
    s, a, s_next = (torch.as_tensor(v) for v in (test.observations, test.actions, test.next_observations))
    pred, r_pred = model.step(s, a, torch.Generator().manual_seed(0))
    assert float((pred - s_next).pow(2).mean()) < 0.05 * float((s - s_next).pow(2).mean())
    assert float((r_pred - torch.as_tensor(test.rewards)).pow(2).mean()) < 0.05 * float(test.rewards.var())


def test_elites_and_early_stopping() -> None:
    # Targets are pure noise: nothing to learn, so the holdout MSE soon stops improving and training
    # must stop by itself (no max_epochs), after exactly patience + 1 epochs without a snapshot.
    rng = np.random.default_rng(0)
    n = 600
    t = make_transitions(rng.normal(size=(n, 2)), rng.normal(size=(n, 1)), rng.normal(size=n),
                         rng.normal(size=(n, 2)))
    config = TINY.model_copy(update={"max_epochs": None, "patience": 2})
    history: list[tuple[int, dict[str, float]]] = []
    model = DynamicsModel(2, 1, config, "forward")
    report = model.fit(t, seed=0, progress_callback=lambda epoch, m: history.append((epoch, m)))
    assert report.epochs == len(history) < 500
    assert history[-1][1]["epochs_since_update"] == config.patience + 1
    assert report.num_holdout == int(0.2 * n) and report.num_train == n - report.num_holdout
    # Elites: the num_elites members with the lowest holdout MSE, best first, stored in the buffer.
    assert report.elites == list(np.argsort(report.holdout_mse, kind="stable")[: config.num_elites])
    assert model.elites.tolist() == report.elites
    # Snapshots were restored: the final holdout MSEs are the best seen, not the last epoch's.
    assert min(report.holdout_mse) == pytest.approx(history[-1][1]["holdout_mse_best"], rel=1e-5)


def test_max_epochs_caps_training() -> None:
    t, _ = linear_system(300)
    config = TINY.model_copy(update={"max_epochs": 3, "patience": 100})
    report = DynamicsModel(3, 2, config, "reverse").fit(t, seed=0)
    assert report.epochs == 3


def test_holdout_is_capped() -> None:
    t, _ = linear_system(400)
    config = TINY.model_copy(update={"max_epochs": 1, "max_holdout": 50})
    assert DynamicsModel(3, 2, config, "reverse").fit(t, seed=0).num_holdout == 50


def test_same_seed_same_fit_different_seed_differs() -> None:
    t, _ = linear_system(500)
    config = TINY.model_copy(update={"max_epochs": 3})
    fits = []
    for seed in (7, 7, 8):
        model = DynamicsModel(3, 2, config, "reverse")
        report = model.fit(t, seed=seed)
        fits.append((model.state_dict(), report))
    (sd_a, rep_a), (sd_b, rep_b), (sd_c, _) = fits
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert rep_a.holdout_mse == rep_b.holdout_mse and rep_a.elites == rep_b.elites
    assert not torch.equal(sd_a["ensemble.mean_head.weight"], sd_c["ensemble.mean_head.weight"])


class _Interrupt(Exception):
    pass


def test_an_interrupted_fit_resumes_to_the_same_model(tmp_path) -> None:
    """Killed after epoch 4 of 8 and run again, the fit ends bit for bit where an uninterrupted one does."""
    t, _ = linear_system(500)
    config = TINY.model_copy(update={"max_epochs": 8, "patience": 100})
    whole = DynamicsModel(3, 2, config, "reverse")
    whole_report = whole.fit(t, seed=3)

    checkpoint = tmp_path / "fit_state.pt"

    def stop_after_epoch_4(epoch: int, info: dict[str, float]) -> None:
        if epoch == 4:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        DynamicsModel(3, 2, config, "reverse").fit(t, seed=3, checkpoint=checkpoint, checkpoint_every_s=0,
                                                   progress_callback=stop_after_epoch_4)
    interrupted = torch.load(checkpoint, weights_only=True)
    assert interrupted["epoch"] == 4 and interrupted["seconds"] > 0
    resumed = DynamicsModel(3, 2, config, "reverse")
    epochs_run: list[int] = []
    report = resumed.fit(t, seed=3, checkpoint=checkpoint, checkpoint_every_s=0,
                         progress_callback=lambda e, _: epochs_run.append(e))
    assert epochs_run == [5, 6, 7, 8] and report.resumed_from_epoch == 4 and report.epochs == 8
    # The fit's wall time counts both calls, not only the one that finished it.
    assert report.total_seconds == pytest.approx(interrupted["seconds"] + report.train_seconds)
    assert whole_report.total_seconds == whole_report.train_seconds and whole_report.resumed_from_epoch == 0
    sd_whole, sd_resumed = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(sd_whole[k], sd_resumed[k]) for k in sd_whole)
    assert report.holdout_mse == whole_report.holdout_mse and report.elites == whole_report.elites


def test_a_checkpoint_of_another_fit_is_refused(tmp_path) -> None:
    t, _ = linear_system(500)
    config = TINY.model_copy(update={"max_epochs": 1})
    checkpoint = tmp_path / "fit_state.pt"
    DynamicsModel(3, 2, config, "reverse").fit(t, seed=3, checkpoint=checkpoint, checkpoint_every_s=0)
    with pytest.raises(ValueError, match="another fit"):
        DynamicsModel(3, 2, config, "reverse").fit(t, seed=4, checkpoint=checkpoint)


def test_save_load_predicts_identically(reverse_model: DynamicsModel, tmp_path) -> None:
    path = tmp_path / "dyn.pt"
    torch.save(reverse_model.state_dict(), path)
    fresh = DynamicsModel(3, 2, TINY, "reverse")
    fresh.load_state_dict(torch.load(path))
    assert torch.equal(fresh.elites, reverse_model.elites)
    assert torch.equal(fresh.input_std, reverse_model.input_std)
    s_next, a = torch.randn(64, 3), torch.rand(64, 2)
    out_a = reverse_model.step(s_next, a, torch.Generator().manual_seed(5))
    out_b = fresh.step(s_next, a, torch.Generator().manual_seed(5))
    assert torch.equal(out_a[0], out_b[0]) and torch.equal(out_a[1], out_b[1])


# ---- sampling ----------------------------------------------------------------------------------
def test_step_uses_only_elites_and_all_of_them() -> None:
    config = DynamicsConfig(ensemble_size=4, num_elites=2, hidden_dim=8, hidden_layers=1,
                            weight_decays=(0.0, 0.0))
    for direction in ("reverse", "forward"):
        model = DynamicsModel(2, 1, config, direction)  # type: ignore[arg-type]
        assert isinstance(model, StepModel)
        with torch.no_grad():
            # Member m predicts reward 10 m and delta (1, -1), with the smallest allowed variance.
            model.ensemble.mean_head.weight.zero_()
            model.ensemble.logvar_head.weight.zero_()
            model.ensemble.logvar_head.bias.fill_(-1e3)
            for m in range(4):
                model.ensemble.mean_head.bias[m, 0] = torch.tensor([10.0 * m, 1.0, -1.0])
        model.elites.copy_(torch.tensor([3, 1]))
        states = torch.randn(2000, 2)
        other, rewards = model.step(states, torch.zeros(2000, 1), torch.Generator().manual_seed(0))
        chosen = torch.round(rewards / 10.0)
        assert set(chosen.tolist()) == {1.0, 3.0}
        assert abs(float((chosen == 3).float().mean()) - 0.5) < 0.05  # uniform over the elites
        torch.testing.assert_close(other, states + torch.tensor([1.0, -1.0]), atol=0.05, rtol=0)
        # The noise is there (std = exp(min_logvar / 2)), small but not zero.
        assert 0 < float((rewards - 10 * chosen).std()) < 0.05


def test_step_is_reproducible_with_a_generator(reverse_model: DynamicsModel) -> None:
    s, a = torch.randn(10, 3), torch.rand(10, 2)
    first = reverse_model.step(s, a, torch.Generator().manual_seed(1))
    second = reverse_model.step(s, a, torch.Generator().manual_seed(1))
    third = reverse_model.step(s, a, torch.Generator().manual_seed(2))
    assert torch.equal(first[0], second[0])
    assert not torch.equal(first[0], third[0])


def test_fit_rejects_too_little_data() -> None:
    t, _ = linear_system(1)
    with pytest.raises(DatasetTooSmallError, match="at least 2"):
        DynamicsModel(3, 2, TINY, "reverse").fit(t, seed=0)


def test_the_artifact_store_continues_an_interrupted_fit_and_clears_its_progress(tmp_path) -> None:
    from romi.artifacts import ArtifactStore, artifact_key
    from romi.imagination import build
    from romi.tasks import get_task

    t, _ = linear_system(500)
    config = TINY.model_copy(update={"max_epochs": 6, "patience": 100})
    identity = build.DataIdentity("toy/linear-v0", "fingerprint", 3, 2)
    store = ArtifactStore(tmp_path / "artifacts")
    key = artifact_key("dynamics", **identity.with_("reverse", 0), config=config.model_dump())

    def stop_after_epoch_2(epoch: int, info: dict[str, float]) -> None:
        if epoch == 2:
            raise _Interrupt

    store.scratch(key).mkdir(parents=True)
    with pytest.raises(_Interrupt):  # what a session ending mid-fit leaves behind
        DynamicsModel(3, 2, config, "reverse").fit(t, seed=0, checkpoint=store.scratch(key) / "fit_state.pt",
                                                   checkpoint_every_s=0, progress_callback=stop_after_epoch_2)
    lines: list[str] = []
    model = build.dynamics_model(store, t, identity, get_task("maze2d-umaze-sparse"), "reverse", 0, config,
                                 log=lines.append)
    assert any("continuing an interrupted fit" in line for line in lines)
    assert store.exists(key) and not store.scratch(key).exists()
    whole = DynamicsModel(3, 2, config, "reverse")
    whole.fit(t, seed=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in whole.state_dict().items())


def test_the_fit_saves_its_state_by_time_not_by_epoch(tmp_path) -> None:
    """With a long interval, short epochs write no checkpoint at all (the quick profile's case)."""
    t, _ = linear_system(500)
    config = TINY.model_copy(update={"max_epochs": 3, "patience": 100})
    checkpoint = tmp_path / "fit_state.pt"
    DynamicsModel(3, 2, config, "reverse").fit(t, seed=3, checkpoint=checkpoint, checkpoint_every_s=3600)
    assert not checkpoint.exists()
    DynamicsModel(3, 2, config, "reverse").fit(t, seed=3, checkpoint=checkpoint, checkpoint_every_s=0)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 3


@pytest.mark.parametrize("where", ["local", "remote"])
def test_the_store_lists_its_finished_artifacts_infos(tmp_path, where: str) -> None:
    """What the plan reads to know how many epochs fits of a kind took (pyarrow's in-memory `mock://`
    file system stands in for s3:// and gs://)."""
    import json

    from romi.artifacts import ArtifactStore

    store = ArtifactStore(tmp_path / "artifacts" if where == "local" else "mock:///artifacts")
    assert store.infos("dynamics") == []

    def put(key: str, name: str, text: str) -> None:
        if store.remote:
            store.fs.create_dir(f"{store.base}/{key}", recursive=True)
            with store.fs.open_output_stream(f"{store.base}/{key}/{name}") as handle:
                handle.write(text.encode())
        else:
            (store.path(key)).mkdir(parents=True, exist_ok=True)
            (store.path(key) / name).write_text(text)

    put("dynamics/b", "info.json", json.dumps({"epochs": 50}))
    put("dynamics/a", "info.json", json.dumps({"epochs": 30}))
    put("dynamics/unfinished", "state.pt", "x")  # no info.json: not finished, not listed
    put("rollout-cvae/c", "info.json", json.dumps({"epochs": 99}))
    assert store.infos("dynamics") == [{"epochs": 30}, {"epochs": 50}]
