"""Trained dynamics models and rollout policies, saved once and shared by every run that needs them.

A model depends only on (dataset, direction, seed, its config) (spec §5), so its key is a hash of
exactly those. Artifacts are built under an exclusive lock (a file lock on one machine; the sweep's
`RayBuildLock` across a cluster): concurrent runs that need the same model wait for the first to
finish it instead of training it again. The store is a local directory or any URI Ray Tune accepts
as storage (`s3://`, `gs://`, ...): remote artifacts are read through a local cache. A write is
complete when `info.json` appears: locally by renaming a staging directory, remotely by uploading
`info.json` last.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from romi.io import atomic_dir
from romi.storage import is_remote


def artifact_key(artifact_kind: str, /, **identity: Any) -> str:
    """A readable, collision-safe directory name for the artifact with this identity."""
    blob = json.dumps({"artifact": artifact_kind, **identity}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    readable = "-".join(
        str(identity[k]).replace("/", "_") for k in ("dataset_id", "direction", "seed") if k in identity
    )
    return f"{artifact_kind}/{readable}-{digest}"


@dataclass(frozen=True)
class Artifact:
    module: nn.Module
    info: dict[str, Any]
    built: bool
    """True when this call trained it; False when it was loaded from the store."""
    path: Path


BuildLock = Callable[[str], contextlib.AbstractContextManager[None]]


class ArtifactStore:
    """`<root>/<kind>/<key>/{state.pt, info.json}` with per-key build locks."""

    def __init__(self, root: str | os.PathLike[str], lock: BuildLock | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.uri = str(root).removeprefix("file://")
        self.remote = is_remote(self.uri)
        if self.remote:
            import pyarrow.fs

            self.fs, self.base = pyarrow.fs.FileSystem.from_uri(self.uri)
            self.cache = Path(cache_dir or Path.home() / ".cache" / "romi" / "artifacts")
        self.root = self.cache if self.remote else Path(self.uri)
        self.lock: BuildLock = lock or self._file_lock

    def path(self, key: str) -> Path:
        """Where the artifact is (or is cached) on this machine."""
        return self.root / key

    def scratch(self, key: str) -> Path:
        """A local directory where an interrupted build of `key` keeps its progress (removed once built).

        Always on this machine, also for a remote store: a build that restarts on another node
        starts over, one that restarts here continues.
        """
        return self.root / ".partial" / key

    def exists(self, key: str) -> bool:
        if self.remote:
            import pyarrow.fs

            info = self.fs.get_file_info(f"{self.base}/{key}/info.json")
            return info.type != pyarrow.fs.FileType.NotFound
        return (self.path(key) / "info.json").is_file()

    def infos(self, kind: str) -> list[dict[str, Any]]:
        """The `info.json` of every finished artifact of `kind` in the store (what training each took),
        read where the store is (a remote store's are not cached)."""
        if not self.remote:
            return [json.loads(path.read_text()) for path in sorted((self.root / kind).glob("*/info.json"))]
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(f"{self.base}/{kind}", allow_not_found=True, recursive=True)
        found = sorted(i.path for i in self.fs.get_file_info(selector) if i.path.endswith("/info.json"))
        infos = []
        for path in found:
            with self.fs.open_input_stream(path) as handle:
                infos.append(json.loads(handle.read()))
        return infos

    @contextlib.contextmanager
    def _file_lock(self, key: str) -> Iterator[None]:
        lock_path = self.root / ".locks" / (key.replace("/", "__") + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another process builds this key
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load_or_build(
        self,
        key: str,
        *,
        empty: Callable[[], nn.Module],
        build: Callable[[], tuple[nn.Module, dict[str, Any]]],
        identity: dict[str, Any],
    ) -> Artifact:
        """Load artifact `key` into `empty()`, or `build()` and save it (once, under a lock)."""
        with self.lock(key):
            if self.exists(key):
                return self._load(key, empty)
            started = time.perf_counter()
            module, info = build()
            info = {**info, "identity": identity, "build_seconds": time.perf_counter() - started}
            self._save(key, module, info)
            shutil.rmtree(self.scratch(key), ignore_errors=True)
            return Artifact(module, info, built=True, path=self.path(key))

    def _load(self, key: str, empty: Callable[[], nn.Module]) -> Artifact:
        directory = self.path(key)
        if self.remote and not (directory / "info.json").is_file():
            self._download(key)
        info = json.loads((directory / "info.json").read_text())
        module = empty()
        module.load_state_dict(torch.load(directory / "state.pt", map_location="cpu", weights_only=True))
        return Artifact(module, info, built=False, path=directory)

    def _save(self, key: str, module: nn.Module, info: dict[str, Any]) -> None:
        def write(staging: Path) -> None:
            staging.mkdir(parents=True)
            torch.save(module.state_dict(), staging / "state.pt")
            (staging / "info.json").write_text(json.dumps(info, indent=2, default=str))
            if self.remote:
                self._upload(key, staging)

        atomic_dir(self.path(key), write)

    def _upload(self, key: str, local: Path) -> None:
        import pyarrow.fs

        destination = f"{self.base}/{key}"
        self.fs.create_dir(destination, recursive=True)
        for name in ("state.pt", "info.json"):  # info.json last: its presence marks a complete artifact
            pyarrow.fs.copy_files(str(local / name), f"{destination}/{name}", destination_filesystem=self.fs)

    def _download(self, key: str) -> None:
        import pyarrow.fs

        def write(staging: Path) -> None:
            staging.mkdir(parents=True)
            for name in ("state.pt", "info.json"):
                pyarrow.fs.copy_files(f"{self.base}/{key}/{name}", str(staging / name), source_filesystem=self.fs)

        atomic_dir(self.path(key), write)
