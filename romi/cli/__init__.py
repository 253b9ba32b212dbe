"""`romi` command line: thin wrappers over the library (data | train | imagine | sweep | report | export).

Nothing here holds logic that the Python API does not also offer. One module per group of commands;
importing them registers their commands on `app`.
"""

from __future__ import annotations

from romi.cli import data, run, sweep  # noqa: F401  (registers the commands)
from romi.cli.common import app, friendly_errors

__all__ = ["app", "friendly_errors", "main"]


def main() -> None:  # pragma: no cover - console-script entry for `python -m romi`
    app()
