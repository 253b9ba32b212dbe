"""Cluster-wide build locks, so concurrent trials wait for (never duplicate) a model being trained.

Trials on one machine could share a file lock, but trials on different nodes of a Ray cluster see
different disks; a named Ray actor owned by the sweep's driver is a lock every trial can reach.
"""

from __future__ import annotations

import contextlib
import threading
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

    def node_id(self) -> str:
        """The Ray node it runs on (it must be the driver's: see `start_coordinator`)."""
        import ray

        return ray.get_runtime_context().get_node_id()


_coordinator: Any = None  # the driver keeps the handle: a non-detached actor lives while it is referenced

RECONNECT_SECONDS = 600.0
"""How long a lock client keeps re-resolving a coordinator that died or restarts before giving up."""


def start_coordinator(node_id: str | None = None, keep_every: float = 2.0) -> Any:
    """Create (or find) the sweep's coordinator actor; it lives as long as the driver holds it.

    It is pinned to the driver's node (`node_id`, default: this process's node): the driver dies with
    that node anyway, whereas a coordinator on a worker node took every ROMI trial down with that node.
    (Soft affinity is not enough: Ray spreads 0-CPU actors to other nodes even then.) It restarts without
    limit if its process dies, and a keeper thread in the driver re-creates it on the driver's node if it
    is ever gone for good; losing its claims is safe, because `load_or_build` re-checks under the lock
    and artifact writes are atomic.
    """
    import ray

    global _coordinator
    if _coordinator is not None:
        try:
            ray.get_actor(COORDINATOR_NAME, namespace=NAMESPACE)
            return _coordinator  # still alive; replacing the owning handle would kill it
        except ValueError:
            pass
    _coordinator = _create_coordinator(node_id or ray.get_runtime_context().get_node_id())
    _start_keeper(keep_every)
    return _coordinator


def _create_coordinator(node_id: str) -> Any:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return ray.remote(num_cpus=0)(BuildCoordinator).options(
        name=COORDINATOR_NAME, namespace=NAMESPACE, get_if_exists=True,
        max_restarts=-1, max_task_retries=-1,  # calls made while it restarts wait for the new process
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote()


_keeper: threading.Thread | None = None
_keeper_session: tuple[str, str] | None = None


def _session() -> tuple[str, str]:
    """Which Ray session this driver is in (a test may shut Ray down and start another cluster)."""
    import ray

    context = ray.get_runtime_context()
    return context.gcs_address, context.get_job_id()


def _start_keeper(every: float) -> None:
    """A driver thread that re-creates the coordinator (driver-owned, on the driver's node) when it is gone.

    It stops as soon as this session's Ray is down: `ray.get_actor` would silently start a new local Ray
    after `ray.shutdown()`.
    """
    import ray

    global _keeper, _keeper_session
    session = _session()
    if _keeper is not None and _keeper.is_alive() and _keeper_session == session:
        return

    def alive() -> bool:
        return ray.is_initialized() and _session() == session

    def keep() -> None:
        global _coordinator
        while True:
            time.sleep(every)
            if not alive():  # checked right before each call: the window for an auto-init is tiny
                return
            try:
                ray.get_actor(COORDINATOR_NAME, namespace=NAMESPACE)
            except ValueError:  # dead for good (e.g. its node died): clients wait for the new one
                if alive():
                    _coordinator = _create_coordinator(ray.get_runtime_context().get_node_id())
                    print("build coordinator re-created on the driver's node")
            except Exception:  # Ray shut down under the thread
                return

    _keeper_session = session
    _keeper = threading.Thread(target=keep, name="romi-coordinator-keeper", daemon=True)
    _keeper.start()


class RayBuildLock:
    """`ArtifactStore` lock backed by the coordinator actor (waits while another trial builds).

    Every call survives the coordinator's death: the client re-resolves it by name and retries until
    `reconnect_seconds` pass. Both calls are idempotent per owner, so a retried call cannot double-claim.
    """

    def __init__(self, owner: str, poll_seconds: float = 2.0, reconnect_seconds: float = RECONNECT_SECONDS) -> None:
        self.owner = owner
        self.poll_seconds = poll_seconds
        self.reconnect_seconds = reconnect_seconds
        self.coordinator = self._resolve()

    def _resolve(self) -> Any:
        import ray

        deadline = time.monotonic() + self.reconnect_seconds
        while True:
            try:
                return ray.get_actor(COORDINATOR_NAME, namespace=NAMESPACE)
            except ValueError:  # not (yet) registered again after its death
                if time.monotonic() > deadline:
                    raise
                time.sleep(self.poll_seconds)

    def _call(self, method: str, key: str) -> Any:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        deadline = time.monotonic() + self.reconnect_seconds
        while True:
            try:
                return ray.get(getattr(self.coordinator, method).remote(key, self.owner))
            except (RayActorError, ActorUnavailableError) as err:  # its node or process died
                if time.monotonic() > deadline:
                    raise
                print(f"build coordinator unavailable ({type(err).__name__}); reconnecting")
                time.sleep(self.poll_seconds)
                self.coordinator = self._resolve()

    @contextlib.contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        while not self._call("try_claim", key):
            time.sleep(self.poll_seconds)
        try:
            yield
        finally:
            self._call("release", key)
