"""The driver's checks before a sweep: everything that would make it fail, hang or overwrite, refused
up front with the setting to change, before Ray starts (`before_ray`) and before any trial
(`check_resources`, once Ray knows the cluster's resources).

A sweep is hours of compute: a problem found by a trial (after retries, in a traceback) or never found
(trials PENDING forever) costs far more than the few seconds these checks take. Per-node checks
(datasets and storage as each worker node sees them) belong with the cluster code; these are the
driver's.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from romi.errors import DatasetCorruptError, PreflightError
from romi.io import check_writable_dir
from romi.storage import absolute, is_remote
from romi.tune.spec import SweepSpec, check_datasets
from romi.types import Log

ADDRESS_TIMEOUT_S = 5.0
"""How long to wait for a cluster's head to accept a connection: Ray itself retries for ~14 minutes."""



def experiment_path(storage: str, name: str) -> str:
    """Where Tune keeps the sweep: an absolute local path or a URI."""
    root = absolute(storage)
    return f"{root.rstrip('/')}/{name}"


def check_num_cpus(address: str | None, num_cpus: int | None) -> None:
    if num_cpus is None:
        return
    if address is not None:
        raise PreflightError(
            f"--num-cpus {num_cpus} with --address {address}: a running cluster's CPUs are set where its nodes "
            "start (`ray start --num-cpus`), not by the driver",
            "drop --num-cpus, or drop --address to use a local Ray instance of that size",
        )
    if num_cpus < 1:
        raise PreflightError(f"--num-cpus {num_cpus}: a Ray instance with no CPU can run no trial",
                             "give --num-cpus 1 or more, or leave it out to use every core")


