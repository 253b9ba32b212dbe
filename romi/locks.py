"""One writer at a time: an exclusive lock on what a command writes (a run directory, a dataset being made).

The lock is `flock` on a small file that also says who holds it (pid, host, command, since when). The
kernel releases a `flock` when its holder dies, however it dies, so a lock left by a killed process is
recognised as stale by construction: the next writer takes it. A second live writer is refused at once
with who holds the lock, instead of both writing and the last one's files silently mixing with the
first's (`config.json` from one run, the evaluations from the other).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from romi.errors import RomiError


class BusyError(RomiError):
    """What a command would write is being written by another live process."""


LOCKS_DIR = Path(tempfile.gettempdir()) / "romi-locks"
"""Where the lock files live: outside what they guard, so a refused command leaves that tree untouched.
Locks are per machine (as `flock` is)."""


def lock_file_for(target: Path) -> Path:
    """The lock file guarding `target` (a run directory, a dataset's directory), keyed by its absolute path."""
    key = hashlib.sha256(str(target.expanduser().resolve()).encode()).hexdigest()[:20]
    return LOCKS_DIR / f"{key}.lock"


@contextlib.contextmanager
def exclusive(target: Path, what: str) -> Iterator[None]:
    """Hold the lock on `target` for the duration, or raise `BusyError` naming its holder. `what` names what
    is being written, for the message (`run directory runs/x`, `dataset local/pointmaze/umaze-v0`)."""
    lock_file = lock_file_for(target)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file, "a+")  # noqa: SIM115 - held open for the lock's lifetime, closed below
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            raise BusyError(f"{what} is being written by another romi process ({holder})",
                            "wait for it to finish, or stop it (a killed process releases its lock), then rerun"
                            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                                 "command": " ".join(sys.argv[:6])}))
        handle.flush()
        yield
    finally:
        handle.close()  # releases the flock; the file stays, harmless (a lock is the flock, not the file)


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']} since {since}: {info.get('command', '?')}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def held(target: Path) -> bool:
    """Whether a live process holds the lock on `target` right now (e.g. a sweep's driver: `romi report`
    then calls its unfinished trials running, not stopped)."""
    lock_file = lock_file_for(target)
    if not lock_file.is_file():
        return False
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
