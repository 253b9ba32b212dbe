"""Atomic file writes: a reader (or a crash) never sees a half-written result or checkpoint."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from romi.errors import PreflightError, RomiError


class DiskFullError(RomiError):
    """A write ran out of space (or would: `check_free_space`); what it left is removed."""


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    probe = Path(path).expanduser()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_free_space(path: str | os.PathLike[str], needed: int, what: str) -> None:
    """Refuse, before the work that leads to it, a write of about `needed` bytes that the disk of `path`
    cannot take."""
    free = free_bytes(path)
    if needed > free:
        raise DiskFullError(f"{what} needs about {_size(needed)} at {path}, and its disk has {_size(free)} free",
                            "free space there, or point it at a disk with room")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if _no_space(err):
            raise DiskFullError(f"no space left on the disk of {path} while writing it (the partial file is removed; "
                                f"{_size(free_bytes(path.parent))} free now)",
                                "free space there, or point the output at a disk with room, then rerun") from None
        raise


def _no_space(err: BaseException) -> bool:
    """ENOSPC (or EDQUOT), raised as an OSError or wrapped in another error's message (torch's RuntimeError
    from its zip writer, h5py's)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "Disk quota exceeded" in text


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    _atomic(Path(path), lambda handle: handle.write(text.encode()))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    import torch  # here, not at the top: readers of datasets and results need no torch

    _atomic(Path(path), lambda handle: torch.save(obj, handle))


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[Any], Any]) -> None:
    """`write(handle)` into a binary file handle, which then replaces `path` atomically (any writer that
    takes a file object: matplotlib's `savefig`, pandas' `to_csv`, `np.savez`, ...)."""
    _atomic(Path(path), write)


def atomic_save_npz(path: str | os.PathLike[str], arrays: dict[str, Any]) -> None:
    """`np.savez` to `path`, atomically (numpy writes to an open file as well as to a name)."""
    import numpy as np

    _atomic(Path(path), lambda handle: np.savez(handle, **arrays))


def atomic_dir(final: str | os.PathLike[str], write: Callable[[Path], Any]) -> None:
    """`write(staging)` fills a fresh directory beside `final`, which then replaces `final` by a rename.

    A crash while writing leaves `final` as it was (and a hidden staging directory, removed here on
    any exception); readers never see a half-written directory.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(staging)
        for path in staging.rglob("*"):  # on disk before the rename makes them visible
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_writable_dir(path: str | os.PathLike[str], option: str) -> None:
    """Refuse, before anything starts, a directory (`option` names the flag) that cannot be made or written.

    Nothing is left behind: the directory is not created here; a probe file is created and removed in
    the nearest directory that exists, because permission bits alone lie (root, read-only mounts, ACLs).
    """
    target = Path(path).expanduser()
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise PreflightError(
            f"{option} {target}: {probe} is a file, not a directory",
            f"give {option} a directory path (not inside a file)",
        )
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".romi-write-check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        where = "" if probe == target else f" (its nearest existing parent {probe} is not writable)"
        raise PreflightError(
            f"{option} {target} is not writable: {err.strerror or err}{where}",
            f"give {option} a writable directory, or fix the permissions of {probe}",
        ) from None
