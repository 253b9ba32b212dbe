"""romi: Reverse Offline Model-based Imagination (ROMI) for offline RL, benchmarked on Ray."""

__version__ = "0.1.0"


def _quiet_adroit_notice() -> None:
    """gymnasium-robotics prints (to stderr, with `print`, not `warnings`) a notice about its Adroit
    envs' rewards whenever it is first imported, from `farama_notifications`. romi uses no Adroit env,
    and the import happens in every process (CLI, Tune trials, rollout actors: all import `romi` first),
    so the notice is dropped here, before anything imports gymnasium-robotics. Other notices stay."""
    try:
        from farama_notifications import notifications
    except ImportError:  # an older gymnasium-robotics without notifications
        return
    for version, message in list(notifications.get("gymnasium_robotics", {}).items()):
        if "AdroitHand" in str(message):
            del notifications["gymnasium_robotics"][version]


_quiet_adroit_notice()
