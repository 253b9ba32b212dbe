from __future__ import annotations

import pytest

from romi.config import METHOD_TABLE, METHODS, build_run_config, load_run_config, parse_overrides
from romi.errors import ConfigError, UnknownTaskError


def test_paper_profile_fills_task_settings() -> None:
    config = build_run_config("maze2d-medium-sparse", "ROMI-BCQ")
    assert config.imagination.horizon == 5 and config.model_share == 0.5
    assert config.rollout_policy.kind == "uniform" and config.return_weighted is False
    assert config.gradient_steps == 1_000_000 and config.bcq.batch_size == 100
    cql = build_run_config("walker2d-medium", "ROMI-CQL")
    assert cql.imagination.horizon == 1 and cql.rollout_policy.kind == "cvae"
    assert cql.gradient_steps == 1_500_000 and cql.return_weighted is True


def test_method_table_choices() -> None:
    assert set(METHOD_TABLE) == set(METHODS)
    assert build_run_config("antmaze-umaze", "ROMI-RBC-BCQ").rollout_policy.kind == "rbc"
    assert build_run_config("maze2d-umaze-sparse", "BCQ").model_share == 0.0
    assert METHOD_TABLE["FOMI-BCQ"].direction == "forward"


def test_quick_profile_and_overrides_layer_in_order() -> None:
    config = build_run_config(
        "maze2d-umaze-sparse", "ROMI-BCQ", profile="quick",
        overrides=parse_overrides(["gradient_steps=123", "bcq.phi=0.1", "bcq.actor_hidden=[64, 64]"]),
    )
    assert config.gradient_steps == 123 and config.bcq.phi == 0.1 and config.bcq.actor_hidden == (64, 64)
    assert config.imagination.buffer_size == 100_000  # from the quick profile


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("bcq.batchsize=3", "unknown key 'bcq.batchsize'"),
        ("bcq.batch_size=0", "bcq.batch_size"),
        ("model_share=1.5", "model_share"),
        ("dynamics.num_elites=9", "num_elites (9) exceeds"),
        ("dynamics.weight_decays=[0.1]", "weight_decays needs"),
        ("rollout_policy.kind=gan", "rollout_policy.kind"),
    ],
)
def test_invalid_values_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_run_config("hopper-random", "ROMI-CQL", overrides=parse_overrides([override]))
    assert needle in str(info.value)


def test_bad_override_syntax_unknown_method_and_task() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["gradient_steps"])
    with pytest.raises(ConfigError, match="did you mean ROMI-CQL"):
        build_run_config("hopper-random", "ROMI-CQ")
    with pytest.raises(UnknownTaskError, match="hopper-random"):
        build_run_config("hoper-random", "CQL")


def test_config_round_trips_through_json() -> None:
    config = build_run_config("antmaze-medium-play", "FOMI-BCQ", seed=3, profile="quick")
    assert load_run_config(config.to_json()) == config
    with pytest.raises(Exception, match="frozen"):
        config.seed = 4  # type: ignore[misc]
