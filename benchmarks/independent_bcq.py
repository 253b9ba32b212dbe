"""romi's BCQ beside independent BCQs on the same transitions: Q and critic-loss curves, and scores.

Three implementations train on one exported copy of a task's transitions, one torch thread each, and
log the same numbers every `--every` steps (a JSON line each; a finished run is skipped when the
command runs again, so an interrupted comparison resumes run by run):

- `romi`: `romi.agents.bcq.BCQ` on batches drawn uniformly with replacement (as `romi train` draws them);
- `d3rlpy`: d3rlpy's BCQ (its own sampler) with the paper's settings (400-300 actor and critics,
  750-750 VAE, batch 100, lr 1e-3, lambda 0.75, phi 0.05, 10 target samples, gamma 0.99, tau 0.005).
  d3rlpy is not a dependency of romi: run this in its own virtual environment with romi on PYTHONPATH
  (`pip install torch==2.13.0 d3rlpy==2.8.1 gymnasium==1.2.2 gymnasium-robotics mujoco scipy pydantic pyyaml`);
- `fujimoto`: the authors' `continuous_BCQ/BCQ.py` (github.com/sfujim/BCQ), loaded from the path given by
  `--fujimoto-bcq` (a checkout the user makes; nothing of it is part of romi), on a replay buffer with its
  own sampling rule (uniform, with replacement).

Every implementation sees the same transitions, including each maze goal switch (d3rlpy gets the whole
continuous stream as one episode plus one closing row, so it neither drops nor invents a transition).

    python benchmarks/independent_bcq.py export --task maze2d-umaze-sparse --out DIR/umaze.npz
    python benchmarks/independent_bcq.py run --impl romi --data DIR/umaze.npz --seed 0 --steps 60000 \
        --log DIR/curves.jsonl
    python benchmarks/independent_bcq.py show --log DIR/curves.jsonl [--metric critic_loss]
    python benchmarks/independent_bcq.py plot --log DIR/curves.jsonl --out DIR/q_curves

Logged per window: the mean over the window's steps of the critic loss (sum of the two critics' mean
squared TD errors, what all three optimise), of Q(s, a) on the batch (both critics), of the TD target
and its max; Q1(s, pi(s)) on 2,000 fixed dataset states; and 10 evaluation episodes in romi's evaluation
env, normalised with the dataset's refs (`score_local`) and D4RL's (`score`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

HYPER = {"actor_hidden": (400, 300), "critic_hidden": (400, 300), "vae_hidden": 750, "batch_size": 100,
         "learning_rate": 1e-3, "lmbda": 0.75, "phi": 0.05, "target_samples": 10, "gamma": 0.99, "tau": 0.005,
         "eval_candidates": 100}
PROBE_STATES = 2000


# ---- the data --------------------------------------------------------------------------------
def export(task_name: str, out: Path, recipe: str | None = None) -> None:
    from romi.data.minari_io import load_dataset
    from romi.tasks import get_task

    dataset = load_dataset(get_task(task_name), recipe=recipe)
    t = dataset.transitions
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, observations=t.observations, actions=t.actions, rewards=t.rewards,
             next_observations=t.next_observations, terminals=t.terminals, timeouts=t.timeouts,
             task=np.array(task_name), dataset_id=np.array(dataset.id), fingerprint=np.array(dataset.fingerprint),
             d4rl_refs=np.array(dataset.d4rl_refs), local_refs=np.array(dataset.local_refs))
    print(f"{out}: {len(t):,} transitions of {dataset.id} (fingerprint {dataset.fingerprint})")


def load(path: Path) -> dict[str, Any]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


# ---- the three learners, behind one small interface -------------------------------------------
class Learner:
    """step() -> (critic_loss, q_mean, target_mean, target_max) of that step; act(obs) -> action;
    q1(obs, actions) -> Q1 values."""

    def step(self) -> tuple[float, float, float, float]: ...
    def act(self, observation: np.ndarray) -> np.ndarray: ...
    def q1(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...


class RomiBCQ(Learner):
    def __init__(self, data: dict[str, Any], seed: int, vae_decoder: str = "tanh") -> None:
        from romi.agents.bcq import BCQ
        from romi.config import BCQConfig
        from romi.rng import generator

        config = BCQConfig()
        config = config.model_copy(update={"vae": config.vae.model_copy(update={"output": vae_decoder})})
        self.agent = BCQ(data["observations"].shape[1], data["actions"].shape[1], 1.0, config, seed=seed)
        self.columns = [torch.as_tensor(data[k]).float() for k in
                        ("observations", "actions", "rewards", "next_observations", "terminals")]
        self.generator = generator(seed, "sampler", "cpu")
        self.batch_size = config.batch_size

    def step(self) -> tuple[float, float, float, float]:
        from romi.types import Batch

        rows = torch.randint(len(self.columns[0]), (self.batch_size,), generator=self.generator)
        metrics = self.agent.update(Batch(*(c[rows] for c in self.columns)))
        return metrics["critic_loss"], metrics["q_mean"], metrics["target_mean"], metrics["target_max"]

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self.agent.act(observation)

    def q1(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.agent.critic(observations, actions, members=1)[0]


class D3rlpyBCQ(Learner):
    def __init__(self, data: dict[str, Any], seed: int, vae_decoder: str = "linear") -> None:
        import d3rlpy

        d3rlpy.seed(seed)
        obs, next_obs = data["observations"], data["next_observations"]
        # One episode per continuous stretch of the stream, each closed by one extra row holding its last
        # next state: d3rlpy builds s' from the following row and drops the last row of a timed-out episode.
        cuts = np.flatnonzero(np.any(next_obs[:-1] != obs[1:], axis=1) | data["terminals"][:-1]) + 1
        episodes = []
        for start, end in zip(np.r_[0, cuts], np.r_[cuts, len(obs)], strict=True):
            terminal = bool(data["terminals"][end - 1])
            observations = np.concatenate([obs[start:end], next_obs[end - 1:end]])
            actions = np.concatenate([data["actions"][start:end], data["actions"][end - 1:end]])
            rewards = np.concatenate([data["rewards"][start:end], [0.0]]).astype(np.float32)
            if terminal:  # d3rlpy keeps the last row of a terminated episode: drop the closing row again
                observations, actions, rewards = observations[:-1], actions[:-1], rewards[:-1]
            episodes.append(d3rlpy.dataset.Episode(observations=observations, actions=actions,
                                                   rewards=rewards[:, None], terminated=terminal))
        self.buffer = d3rlpy.dataset.ReplayBuffer(d3rlpy.dataset.InfiniteBuffer(), episodes=episodes)
        assert self.buffer.transition_count == len(obs), (self.buffer.transition_count, len(obs))
        encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(HYPER["actor_hidden"]))
        config = d3rlpy.algos.BCQConfig(
            actor_learning_rate=HYPER["learning_rate"], critic_learning_rate=HYPER["learning_rate"],
            imitator_learning_rate=HYPER["learning_rate"], actor_encoder_factory=encoder,
            critic_encoder_factory=d3rlpy.models.VectorEncoderFactory(hidden_units=list(HYPER["critic_hidden"])),
            imitator_encoder_factory=d3rlpy.models.VectorEncoderFactory(hidden_units=[HYPER["vae_hidden"]] * 2),
            batch_size=HYPER["batch_size"], gamma=HYPER["gamma"], tau=HYPER["tau"], n_critics=2,
            lam=HYPER["lmbda"], n_action_samples=HYPER["target_samples"], action_flexibility=HYPER["phi"],
            beta=0.5, rl_start_step=0)
        self.algo = config.create(device="cpu:0")
        self.algo.build_with_dataset(self.buffer)
        self.impl = self.algo.impl
        if vae_decoder == "tanh":  # the authors' (and romi's) decoder: max_action * tanh(fc(h))
            decoder = self.impl.modules.vae_decoder
            forward = decoder.forward
            decoder.forward = lambda x, latent, with_squash=True: forward(x, latent, with_squash=False)
        self.step_count = 0

    def step(self) -> tuple[float, float, float, float]:
        from d3rlpy.torch_utility import TorchMiniBatch

        batch = self.buffer.sample_transition_batch(HYPER["batch_size"])
        torch_batch = TorchMiniBatch.from_batch(batch=batch, gamma=HYPER["gamma"], compute_returns_to_go=False,
                                                device="cpu:0")
        with torch.no_grad():
            target = self._peek_target(torch_batch)
        metrics = self.impl.update(torch_batch, self.step_count)
        self.step_count += 1
        with torch.no_grad():
            q = torch.stack([q_func(torch_batch.observations, torch_batch.actions).q_value
                             for q_func in self.impl.modules.q_funcs])
        return metrics["critic_loss"], float(q.mean()), float(target.mean()), float(target.max())

    def _peek_target(self, batch: Any) -> torch.Tensor:
        """The step's TD target, recomputed without touching d3rlpy's RNG stream (its target draws VAE
        noise from torch's global generator, which the real update then draws again)."""
        state = torch.get_rng_state()
        values = self.impl.compute_target(batch)
        torch.set_rng_state(state)
        return batch.rewards + HYPER["gamma"] * values * (1 - batch.terminals)

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self.algo.predict(observation[None].astype(np.float32))[0]

    def q1(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.impl.modules.q_funcs[0](observations, actions).q_value.squeeze(-1)


class FujimotoBCQ(Learner):
    """The authors' BCQ class, unchanged; its `F.mse_loss` calls are observed (not altered) to log the
    critic loss, Q(s, a) and the target it trains on."""

    def __init__(self, data: dict[str, Any], seed: int, source: Path) -> None:
        spec = importlib.util.spec_from_file_location("fujimoto_bcq", source)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        torch.manual_seed(seed)
        np.random.seed(seed)
        self.policy = module.BCQ(data["observations"].shape[1], data["actions"].shape[1], 1.0, "cpu",
                                 HYPER["gamma"], HYPER["tau"], HYPER["lmbda"], HYPER["phi"])
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        real_mse = torch.nn.functional.mse_loss

        def observed_mse(input: torch.Tensor, target: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            self.calls.append((input.detach(), target.detach()))
            return real_mse(input, target, *args, **kwargs)

        module.F = type(sys)("observed_F")
        module.F.__dict__.update(torch.nn.functional.__dict__)
        module.F.mse_loss = observed_mse
        self.buffer = _FujimotoBuffer(data)

    def step(self) -> tuple[float, float, float, float]:
        self.calls.clear()
        self.policy.train(self.buffer, iterations=1, batch_size=HYPER["batch_size"])
        (_, _), (q1, target), (q2, _) = self.calls  # VAE reconstruction, then the two critics
        loss = float(((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean())
        return loss, float(torch.cat([q1, q2]).mean()), float(target.mean()), float(target.max())

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self.policy.select_action(np.asarray(observation, dtype=np.float32))

    def q1(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.policy.critic.q1(observations, actions).squeeze(-1)


class _FujimotoBuffer:
    """The authors' ReplayBuffer.sample contract: (state, action, next_state, reward, not_done)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.columns = [torch.as_tensor(np.asarray(x, dtype=np.float32)) for x in (
            data["observations"], data["actions"], data["next_observations"], data["rewards"][:, None],
            1.0 - data["terminals"][:, None].astype(np.float32))]

    def sample(self, batch_size: int) -> list[torch.Tensor]:
        rows = np.random.randint(0, len(self.columns[0]), size=batch_size)
        return [c[rows] for c in self.columns]


def make_learner(impl: str, data: dict[str, Any], seed: int, fujimoto_bcq: Path | None,
                 vae_decoder: str | None = None) -> Learner:
    if impl == "romi":
        return RomiBCQ(data, seed, vae_decoder or "tanh")
    if impl == "d3rlpy":
        return D3rlpyBCQ(data, seed, vae_decoder or "linear")
    if vae_decoder is not None:
        raise SystemExit("--vae-decoder applies to romi and d3rlpy (the authors' code is run unchanged)")
    if fujimoto_bcq is None or not fujimoto_bcq.is_file():
        raise SystemExit("--impl fujimoto needs --fujimoto-bcq PATH/continuous_BCQ/BCQ.py (a checkout of sfujim/BCQ)")
    return FujimotoBCQ(data, seed, fujimoto_bcq)


# ---- one run ----------------------------------------------------------------------------------
def run(impl: str, data_path: Path, seed: int, steps: int, every: int, log_path: Path,
        fujimoto_bcq: Path | None, episodes: int, vae_decoder: str | None = None) -> None:
    from romi.envs import make_eval_env
    from romi.evaluation import Evaluator
    from romi.tasks import get_task

    key = {"impl": impl, "seed": seed, "steps": steps, "data": str(data_path.name),
           "variant": "" if vae_decoder is None else f"{vae_decoder} VAE decoder"}
    done = [r for r in read_log(log_path) if all(r.get(k, "") == v for k, v in key.items())]
    if done and done[-1]["step"] >= steps:
        print(f"{impl} seed {seed}: already in {log_path}")
        return
    if done:  # an interrupted run starts over (its lines are replaced): no learner here saves state
        keep = [r for r in read_log(log_path) if r not in done]
        log_path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    torch.set_num_threads(1)
    data = load(data_path)
    task = get_task(str(data["task"]))
    learner = make_learner(impl, data, seed, fujimoto_bcq, vae_decoder)
    probe_rows = np.random.default_rng(12345).choice(len(data["observations"]), PROBE_STATES, replace=False)
    probe = torch.as_tensor(data["observations"][probe_rows]).float()
    evaluator = Evaluator(make_eval_env(task), data["observations"], episodes=episodes, seed=seed,
                          d4rl_refs=tuple(data["d4rl_refs"]), local_refs=tuple(data["local_refs"]))
    window: list[tuple[float, float, float, float]] = []
    started = window_start = time.perf_counter()
    for step in range(1, steps + 1):
        window.append(learner.step())
        if step % every:
            continue
        rate = every / (time.perf_counter() - window_start)
        with torch.no_grad():
            policy_actions = torch.as_tensor(np.stack([learner.act(s) for s in probe[:200].numpy()])).float()
            q_policy = float(learner.q1(probe[:200], policy_actions).mean())
            q_data = float(learner.q1(probe, torch.as_tensor(data["actions"][probe_rows]).float()).mean())
        scores = evaluator(learner.act, step)
        columns = np.asarray(window, dtype=np.float64)
        record = {**key, "step": step, "critic_loss": float(columns[:, 0].mean()),
                  "q_mean": float(columns[:, 1].mean()),
                  "target_mean": float(columns[:, 2].mean()), "target_max": float(np.nanmax(columns[:, 3])),
                  "q_policy_probe": q_policy, "q_data_probe": q_data, "score_local": scores.score_local,
                  "score": scores.score, "return_mean": scores.return_mean, "steps_per_second": rate,
                  "fingerprint": str(data["fingerprint"]), "cpu": _cpu(), "torch": torch.__version__}
        with log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        eta = (steps - step) / rate
        print(f"{impl} seed {seed} step {step:,}/{steps:,}: Q {record['q_mean']:.2f} (max target "
              f"{record['target_max']:.1f}) critic loss {record['critic_loss']:.3f} score {scores.score_local:.1f} "
              f"| {rate:.1f} steps/s, {time.perf_counter() - started:.0f} s in, ~{eta / 60:.0f} min left", flush=True)
        window, window_start = [], time.perf_counter()


def _cpu() -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}"


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return iter(())
    return (json.loads(line) for line in path.read_text().splitlines() if line.strip())


def show(log_path: Path, metric: str) -> None:
    """One row per (impl, seed), one column per logged step."""
    runs: dict[tuple[str, int, str], dict[int, float]] = {}
    for r in read_log(log_path):
        impl = r["impl"] + (f" ({r['variant']})" if r.get("variant") else "")
        runs.setdefault((impl, r["seed"], r["data"]), {})[r["step"]] = r[metric]
    steps = sorted({s for curve in runs.values() for s in curve})
    print(f"{metric} | " + " | ".join(f"{s // 1000}k" for s in steps))
    for (impl, seed, data), curve in sorted(runs.items()):
        print(f"{impl} s{seed} {data} | " + " | ".join(f"{curve[s]:.3g}" if s in curve else "" for s in steps))
    for impl in sorted({k[0] for k in runs}):
        curves = [c for k, c in runs.items() if k[0] == impl]
        spread = [(min(c[s] for c in curves if s in c), max(c[s] for c in curves if s in c)) if any(
            s in c for c in curves) else None for s in steps]
        print(f"{impl} range | " + " | ".join(f"{lo:.3g}-{hi:.3g}" if lo is not None else "" for lo, hi in
                                              (x or (None, None) for x in spread)))


def plot(log_path: Path, out: Path) -> None:
    """Q(s, a) on the batches and the critic loss against steps, one line per (implementation, seed), with
    the value bound of 0/1 rewards at gamma 0.99 (100): `out`.png and .svg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in read_log(log_path):
        impl = r["impl"] + (f" ({r['variant']})" if r.get("variant") else "")
        runs.setdefault((impl, r["seed"]), []).append(r)
    colours = {impl: f"C{i}" for i, impl in enumerate(sorted({k[0] for k in runs}))}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (impl, seed), records in sorted(runs.items()):
        steps = [r["step"] for r in records]
        label = f"{impl} s{seed}"
        axes[0].plot(steps, [r["q_mean"] for r in records], color=colours[impl], marker="o", ms=3, label=label)
        axes[1].plot(steps, [r["critic_loss"] for r in records], color=colours[impl], marker="o", ms=3)
    axes[0].axhline(100.0, color="black", ls="--", lw=1)
    axes[0].annotate("r_max / (1 - γ) = 100", (0.01, 100.0), xycoords=("axes fraction", "data"), va="bottom",
                     fontsize=7)
    for ax, name in zip(axes, ("mean Q(s, a) on batches", "critic loss (sum of the two critics' MSE)"),
                        strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("gradient steps")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".png", ".svg"):
        fig.savefig(out.with_suffix(suffix), dpi=120)
    print(f"wrote {out.with_suffix('.png')}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export")
    p.add_argument("--task", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--recipe", help="the local data recipe (maze2d: d4rl, the default, or minari)")
    p = sub.add_parser("run")
    p.add_argument("--impl", choices=("romi", "d3rlpy", "fujimoto"), required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=60_000)
    p.add_argument("--every", type=int, default=5_000)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--fujimoto-bcq", type=Path, default=os.environ.get("FUJIMOTO_BCQ"))
    p.add_argument("--vae-decoder", choices=("tanh", "linear"),
                   help="the behaviour VAE's output layer (romi, d3rlpy): the authors' and romi's squash it with "
                        "tanh; d3rlpy 2.8.1's BCQ does not (default: each implementation's own)")
    p = sub.add_parser("show")
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--metric", default="q_mean")
    p = sub.add_parser("plot")
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args.task, args.out, args.recipe)
    elif args.command == "run":
        run(args.impl, args.data, args.seed, args.steps, args.every, args.log, args.fujimoto_bcq, args.episodes,
            args.vae_decoder)
    elif args.command == "plot":
        plot(args.log, args.out)
    else:
        show(args.log, args.metric)


if __name__ == "__main__":
    main()