def check_address(address: str | None, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """A `host:port` (or `ray://host:port`) cluster address must accept a connection within seconds.

    `auto` and local Ray are left to `ray.init`, which fails fast when no instance is running.
    """
    if address is None or address == "auto":
        return
    target = address.split("://", 1)[1] if "://" in address else address
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise PreflightError(
            f"--address {address!r} is not host:port",
            "give the head node's address as printed by `ray start --head` (e.g. 10.0.0.5:6379), "
            "or 'auto' on a node of the cluster",
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise PreflightError(
            f"no Ray cluster answers at --address {address} ({reason} after at most {timeout:.0f} s)",
            "start the cluster (`ray start --head` on the head node) and check the host and port it prints, "
            "or drop --address to run on a local Ray instance",
        ) from None


def existing_trials(experiment: str) -> bool:
    """Whether a sweep already lives at `experiment` (Tune's experiment state, or trial directories)."""
    from ray import tune

    if tune.Tuner.can_restore(experiment):
        return True
    path = Path(experiment)
    return not is_remote(experiment) and path.is_dir() and any(path.glob("*/params.json"))


def check_existing(spec: SweepSpec, experiment: str, *, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise PreflightError("--resume and --overwrite contradict each other",
                             "--resume continues the sweep, --overwrite starts it over: choose one")
    if resume or overwrite or not existing_trials(experiment):
        return
    raise PreflightError(
        f"sweep {spec.name!r} already exists at {experiment}; running it again would recompute and overwrite it",
        "add --resume to continue it (finished trials are kept), --overwrite to start it over, or give the "
        "sweep another name (`name:` in the sweep file)",
    )


def check_dataset_integrity(spec: SweepSpec, log: Log) -> None:
    """Every dataset of the sweep present and readable, finite and of the task's sizes: the checks of
    `romi train`, made once here instead of by every trial (after its retries)."""
    from romi.data.minari_io import load_transitions

    found = check_datasets(spec)
    sources = {config.task: (config.data_source, config.data_recipe) for config in spec.trial_configs()}
    damaged = []
    for task, dataset_id in found.items():
        log(f"checking dataset {dataset_id} ({task})")
        try:
            load_transitions(task, *sources[task])
        except DatasetCorruptError as err:
            damaged.append(f"  {task}: {err.problem}\n    fix: {err.hint}")
    if damaged:
        raise DatasetCorruptError(
            f"sweep {spec.name}: {len(damaged)} of {len(found)} datasets are damaged:\n" + "\n".join(damaged),
            "re-create or re-download the datasets above, then rerun the sweep",
        )


def before_ray(spec: SweepSpec, storage: str, *, address: str | None, num_cpus: int | None, resume: bool,
               overwrite: bool, log: Log = print) -> str:
    """All checks that need no Ray, cheapest first; returns the experiment path."""
    check_num_cpus(address, num_cpus)
    if not is_remote(storage):
        check_writable_dir(Path(storage.removeprefix("file://")).expanduser(), "--storage")
    experiment = experiment_path(storage, spec.name)
    check_existing(spec, experiment, resume=resume, overwrite=overwrite)
    if not is_remote(storage):  # its checkpoints, models and rollout policies, every trial at once
        from romi.io import check_free_space
        from romi.space import run_bytes
        from romi.tasks import get_task

        configs = spec.trial_configs()
        per_cell = {(c.task, c.method): run_bytes(c, get_task(c.task)) for c in configs}  # seeds weigh the same
        need = sum(per_cell[(c.task, c.method)] for c in configs)
        check_free_space(Path(storage.removeprefix("file://")).expanduser(), need,
                         f"sweep {spec.name} ({len(configs)} trials)")
    check_address(address)
    check_dataset_integrity(spec, log)
    return experiment


@dataclass(frozen=True)
class ClusterResources:
    total_cpu: float
    total_gpu: float
    max_node_cpu: float
    max_node_gpu: float


def local_resources(num_cpus: int | None = None) -> ClusterResources:
    """What the embedded local instance would hold, read without starting Ray (`romi sweep --plan`
    costs a second instead of Ray's ~10 s start): `num_cpus` or this process's usable cores (its CPU
    affinity, as Ray counts them), and the GPUs torch sees. One node, so the node is the cluster."""
    import os

    import torch

    cpus = float(num_cpus if num_cpus is not None else len(os.sched_getaffinity(0)))
    gpus = float(torch.cuda.device_count())
    return ClusterResources(total_cpu=cpus, total_gpu=gpus, max_node_cpu=cpus, max_node_gpu=gpus)


def cluster_resources() -> ClusterResources:
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    return ClusterResources(
        total_cpu=sum(n.get("CPU", 0.0) for n in nodes),
        total_gpu=sum(n.get("GPU", 0.0) for n in nodes),
        max_node_cpu=max((n.get("CPU", 0.0) for n in nodes), default=0.0),
        max_node_gpu=max((n.get("GPU", 0.0) for n in nodes), default=0.0),
    )


def check_resources(spec: SweepSpec, cluster: ClusterResources, *, local: bool, log: Log = print) -> SweepSpec:
    """The per-trial placement group against the cluster: refuse what could never be placed (Tune would
    leave every trial PENDING forever), and fit the rollout actors to a local instance.

    A trial's group is one bundle {cpu, gpu} for its own process (one node must hold it) and
    `rollout_workers` bundles of 1 CPU (anywhere). Returns the spec to run (rollout_workers possibly 0).
    A remote cluster may be autoscaled (cluster/aws.yaml starts GPU nodes on demand), so there a
    shortfall is a warning naming the setting, not a refusal.
    """
    res = spec.resources
    problems = []
    if res.cpu > cluster.max_node_cpu:
        problems.append((f"each trial's process needs resources.cpu = {res.cpu:g} CPUs on one node, and the "
                         f"largest node has {cluster.max_node_cpu:g}",
                         f"set resources.cpu to at most {cluster.max_node_cpu:g} in the sweep file"
                         + (" (or give more with --num-cpus)" if local else "")))
    if res.gpu > cluster.max_node_gpu:
        problems.append((f"each trial needs resources.gpu = {res.gpu:g} GPUs on one node, and the largest node "
                         f"has {cluster.max_node_gpu:g}",
                         "set resources.gpu: 0 in the sweep file (CPU training), or run on a cluster with GPUs"))
    if res.gpu > 0 and local:
        import torch

        if not torch.cuda.is_available():
            problems.append(("resources.gpu > 0 but this torch has no usable CUDA GPU",
                             "set resources.gpu: 0, or install a CUDA build of torch"))
    if problems and local:
        raise PreflightError("; ".join(p for p, _ in problems), "; ".join(h for _, h in problems))
    for problem, hint in problems:
        log(f"warning: {problem}; trials wait until such a node joins (autoscaler). If none will: {hint}")

    needed = res.cpu + res.rollout_workers
    if needed <= cluster.total_cpu + 1e-9 or res.rollout_workers == 0:
        return spec
    if not local:
        log(f"warning: a trial reserves resources.cpu + rollout_workers = {needed:g} CPUs and the cluster has "
            f"{cluster.total_cpu:g}; trials wait for nodes to join. If none will: lower resources.rollout_workers")
        return spec
    # The model buffer is made of seeded shards: it is the same for any number of actors, which only
    # change how fast it is built. The actors' CPUs are reserved for the trial's whole life but busy
    # only while the buffer is built, so on a machine that cannot hold the group, building it in the
    # trial's own process (0 actors) runs more trials at once than any smaller number of actors would.
    log(f"note: a trial would reserve resources.cpu + rollout_workers = {res.cpu:g} + {res.rollout_workers} "
        f"CPUs and local Ray has {cluster.total_cpu:g}: rollout_workers set to 0 (the model buffer is built "
        f"in each trial's process; it is the same buffer, built more slowly)")
    resources = res.model_copy(update={"rollout_workers": 0})
    return spec.model_copy(update={"resources": resources})

