"""Where results and models live: a local path or a URI that pyarrow understands (`s3://`, `gs://`,
...). The one place that tells the two apart, for the sweep's storage, the artifact store, the
cluster checks and the analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def is_remote(location: str) -> bool:
    """True for a URI other than `file://` (a local path or a `file://` URI is on this machine)."""
    return "://" in location and not location.startswith("file://")


def absolute(location: str) -> str:
    """The form Ray Tune wants: a URI as it is, a local path made absolute (`~` expanded)."""
    if is_remote(location):
        return location
    return str(Path(location.removeprefix("file://")).expanduser().resolve())


def filesystem(location: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    import pyarrow.fs

    if is_remote(location):
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), absolute(location)
