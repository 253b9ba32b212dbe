"""The files we ship for a real cluster: the image, the cluster launcher config and the KubeRay manifests,
checked against the schemas their tools use (Ray's cluster-config schema from the installed ray package;
KubeRay's CRDs, vendored under tests/data/) and against each other (versions, volumes, sweeps, GPUs)."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from romi.tune.spec import load_sweep, shipped_sweeps

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CRDS = Path(__file__).parent / "data" / "kuberay-v1.7.0"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pinned_ray() -> str:
    (ray_req,) = [r for r in _pyproject()["project"]["optional-dependencies"]["cluster"] if r.startswith("ray[")]
    extras, version = re.fullmatch(r"ray\[([a-z,]+)\]==([0-9.]+)", ray_req).groups()  # type: ignore[union-attr]
    assert {"default", "tune", "rllib"} <= set(extras.split(",")), "the job API and dashboard need ray[default]"
    return version


def test_cluster_extra_pins_the_tested_ray_and_storage_clients() -> None:
    assert _pinned_ray() == ray.__version__, "the cluster extra must pin the Ray the tests run on"
    cluster = _pyproject()["project"]["optional-dependencies"]["cluster"]
    assert any(r.startswith("boto3") for r in cluster) and any(r.startswith("pyarrow") for r in cluster)
    assert any(r.startswith("nbconvert") for r in _pyproject()["project"]["optional-dependencies"]["dev"])


def test_dockerfile_builds_from_rays_python311_image_of_the_pinned_version() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    (base,) = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert resolved == f"rayproject/ray:{_pinned_ray()}-py311-cpu"
    assert re.sub(r"\$\{(\w+)\}", lambda m: {**args, "VARIANT": "gpu"}[m.group(1)], base).endswith("-py311-gpu")
    assert '[cluster]"' in text and "pip install --no-cache-dir -e" not in text, "a regular install of romi[cluster]"
    assert "romi sweep --list" in text, "the build proves the sweep files are in the installed package"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# --------------------------------------------------------------------------------------------
# cluster/aws.yaml
# --------------------------------------------------------------------------------------------


def _aws() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


def test_aws_yaml_passes_rays_own_cluster_config_validation() -> None:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(_aws())]
    assert errors == []
    validate_config(prepare_config(_aws()))  # what `ray up` runs: raises on an invalid config


def _commands(config: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [command for key in keys for command in config.get(key, [])]


def test_aws_yaml_runs_the_image_with_shared_data_and_storage_access() -> None:
    config = _aws()
    assert config["docker"]["image"].endswith("-cpu"), "the image built by cluster/Dockerfile"
    run_options = " ".join(config["docker"]["run_options"])
    mount = re.search(r"-v (\S+):(\S+)", run_options)
    assert mount is not None and f"MINARI_DATASETS_PATH={mount.group(2)}/" in run_options, "the store is on the mount"
    assert any("mount -t nfs4" in c and mount.group(1) in c for c in config["initialization_commands"])
    assert "RAY_AUTH_MODE=token" in run_options
    commands = _commands(config)
    assert not [c for c in commands if "|| true" in c or "2>/dev/null" in c], "setup commands fail loudly"
    assert any(f"ray.__version__ == '{_pinned_ray()}'" in c for c in config["setup_commands"])
    assert any("version_info[:2] == (3, 11)" in c for c in config["setup_commands"])
    prepare = [c for c in config["head_setup_commands"] if c.startswith("romi data prepare")]
    assert prepare and set(prepare[0].split()[3:]) == set(shipped_sweeps()), "every shipped sweep's data"
    for name, node_type in config["available_node_types"].items():
        if name != config["head_node_type"]:
            assert "IamInstanceProfile" in node_type["node_config"], f"{name} cannot write s3:// storage"
        assert "GPU" not in node_type["resources"]


# --------------------------------------------------------------------------------------------
# cluster/kuberay.yaml
# --------------------------------------------------------------------------------------------


def _kuberay() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text())}


def _strict(schema: Any) -> Any:
    """The CRD's schema with unknown fields made errors (the API server would silently prune them)."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def _crd_schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load(gzip.decompress((CRDS / f"ray.io_{plural}.yaml.gz").read_bytes()))
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(served["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize(("kind", "plural"), [("RayCluster", "rayclusters"), ("RayJob", "rayjobs")])
def test_kuberay_yaml_matches_the_kuberay_crds(kind: str, plural: str) -> None:
    import jsonschema

    document = _kuberay()[kind]
    assert document["apiVersion"] == "ray.io/v1"
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(_crd_schema(plural)).iter_errors(document)]
    assert errors == []


def test_the_strict_crd_check_catches_a_misspelt_field() -> None:
    import jsonschema

    cluster = _kuberay()["RayCluster"]
    broken = {**cluster, "spec": {**cluster["spec"], "enableInTreeAutoScaling": True}}
    assert list(jsonschema.Draft7Validator(_crd_schema("rayclusters")).iter_errors(broken))


def _pod_specs(documents: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    cluster = documents["RayCluster"]["spec"]
    return ([documents["Job"]["spec"]["template"]["spec"], cluster["headGroupSpec"]["template"]["spec"]]
            + [group["template"]["spec"] for group in cluster["workerGroupSpecs"]])


def test_kuberay_yaml_is_deployable_as_shipped() -> None:
    documents = _kuberay()
    cluster = documents["RayCluster"]["spec"]
    assert cluster["rayVersion"] == _pinned_ray()
    assert cluster["authOptions"]["mode"] == "token"
    if any(g["maxReplicas"] > g.get("minReplicas", 0) for g in cluster["workerGroupSpecs"]):
        assert cluster.get("enableInTreeAutoscaling") is True, "maxReplicas means nothing without the autoscaler"
    claim = documents["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    wants_gpu = any(load_sweep(path).resources.gpu > 0 for path in shipped_sweeps().values())
    for pod in _pod_specs(documents):
        assert pod["serviceAccountName"] == documents["ServiceAccount"]["metadata"]["name"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert claims == {claim["metadata"]["name"]}, "every pod mounts the defined volume"
        (container,) = pod["containers"]
        assert container["image"].endswith("-cpu")
        env = {e["name"]: e.get("value") for e in container["env"]}
        mount = container["volumeMounts"][0]["mountPath"]
        assert env["MINARI_DATASETS_PATH"].startswith(mount + "/")
        requests_gpu = "nvidia.com/gpu" in container["resources"].get("requests", {})
        assert requests_gpu == wants_gpu, "GPU requests match the sweep files' resources"
    prep = documents["Job"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert prep[:3] == ["romi", "data", "prepare"] and set(prep[3:]) == set(shipped_sweeps())
    entrypoint = documents["RayJob"]["spec"]["entrypoint"].split()
    assert entrypoint[:2] == ["romi", "sweep"] and entrypoint[2] in shipped_sweeps(), "a sweep the image ships"


# --------------------------------------------------------------------------------------------
# Sweep files travel with the package
# --------------------------------------------------------------------------------------------


def test_sweeps_are_found_by_name_and_a_path_still_works(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from romi.cli import app

    assert {"quick", "table1", "table2", "table3", "table4"} <= set(shipped_sweeps())
    assert load_sweep("table1").table == 1
    assert load_sweep(ROOT / "tune_configs" / "quick.yaml") == load_sweep("quick")
    own = tmp_path / "table1.yaml"  # a file in the working directory wins over the shipped name
    own.write_text(yaml.safe_dump({"tasks": ["maze2d-umaze-sparse"], "methods": ["BCQ"], "seeds": 1}))
    assert load_sweep(own).seeds == 1
    listed = CliRunner().invoke(app, ["sweep", "--list"])
    assert listed.exit_code == 0 and all(name in listed.output for name in shipped_sweeps())
    missing = CliRunner().invoke(app, ["sweep", "tabel1"])
    assert missing.exit_code == 2 and "romi sweep --list" in " ".join(missing.output.split())


@pytest.mark.slow
def test_the_wheel_carries_the_sweep_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True)
    (wheel,) = tmp_path.glob("romi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"romi/sweeps/{name}.yaml" for name in shipped_sweeps()} <= names
