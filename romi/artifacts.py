"""Trained dynamics models and rollout policies, saved once and shared by every run that needs them.

A model depends only on (dataset, direction, seed, its config) (spec §5), so its key is a hash of
exactly those. Artifacts are written atomically (staging directory + rename) and built under an
exclusive lock: concurrent runs that need the same model wait for the first to finish it instead of
training it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


def artifact_key(kind: str, **identity: Any) -> str:
    """A readable, collision-safe directory name for the artifact with this identity."""
    blob = json.dumps({"kind": kind, **identity}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    readable = "-".join(
        str(identity[k]).replace("/", "_") for k in ("dataset_id", "direction", "seed") if k in identity
    )
    return f"{kind}/{readable}-{digest}"


@dataclass(frozen=True)
class Artifact:
    module: nn.Module
    info: dict[str, Any]
    built: bool
    """True when this call trained it; False when it was loaded from the store."""
    path: Path


class ArtifactStore:
    """A directory of `<kind>/<key>/{state.pt, info.json}` with per-key build locks."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        return (self.path(key) / "info.json").is_file()

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
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
        with self._lock(key):
            if self.exists(key):
                return self._load(key, empty)
            started = time.perf_counter()
            module, info = build()
            info = {**info, "identity": identity, "build_seconds": time.perf_counter() - started}
            self._save(key, module, info)
            return Artifact(module, info, built=True, path=self.path(key))

    def _load(self, key: str, empty: Callable[[], nn.Module]) -> Artifact:
        directory = self.path(key)
        info = json.loads((directory / "info.json").read_text())
        module = empty()
        module.load_state_dict(torch.load(directory / "state.pt", map_location="cpu", weights_only=True))
        return Artifact(module, info, built=False, path=directory)

    def _save(self, key: str, module: nn.Module, info: dict[str, Any]) -> None:
        final = self.path(key)
        staging = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
        staging.mkdir(parents=True)
        try:
            torch.save(module.state_dict(), staging / "state.pt")
            (staging / "info.json").write_text(json.dumps(info, indent=2, default=str))
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
