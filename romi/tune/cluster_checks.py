"""Per-node preflight of a sweep on a Ray cluster, before `Tuner.fit`.

The driver's own checks only see the driver's machine. On a cluster, a node whose Minari store lacks a
dataset makes its trials fail and burn their retries, and a `--storage` path that is local to the
driver's disk makes trials on other nodes die at their first checkpoint, after hours of model
training. So one small task runs on every alive node that can host a trial and checks both there:

- storage: a marker the driver writes under `--storage` must be visible from the node (a cloud URI is
  read through the same pyarrow filesystem Tune uses, so missing credentials show up too);
- data: every dataset the sweep needs is in the node's Minari store (`MINARI_DATASETS_PATH` as the
  node's trial processes see it, runtime-env overrides included).

All problems on all nodes are reported at once, each naming the node and its fix.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from romi.errors import ConfigError, DatasetMissingError, RomiError
from romi.storage import filesystem, is_remote
from romi.tune.spec import SweepSpec

MARKER_DIR = ".romi-preflight"
NODE_TIMEOUT_SECONDS = 300.0
"""A node busy starting workers (or with a slow shared disk) may take a while to answer; one that never
does is reported rather than waited on forever."""

SHARED_STORAGE_FIX = (
    "use storage every node reaches at the same path: --storage s3://BUCKET/romi, --storage gs://BUCKET/romi, "
    "or a shared file system (NFS, EFS, a ReadWriteMany volume) mounted at the same path on every node"
)


@dataclass(frozen=True)
class NodeReport:
    """What one node found; empty `storage_problem` and `missing` mean the node is ready."""

    node_id: str
    address: str
    hostname: str
    minari_path: str
    storage_problem: str = ""
    missing: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"node {self.address} ({self.hostname}, id {self.node_id[:8]})"


def node_check(spec: SweepSpec, marker_uri: str, node_id: str) -> NodeReport:
    """Runs on the node: can it read the driver's marker, and does its Minari store hold every dataset?"""
    import ray

    from romi.data.minari_io import datasets_root
    from romi.tune.spec import check_datasets

    storage_problem = ""
    try:
        if not _marker_visible(marker_uri):
            storage_problem = f"the marker {marker_uri} written by the driver is not visible here"
    except Exception as err:  # credentials, network, permissions: whatever the filesystem raises
        storage_problem = f"cannot read {marker_uri}: {type(err).__name__}: {err}"
    missing: tuple[str, ...] = ()
    try:
        check_datasets(spec)
    except DatasetMissingError as err:
        missing = tuple(line.strip() for line in err.problem.splitlines()[1:] if line.strip())
    return NodeReport(node_id=node_id, address=ray.util.get_node_ip_address(), hostname=socket.gethostname(),
                      minari_path=str(datasets_root()), storage_problem=storage_problem, missing=missing)


def _marker_visible(marker_uri: str) -> bool:
    import pyarrow.fs

    fs, path = filesystem(marker_uri)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.File


def trial_capable_nodes(spec: SweepSpec) -> list[dict[str, Any]]:
    """Alive nodes with room for a trial's own bundle (a CPU-less head never runs a trial or reads data)."""
    import ray

    need = spec.resources
    return [
        node for node in ray.nodes()
        if node.get("Alive") and node["Resources"].get("CPU", 0.0) >= need.cpu
        and node["Resources"].get("GPU", 0.0) >= need.gpu
    ]


def check_cluster(spec: SweepSpec, storage_uri: str, timeout: float = NODE_TIMEOUT_SECONDS) -> list[NodeReport]:
    """Refuse the sweep (`ConfigError`/`DatasetMissingError`) unless every node that can host a trial
    sees `storage_uri` and has the data. Needs `ray.init` first; returns the nodes' reports."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = trial_capable_nodes(spec)
    driver_node = ray.get_runtime_context().get_node_id()
    if all(node["NodeID"] == driver_node for node in nodes):
        return []  # one machine: the driver's own checks (and Tune's) already ran there

    marker_uri = f"{storage_uri.rstrip('/')}/{MARKER_DIR}/{uuid.uuid4().hex}"
    fs, marker_path = filesystem(marker_uri)
    try:
        fs.create_dir(os.path.dirname(marker_path), recursive=True)
        with fs.open_output_stream(marker_path) as out:
            out.write(b"written by the romi sweep driver; every node must see it\n")
    except Exception as err:
        raise ConfigError(f"cannot write to the sweep storage {storage_uri}: {type(err).__name__}: {err}",
                          "check the path or bucket and the driver's credentials") from None
    try:
        check = ray.remote(num_cpus=0, max_retries=0)(node_check)
        pending = {
            node["NodeID"]: check.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(spec, marker_uri, node["NodeID"])
            for node in nodes
        }
        reports, silent = [], []
        for node in nodes:
            try:
                reports.append(ray.get(pending[node["NodeID"]], timeout=timeout))
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError) as err:
                silent.append(f"  node {node['NodeManagerAddress']} (id {node['NodeID'][:8]}): "
                              f"no answer ({type(err).__name__})")
    finally:
        with contextlib.suppress(Exception):  # best effort: a leftover marker directory is harmless
            fs.delete_dir(os.path.dirname(marker_path))
    _raise_problems(spec, storage_uri, reports, silent)
    return reports


def _raise_problems(spec: SweepSpec, storage_uri: str, reports: list[NodeReport], silent: list[str]) -> None:
    """Storage first (it decides where data and results can live), then data, then silent nodes."""
    unshared = [r for r in reports if r.storage_problem]
    if unshared:
        lines = "\n".join(f"  {r.name}: {r.storage_problem}" for r in unshared)
        local = not is_remote(storage_uri)
        raise ConfigError(
            f"sweep {spec.name}: the storage {storage_uri} is not shared with {len(unshared)} of "
            f"{len(reports)} nodes" + (" (a local path on a multi-node cluster)" if local else "") + f":\n{lines}",
            SHARED_STORAGE_FIX,
        )
    without_data = [r for r in reports if r.missing]
    if without_data:
        lines = "\n".join(
            f"  {r.name}, MINARI_DATASETS_PATH={r.minari_path}:\n" + "\n".join(f"    {m}" for m in r.missing)
            for r in without_data
        )
        raise DatasetMissingError(
            f"sweep {spec.name}: {len(without_data)} of {len(reports)} nodes lack datasets the sweep needs:\n{lines}",
            "make or download them on those nodes (`romi data make TASK` / `minari download ID`), or put one "
            "Minari store on a shared mount and set MINARI_DATASETS_PATH to it on every node (or in the job's "
            "runtime env: --runtime-env-json '{\"env_vars\": {\"MINARI_DATASETS_PATH\": \"/shared/minari\"}}')",
        )
    if silent:
        raise RomiError(
            f"sweep {spec.name}: {len(silent)} node(s) did not answer the preflight check:\n" + "\n".join(silent),
            "check `ray status` (a node may be dead or out of memory) and resubmit",
        )
