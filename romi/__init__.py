"""romi: Reverse Offline Model-based Imagination (ROMI) for offline RL, benchmarked on Ray."""

__version__ = "0.1.0"
