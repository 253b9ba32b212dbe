"""What every `romi` command shares: the Typer apps, the consoles, and `friendly_errors` (every
`RomiError` becomes a short red message with its fix and exit code 2)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from romi.errors import RomiError

app = typer.Typer(
    help="ROMI (Reverse Offline Model-based Imagination) benchmarks on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: list, make and inspect the paper's tasks.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

INTERRUPTED = "nothing half-written was kept"

THREADS_HELP = ("Torch threads for this command (default 1). On a busy machine more threads than free cores "
                "wait on each other: one extra job beside a 2-thread run measured 0.9 steps/s against 18-20 with "
                "one thread. Raise it only on an idle machine.")


def use_threads(threads: int) -> None:
    """Run this process's torch work on `threads` threads (checked >= 1 by the option)."""
    import torch

    torch.set_num_threads(threads)


def _print_error(problem: str, hint: str | None) -> None:
    # Messages carry user text (paths, YAML errors with `[...]`): escaped, or rich would eat it as markup.
    err_console.print(f"[bold red]error:[/] {escape(problem)}")
    if hint:
        err_console.print(f"[yellow]fix:[/] {escape(hint)}")


def friendly_errors(func: F | None = None, *, interrupted: str = INTERRUPTED) -> Any:
    """Turn library errors into a message naming the problem and the fix, and exit code 2.

    `interrupted` is what Ctrl-C leaves behind, said to the user (per command).
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except RomiError as err:
                _print_error(err.problem, err.hint)
                raise typer.Exit(err.exit_code) from None
            except OSError as err:
                # A safety net behind the up-front checks: a disk that fills or a path that vanishes
                # mid-run is the user's to fix, and a traceback would not say how.
                where = f" ({err.filename})" if err.filename else ""
                _print_error(f"{err.strerror or err}{where}",
                             "check that the path exists, is writable and its disk has space, then rerun")
                raise typer.Exit(RomiError.exit_code) from None
            except KeyboardInterrupt:
                err_console.print(f"[red]interrupted[/]: {escape(interrupted)}")
                raise typer.Exit(130) from None

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"
