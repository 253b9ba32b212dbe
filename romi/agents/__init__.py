"""Offline learners: BCQ and CQL, each readable top to bottom over the building blocks of `romi.nets`.

`make_agent` is the one place that turns a run config into its learner (as OGBench's agent registry).
"""

from __future__ import annotations

from romi.agents.bcq import BCQ
from romi.agents.cql import CQL
from romi.config import BCQConfig, CQLConfig, RunConfig
from romi.types import Learner

LEARNERS: dict[str, type[BCQ] | type[CQL]] = {"bcq": BCQ, "cql": CQL}


def learner_config(config: RunConfig) -> BCQConfig | CQLConfig:
    """The learner's own section of a run config (`config.bcq` or `config.cql`)."""
    return config.bcq if config.method_spec.learner == "bcq" else config.cql


def make_agent(config: RunConfig, obs_dim: int, act_dim: int, max_action: float) -> Learner:
    """The run's learner, freshly initialised from its seed, on its device, in its precision."""
    learner = LEARNERS[config.method_spec.learner]
    return learner(obs_dim, act_dim, max_action, learner_config(config), seed=config.seed,  # type: ignore[arg-type]
                   device=config.device, precision=config.precision)


__all__ = ["BCQ", "CQL", "LEARNERS", "Learner", "learner_config", "make_agent"]
