"""Typed, frozen, validated configuration: every number of the spec is a default here, and only here
(components are built `from_config`; their constructors take no numeric defaults).

A run is described by one `RunConfig`. `build_run_config` layers, in order: the spec defaults
below, the task's paper profile (spec §3), the `quick` profile when asked, and the user's
`key=value` overrides (dotted paths, e.g. `bcq.batch_size=256`). Unknown keys and bad values fail
before anything runs, naming the key and the allowed choices. The resolved config is saved next to
every checkpoint and result, so a number can always be traced to the settings that produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from romi.errors import ConfigError, RomiError
from romi.tasks import get_task
from romi.types import Direction, RolloutKind

Method = Literal["BCQ", "CQL", "ROMI-BCQ", "ROMI-CQL", "FOMI-BCQ", "ROMI-RBC-BCQ"]
Profile = Literal["paper", "reduced", "quick"]
Precision = Literal["fp32", "bf16"]
METHODS: tuple[str, ...] = get_args(Method)


MAX_SEED = 2**32 - 1
"""The largest seed: numpy's and torch's generators take 32-bit seeds without wrapping (torch overflows
past 2^64, numpy refuses past 2^32 for some streams); every romi seed is in [0, MAX_SEED]."""
Widths = Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1)]
"""Hidden-layer widths: at least one layer, every width at least 1."""


class FrozenModel(BaseModel):
    """The base of every config and sweep file: immutable, unknown keys refused, defaults validated too."""

    # allow_inf_nan=False: `--set bcq.learning_rate=.inf` (or a NaN) can only train to garbage, so no float
    # field of any config accepts a non-finite value.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)


class DynamicsConfig(FrozenModel):
    """Probabilistic ensemble dynamics model (spec §1)."""

    ensemble_size: int = Field(7, ge=1)
    num_elites: int = Field(5, ge=1)
    hidden_dim: int = Field(200, ge=1)
    hidden_layers: int = Field(4, ge=1)
    # L2 weight decay per layer: one per hidden layer, then one for the heads.
    weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, ge=1)
    holdout_ratio: float = Field(0.2, gt=0, lt=1)
    max_holdout: int = Field(1000, ge=1)
    improvement_threshold: float = Field(0.01, ge=0)
    patience: int = Field(5, ge=0)
    """Stop after more than `patience` epochs in which no member improved."""
    max_epochs: int | None = Field(None, ge=1)
    """Hard cap on epochs (None: until early stopping). The quick profile sets one."""
    batches_per_epoch: int | None = Field(None, ge=1)
    """Cap on batches per epoch (None: a full pass over each member's resample). The quick profile
    sets one, because a full epoch on 1M transitions is ~2 minutes of CPU at paper size."""
    logvar_max_init: float = 0.5
    logvar_min_init: float = -10.0
    logvar_bound_weight: float = Field(0.01, ge=0)

    @model_validator(mode="after")
    def _check(self) -> DynamicsConfig:
        if self.num_elites > self.ensemble_size:
            raise ValueError(f"num_elites ({self.num_elites}) exceeds ensemble_size ({self.ensemble_size})")
        if len(self.weight_decays) != self.hidden_layers + 1:
            raise ValueError(
                f"weight_decays needs hidden_layers + 1 = {self.hidden_layers + 1} values "
                f"(one per hidden layer, then the heads), got {len(self.weight_decays)}"
            )
        return self


class CVAEConfig(FrozenModel):
    """Conditional VAE, used as ROMI's rollout policy (spec §2) and inside BCQ (spec §4)."""

    hidden_dim: int = Field(750, ge=1)
    latent_dim: int | None = Field(None, ge=1)
    """None: 2 * action dim."""
    kl_weight: float = Field(0.5, ge=0)
    latent_clip: float = Field(0.5, gt=0)
    log_std_min: float = -4.0
    log_std_max: float = 15.0
    output: Literal["tanh", "linear"] = "tanh"
    """The decoder's last layer: `max_action * tanh` (the authors' BCQ and ROMI's CVAE), or linear, as
    d3rlpy 2.8.1's BCQ decodes (its `VAEDecoder` skips the tanh under the default `with_squash=True`);
    decoded actions may then leave the box until the BCQ actor clamps them. Not the paper's: a run with
    it is labelled (`BCQ (linear VAE)`)."""


class RolloutPolicyConfig(FrozenModel):
    """How imagined actions are drawn (spec §2). `kind` None = the task's paper profile."""

    kind: RolloutKind | None = None
    iterations: int = Field(500_000, ge=1)
    batch_size: int = Field(100, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    cvae: CVAEConfig = CVAEConfig()
    rbc_hidden_dim: int = Field(256, ge=1)
    rbc_log_std_min: float = -20.0
    rbc_log_std_max: float = 2.0
    rbc_entropy_weight: float = Field(0.5, ge=0)


class ImaginationConfig(FrozenModel):
    """The model buffer (spec §3). `horizon` None = the task's paper profile."""

    horizon: int | None = Field(None, ge=1)
    buffer_size: int = Field(4_000_000, ge=1)
    start_batch_size: int = Field(1000, ge=1)
    shard_size: int = Field(200_000, ge=1)
    """Transitions per shard; shards are the unit of parallel generation and of determinism."""
    num_workers: int | None = Field(None, ge=1)
    """Rollout actors (None: the CPUs given to the trial)."""


class BCQConfig(FrozenModel):
    """BCQ (Fujimoto et al. 2019), spec §4."""

    actor_hidden: Widths = (400, 300)
    """The perturbation actor xi(s, a)'s hidden widths."""
    critic_hidden: Widths = (400, 300)
    """Each of the two critics' hidden widths."""
    vae: CVAEConfig = CVAEConfig()
    """The behaviour model G(a | s) that proposes candidate actions."""
    learning_rate: float = Field(1e-3, gt=0)
    """Adam's, for the actor, the critics and the VAE alike."""
    gamma: float = Field(0.99, gt=0, le=1)
    """Discount."""
    tau: float = Field(0.005, gt=0, le=1)
    """Soft target-update rate."""
    lmbda: float = Field(0.75, ge=0, le=1)
    """Soft clipped double-Q: lambda min_i Q_i + (1 - lambda) max_i Q_i in the target. (The BCQ paper's
    and official code's name; renaming it would break every saved config.json.)"""
    phi: float = Field(0.05, ge=0)
    """The largest perturbation, as a fraction of max_action."""
    batch_size: int = Field(100, ge=1)
    target_samples: int = Field(10, ge=1)
    """Candidate actions per next state in the target (the max over them is the greedy step)."""
    eval_candidates: int = Field(100, ge=1)
    """Candidate actions per state when acting (the best by Q1 is taken)."""


class CQLConfig(FrozenModel):
    """CQL(H) with importance sampling (Kumar et al. 2020), spec §4."""

    hidden: Widths = (256, 256, 256)
    """Hidden widths of the policy and of each of the two critics."""
    policy_lr: float = Field(1e-4, gt=0)
    q_lr: float = Field(3e-4, gt=0)
    alpha_lr: float = Field(1e-4, gt=0)
    """Adam's for the entropy temperature log alpha."""
    gamma: float = Field(0.99, gt=0, le=1)
    """Discount."""
    tau: float = Field(5e-3, gt=0, le=1)
    """Soft target-update rate."""
    target_entropy: float | None = None
    """The entropy alpha steers the policy towards; None: -action dim."""
    bc_steps: int = Field(40_000, ge=0)
    """Policy steps of behaviour cloning before the SAC objective takes over."""
    conservative_weight: float = Field(5.0, ge=0)
    """The weight of the CQL(H) penalty (logsumexp of sampled-action Q minus data-action Q)."""
    num_sampled_actions: int = Field(10, ge=1)
    """Actions per source (uniform, pi(.|s), pi(.|s')) in the penalty's logsumexp: 3x this in all."""
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    """The policy's log-std clamp."""
    backup_entropy: bool = False
    """Whether the TD target subtracts alpha log pi(a'|s') (SAC does; the official CQL does not)."""
    batch_size: int = Field(256, ge=1)


class EvalConfig(FrozenModel):
    every: int = Field(5000, ge=1)
    """Gradient steps between evaluations."""
    episodes: int = Field(10, ge=1)
    last_k: int = Field(10, ge=1)
    """The reported 'last' score averages this many final evaluations."""


class RunConfig(FrozenModel):
    """One (task, method, seed) run. `None` fields are filled from the task's paper profile."""

    task: str
    method: Method
    seed: int = Field(0, ge=0, le=MAX_SEED)
    profile: Profile = "paper"
    data_source: Literal["auto", "official", "local"] = "auto"
    data_recipe: str | None = None
    """Which recipe made the local data (`TaskSpec.data_recipes`; maze2d: `d4rl`, the paper's generator, or
    `minari`, Minari's). None: the task's default. A non-default recipe means local data, and is tagged in
    the method's label (`BCQ (minari data)`): never the paper's column."""
    gradient_steps: int | None = Field(None, ge=1)
    """None: 1e6 for BCQ, 1.5e6 for CQL (spec §4)."""
    model_share: float | None = Field(None, ge=0, le=1)
    return_weighted: StrictBool | None = None
    """Sample real data in proportion to trajectory returns. None: the paper's choice, which the
    official code makes only inside ROMI/FOMI runs (task profile); plain BCQ/CQL sample uniformly."""
    device: str = "cpu"
    precision: Precision = "fp32"
    """The learner's matmul precision. fp32: the paper's. bf16: its hidden layers multiply in bf16 under
    torch autocast (weights, optimizer state, outputs, targets and losses stay fp32; `nets.compute_precision`).
    Faster only where the hardware multiplies bf16 natively (CUDA GPUs, CPUs with AMX or avx512_bf16);
    elsewhere torch emulates it, slower than fp32. Dynamics training and imagination stay fp32."""
    dynamics: DynamicsConfig = DynamicsConfig()
    rollout_policy: RolloutPolicyConfig = RolloutPolicyConfig()
    imagination: ImaginationConfig = ImaginationConfig()
    bcq: BCQConfig = BCQConfig()
    cql: CQLConfig = CQLConfig()
    eval: EvalConfig = EvalConfig()

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        # Syntax only: whether this machine has the device is checked where a run starts
        # (`check_device_available`), so a config written on a GPU node still loads on a laptop.
        import torch

        try:
            device = torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError(f"{value!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
        if device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"{value!r} is not a device romi trains on; use cpu, cuda, cuda:N or mps")
        return value

    @model_validator(mode="after")
    def _check_task(self) -> RunConfig:
        task = get_task(self.task)  # raises UnknownTaskError with suggestions
        if self.data_recipe is not None:
            task.local_dataset_id(self.data_recipe)  # raises, naming the task's recipes
        return self

    # --- resolved views: the values a run actually uses -------------------------------------
    @property
    def method_spec(self) -> MethodSpec:
        return METHOD_TABLE[self.method]

    def resolved(self) -> RunConfig:
        """A copy with every paper-profile `None` replaced by the task's value."""
        task = get_task(self.task)
        method = self.method_spec
        kind = self.rollout_policy.kind
        if method.rollout_policy == "rbc":
            kind = "rbc"
        elif kind is None:
            kind = task.paper.rollout_policy
        update: dict[str, Any] = {
            "gradient_steps": self.gradient_steps or (1_000_000 if method.learner == "bcq" else 1_500_000),
            "model_share": (
                0.0 if method.direction is None
                else self.model_share if self.model_share is not None else task.paper.model_share
            ),
            "return_weighted": (
                self.return_weighted if self.return_weighted is not None
                else paper_return_weighted(self.task, self.method)
            ),
            "data_recipe": self.data_recipe or task.default_data_recipe,
            "rollout_policy": self.rollout_policy.model_copy(update={"kind": kind}),
            "imagination": self.imagination.model_copy(
                update={"horizon": self.imagination.horizon or task.paper.horizon}
            ),
        }
        return self.model_copy(update=update)

    def deviations(self) -> dict[str, str]:
        """Settings of this run that differ from the paper's choice for its (task, method), each with
        a short tag; the report shows the tags in the method's column header (e.g. `BCQ (rw)`), so two
        different things never share a column."""
        found: dict[str, str] = {}
        paper_rw = paper_return_weighted(self.task, self.method)
        if self.return_weighted is not None and self.return_weighted != paper_rw:
            found["rw" if self.return_weighted else "uniform"] = (
                f"return_weighted={str(self.return_weighted).lower()} (paper: {str(paper_rw).lower()})"
            )
        if self.precision != "fp32":
            found[self.precision] = f"precision={self.precision} (paper: fp32)"
        if self.bcq.vae.output != "tanh":
            found[f"{self.bcq.vae.output} VAE"] = f"bcq.vae.output={self.bcq.vae.output} (paper: tanh)"
        default_recipe = get_task(self.task).default_data_recipe
        if self.data_recipe is not None and self.data_recipe != default_recipe:
            found[f"{self.data_recipe} data"] = (f"data_recipe={self.data_recipe} (paper: D4RL's data; "
                                                 f"romi's twin: {default_recipe})")
        return found

    @property
    def method_label(self) -> str:
        """The method's name as tables show it: `BCQ`, or `BCQ (rw)` when the run deviates."""
        tags = self.deviations()
        return f"{self.method} ({', '.join(tags)})" if tags else self.method

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def paper_return_weighted(task: str, method: str) -> bool:
    """The paper's real-data sampling: return-weighted only in ROMI/FOMI runs on the tasks whose
    profile asks for it (antmaze, locomotion); the BCQ/CQL baselines are the standard uniform learners."""
    return METHOD_TABLE[method].direction is not None and get_task(task).paper.return_weighted


@dataclass(frozen=True)
class MethodSpec:
    """A method is a small table of choices, not a class hierarchy (spec §5)."""

    direction: Direction | None
    rollout_policy: Literal["profile", "rbc"] | None
    learner: Literal["bcq", "cql"]


METHOD_TABLE: dict[str, MethodSpec] = {
    "BCQ": MethodSpec(None, None, "bcq"),
    "CQL": MethodSpec(None, None, "cql"),
    "ROMI-BCQ": MethodSpec("reverse", "profile", "bcq"),
    "ROMI-CQL": MethodSpec("reverse", "profile", "cql"),
    "FOMI-BCQ": MethodSpec("forward", "profile", "bcq"),
    "ROMI-RBC-BCQ": MethodSpec("reverse", "rbc", "bcq"),
}

# The quick profile: same architectures, fewer steps and a smaller buffer, so that a maze2d-umaze
# run finishes in minutes on a 2-core laptop. It is a smoke-level reproduction, not the paper's.
QUICK_PROFILE: dict[str, Any] = {
    "gradient_steps": 10_000,
    "dynamics": {"max_epochs": 20, "batches_per_epoch": 100},
    "rollout_policy": {"iterations": 3_000},
    "imagination": {"buffer_size": 100_000, "shard_size": 25_000},
    "cql": {"bc_steps": 1_000},
    "eval": {"every": 2_500, "episodes": 10, "last_k": 2},  # spec: 10 episodes per evaluation
}


# The reduced profile: the paper's in everything (architectures, full dynamics training with early
# stopping, the CVAE's iterations, the 4M-transition model buffer, evaluation every 5k steps with 10
# episodes) except 100k gradient steps, a tenth of BCQ's budget. Its results are never the paper's.
# Nothing else is capped: uncapped early stopping on 1M transitions is the costliest stage besides the
# gradient steps (measured on maze2d-umaze-sparse: ~80-110 s per epoch on one core, still improving
# after 7 epochs), so the fit checkpoints every epoch and resumes across working sessions instead.
REDUCED_PROFILE: dict[str, Any] = {"gradient_steps": 100_000}
PROFILES: dict[str, dict[str, Any]] = {"paper": {}, "reduced": REDUCED_PROFILE, "quick": QUICK_PROFILE}


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["bcq.batch_size=256", "seed=3"]` -> nested dict; values parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form key=value", "e.g. --set bcq.batch_size=256")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {pair!r}: cannot parse value {raw!r}: {err}",
                              "write the value as a YAML scalar or list, e.g. --set bcq.actor_hidden=[64,64]") from err
        if isinstance(value, list):
            value = tuple(value)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} sets a field inside a scalar",
                                  "drop one of the two overrides of that key")
        node[parts[-1]] = value
    return nested


def validation_problems(err: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per pydantic issue; an unknown key lists the valid keys of its own level."""
    lines = []
    for issue in err.errors():
        where = ".".join(str(p) for p in issue["loc"]) or "<config>"
        if issue["type"] == "extra_forbidden":
            parent = _model_at(model, issue["loc"][:-1])
            valid = ", ".join(parent.model_fields) if parent else ""
            lines.append(f"unknown key {where!r} (valid keys here: {valid})")
        else:
            lines.append(f"{where}: {issue['msg']} (got {issue.get('input')!r})")
    return lines


def _format_validation_error(err: ValidationError) -> ConfigError:
    return ConfigError("invalid config: " + "; ".join(validation_problems(err, RunConfig)),
                       "fix or remove the named keys")


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def check_device_available(device: str) -> None:
    """Refuse a device this machine's torch cannot use, before a run starts."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r}: this torch ({torch.__version__}) has no usable CUDA GPU",
                "use --set device=cpu, or install a CUDA build of torch on a machine with a GPU",
            )
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)",
                              f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available here", "use --set device=cpu")


def build_run_config(
    task: str,
    method: str,
    seed: int = 0,
    profile: str = "paper",
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """The validated, resolved config of one run. Raises `ConfigError` / `UnknownTaskError`."""
    if method not in METHODS:
        import difflib

        close = difflib.get_close_matches(method, METHODS, n=1)
        raise ConfigError(
            f"unknown method {method!r}",
            f"choose one of {', '.join(METHODS)}" + (f" (did you mean {close[0]}?)" if close else ""),
        )
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}", f"choose one of {', '.join(PROFILES)}")
    raw: dict[str, Any] = {"task": task, "method": method, "seed": seed, "profile": profile}
    raw = _deep_merge(raw, PROFILES[profile])
    raw = _deep_merge(raw, overrides or {})
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise _format_validation_error(err) from None
    return config.resolved()


def load_run_config(text: str) -> RunConfig:
    """Inverse of `RunConfig.to_json` (used when resuming from a checkpoint directory), for configs saved by
    any romi version (`saved_config`)."""
    return RunConfig.model_validate(saved_config(json.loads(text)))


def same_config(saved: dict[str, Any], config: RunConfig) -> bool:
    """Whether a saved config.json (any romi version's) is `config`: compared as this version reads it, so a
    field added since (with its default, what the saved run used) is no difference."""
    try:
        return RunConfig.model_validate(saved_config(saved)).model_dump() == config.model_dump()
    except (ValidationError, RomiError):
        return False


def saved_config(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config.json as this version reads it. Saved before `data_recipe` existed, a maze2d run trained
    on the only local recipe there was, Minari's: say so, so it is never taken for a run on D4RL's recipe."""
    if "data_recipe" not in data and isinstance(data.get("task"), str):
        from romi.tasks import TASKS

        task = TASKS.get(data["task"])
        if task is not None and task.domain == "maze2d":
            return {**data, "data_recipe": "minari"}
    return data
