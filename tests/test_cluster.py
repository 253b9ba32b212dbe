"""Cluster faults on real multi-node Ray clusters (`ray.cluster_utils.Cluster`, plus a `ray start` node in
its own mount namespace): the lock actor's node dying, storage that is not shared, data missing on a node.
Each test starts its own small cluster, so a node's environment can differ from the driver's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tiny import TINY_TRIAL_OVERRIDES as TINY_OVERRIDES

from romi.errors import ConfigError, DatasetMissingError
from romi.tune.spec import TrialResources, load_sweep, trial_bundles

SMALL_STORE = 100 * 1024**2


def test_plain_methods_reserve_no_rollout_cpus() -> None:
    resources = TrialResources(cpu=1, gpu=0.5, rollout_workers=2)
    assert trial_bundles("BCQ", resources) == [{"CPU": 1.0, "GPU": 0.5}]
    assert trial_bundles("CQL", resources) == [{"CPU": 1.0, "GPU": 0.5}]
    for method in ("ROMI-BCQ", "ROMI-CQL", "FOMI-BCQ", "ROMI-RBC-BCQ"):
        assert trial_bundles(method, resources) == [{"CPU": 1.0, "GPU": 0.5}, {"CPU": 1.0}, {"CPU": 1.0}]


@pytest.fixture
def cluster() -> Iterator[object]:
    """A fresh head node (1 CPU) the test adds nodes to; torn down with everything it started."""
    import ray
    from ray.cluster_utils import Cluster

    from romi.tune import coordination

    head = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": SMALL_STORE})
    yield head
    ray.shutdown()
    coordination._coordinator = None  # its owner (this driver) is gone with the cluster
    head.shutdown()


def _sweep_file(directory: Path, name: str, dataset: str, methods: list[str]) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "tasks": [dataset], "methods": methods, "seeds": 1, "profile": "quick",
        "overrides": TINY_OVERRIDES, "resources": {"cpu": 1, "rollout_workers": 0},
    }))
    return path


def _tensorboard_steps(trial_dir: Path, tag: str = "ray/tune/score") -> list[int]:
    """The x-axis values of `tag` in a trial's TensorBoard event files (TFRecord framing, tensorboardX protos)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    steps = []
    for path in sorted(trial_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


def _wait_schedulable(node_id: str) -> None:
    """A node registered with the cluster may not be in the scheduler's view yet: run a task there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
    assert ray.get(where.options(scheduling_strategy=strategy).remote(), timeout=60) == node_id


def _evaluation_steps(trial_dir: Path) -> list[int]:
    checkpoints = sorted(trial_dir.glob("checkpoint_*/evaluations.jsonl"))
    return [json.loads(line)["step"] for line in checkpoints[-1].read_text().splitlines()]


@pytest.mark.ray
def test_sweep_survives_the_death_of_the_node_holding_the_lock(cluster, umaze_dataset: str, tmp_path: Path) -> None:
    """The coordinator is put where it used to land by chance (a worker node) and that node is removed
    while a trial holds a build claim: it is re-created on the driver's node, clients reconnect, and every
    evaluation is reported exactly once."""
    import ray

    from romi.analysis.results import load_results
    from romi.tune import coordination
    from romi.tune.sweep import run_sweep

    doomed = cluster.add_node(num_cpus=0, object_store_memory=SMALL_STORE)  # hosts no trial, only the lock
    ray.init(address=cluster.address)
    _wait_schedulable(doomed.node_id)
    coordinator = coordination.start_coordinator(node_id=doomed.node_id)
    assert ray.get(coordinator.node_id.remote()) == doomed.node_id
    removed = threading.Event()

    def remove_when_claimed() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            if ray.get(coordinator.holders.remote()):  # a trial is building a model under the lock
                cluster.remove_node(doomed)
                removed.set()
                return
            time.sleep(0.2)

    killer = threading.Thread(target=remove_when_claimed, daemon=True)
    killer.start()
    spec = load_sweep(_sweep_file(tmp_path, "lockloss", umaze_dataset, ["ROMI-BCQ", "FOMI-BCQ"]))
    grid = run_sweep(spec, str(tmp_path / "runs"), address="auto")
    killer.join(timeout=5)
    assert removed.is_set(), "the lock's node was not removed during a build"
    assert len(grid) == 2 and all(result.error is None for result in grid)
    revived = ray.get_actor(coordination.COORDINATOR_NAME, namespace=coordination.NAMESPACE)
    assert ray.get(revived.node_id.remote()) == cluster.head_node.node_id, "re-created on the driver's node"
    frame = load_results(str(tmp_path / "runs" / "lockloss"))
    assert sorted(frame.groupby("method")["step"].apply(list).items()) == [
        ("FOMI-BCQ", [50, 100]), ("ROMI-BCQ", [50, 100])]
    for trial_dir in (tmp_path / "runs" / "lockloss").glob("maze2d-*"):
        assert _evaluation_steps(trial_dir) == [50, 100]
        assert _tensorboard_steps(trial_dir) == [50, 100], "TensorBoard's x-axis is gradient steps"


@pytest.mark.ray
def test_coordinator_runs_on_the_drivers_node(cluster) -> None:
    """Worker nodes with more room than the head must not attract the lock actor (they did, even with a
    soft node affinity)."""
    import ray

    from romi.tune import coordination

    for _ in range(2):
        cluster.add_node(num_cpus=4, object_store_memory=SMALL_STORE)
    ray.init(address=cluster.address)
    coordinator = coordination.start_coordinator()
    assert ray.get(coordinator.node_id.remote()) == ray.get_runtime_context().get_node_id()


@pytest.mark.ray
def test_data_missing_on_one_node_is_refused_before_any_trial(cluster, umaze_dataset: str, tmp_path: Path) -> None:
    import ray

    from romi.tune.sweep import run_sweep

    empty_store = tmp_path / "empty-minari"
    empty_store.mkdir()
    bare = cluster.add_node(num_cpus=1, object_store_memory=SMALL_STORE,
                            env_vars={"MINARI_DATASETS_PATH": str(empty_store)})
    ray.init(address=cluster.address)
    spec = load_sweep(_sweep_file(tmp_path, "nodata", umaze_dataset, ["BCQ"]))
    with pytest.raises(DatasetMissingError) as raised:
        run_sweep(spec, str(tmp_path / "runs"), address="auto")
    message = raised.value.problem
    assert "1 of 2 nodes" in message and bare.node_id[:8] in message and str(empty_store) in message
    assert umaze_dataset in message and "MINARI_DATASETS_PATH" in raised.value.hint
    assert not (tmp_path / "runs" / "nodata").exists(), "a trial (or Tune) started"


def _ray_start_in_private_mount(address: str, hidden: Path) -> subprocess.Popen[bytes]:
    """A real worker node (`ray start`) that sees a fresh empty tmpfs at `hidden`: a disk not shared."""
    ray_exe = Path(sys.executable).parent / "ray"
    command = (f"mount -t tmpfs tmpfs {hidden} && exec {ray_exe} start --address={address} --num-cpus=1 --block "
               "--min-worker-port=0 --max-worker-port=0 --dashboard-agent-listen-port=0")
    return subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", command],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _can_unshare_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.ray
@pytest.mark.skipif(not _can_unshare_mounts(), reason="needs mount namespaces (root) to give a node its own disk")
def test_unshared_local_storage_is_refused_before_any_trial(cluster, umaze_dataset: str, tmp_path: Path) -> None:
    import ray

    from romi.tune.sweep import run_sweep

    storage = tmp_path / "runs"
    storage.mkdir()
    ray.init(address=cluster.address)
    node = _ray_start_in_private_mount(cluster.address, storage)
    try:
        deadline = time.time() + 60
        while sum(n["Alive"] for n in ray.nodes()) < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert sum(n["Alive"] for n in ray.nodes()) == 2, "the second node did not join"
        spec = load_sweep(_sweep_file(tmp_path, "unshared", umaze_dataset, ["BCQ"]))
        with pytest.raises(ConfigError) as raised:
            run_sweep(spec, str(storage), address="auto")
        assert "not shared with 1 of 2 nodes" in raised.value.problem
        assert "a local path on a multi-node cluster" in raised.value.problem
        assert "s3://" in raised.value.hint and "gs://" in raised.value.hint
        assert not (storage / "unshared").exists(), "a trial (or Tune) started"
        assert not any(storage.glob(".romi-preflight/*")), "the marker was left behind"
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(timeout=60)


def test_trial_threads_follow_the_trials_own_bundle() -> None:
    from romi.tune.trainable import trial_threads

    assert trial_threads([{"CPU": 1.0, "GPU": 0.0}, {"CPU": 1.0}, {"CPU": 1.0}]) == 1  # actors are not the trial's
    assert trial_threads([{"CPU": 2.0}]) == 2
    assert trial_threads([{"CPU": 0.5}]) == 1 and trial_threads([]) == 1
