"""Cluster-wide build locks, so concurrent trials wait for (never duplicate) a model being trained.

Trials on one machine could share a file lock, but trials on different nodes of a Ray cluster see
different disks; a named Ray actor owned by the sweep's driver is a lock every trial can reach.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

COORDINATOR_NAME = "romi-build-coordinator"
NAMESPACE = "romi"


class BuildCoordinator:
    """Holds which artifact keys are being built, and by whom."""

    def __init__(self) -> None:
        self.building: dict[str, str] = {}

    def try_claim(self, key: str, owner: str) -> bool:
        holder = self.building.get(key)
        if holder is None or holder == owner:
            self.building[key] = owner
            return True
        return False

    def release(self, key: str, owner: str) -> None:
        if self.building.get(key) == owner:
            del self.building[key]

    def holders(self) -> dict[str, str]:
        return dict(self.building)


_coordinator: Any = None  # the driver keeps the handle: a non-detached actor lives while it is referenced


def start_coordinator() -> Any:
    """Create (or find) the sweep's coordinator actor; it lives as long as the driver holds it."""
    import ray

    global _coordinator
    if _coordinator is not None:
        try:
            ray.get_actor(COORDINATOR_NAME, namespace=NAMESPACE)
            return _coordinator  # still alive; replacing the owning handle would kill it
        except ValueError:
            pass
    _coordinator = ray.remote(num_cpus=0)(BuildCoordinator).options(
        name=COORDINATOR_NAME, namespace=NAMESPACE, get_if_exists=True
    ).remote()
    return _coordinator


class RayBuildLock:
    """`ArtifactStore` lock backed by the coordinator actor (waits while another trial builds)."""

    def __init__(self, owner: str, poll_seconds: float = 2.0) -> None:
        import ray

        self.coordinator = ray.get_actor(COORDINATOR_NAME, namespace=NAMESPACE)
        self.owner = owner
        self.poll_seconds = poll_seconds

    @contextlib.contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        import ray

        while not ray.get(self.coordinator.try_claim.remote(key, self.owner)):
            time.sleep(self.poll_seconds)
        try:
            yield
        finally:
            ray.get(self.coordinator.release.remote(key, self.owner))
