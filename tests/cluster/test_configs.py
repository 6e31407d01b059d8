"""The cluster configs in cluster/: valid for the tools that read them, and closed to the world.

Launcher YAMLs go through what `ray up` does before it contacts a cloud (Ray's
``prepare_config`` then ``validate_config`` against ``ray-schema.json``). KubeRay manifests are
checked against the required fields of the ray.io/v1 CRDs (KubeRay's
``ray-operator/apis/ray/v1/raycluster_types.go`` and ``rayjob_types.go``: fields without
``omitempty``) plus the pod-template fields Kubernetes requires.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
LAUNCHER = {name: CLUSTER / f"{name}.yaml" for name in ("aws", "gcp", "onprem")}
KUBERAY = {name: CLUSTER / "kuberay" / f"{name}.yaml" for name in ("raycluster", "rayjob")}
ALL_FILES = [*LAUNCHER.values(), *KUBERAY.values(), CLUSTER / "docker" / "Dockerfile"]


def _pinned(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


# ----------------------------------------------------------------------------- exposure
_WORLD = re.compile(r"0\.0\.0\.0/0|::/0|\b0\.0\.0\.0\b")


def exposures(text: str) -> list[str]:
    """Lines of a config that open something to any address (CIDR or bind-all)."""
    return [line.strip() for line in text.splitlines()
            if _WORLD.search(line.split("#", 1)[0])]


def published_services(doc: dict[str, Any]) -> list[str]:
    """Head groups of a RayCluster / RayJob that publish the head outside the cluster."""
    spec = doc.get("spec") or {}
    spec = spec.get("rayClusterSpec", spec)
    head = spec.get("headGroupSpec") or {}
    found = []
    if head.get("serviceType", "ClusterIP") != "ClusterIP":
        found.append(f"serviceType {head['serviceType']}")
    if head.get("enableIngress"):
        found.append("enableIngress")
    return found


def test_exposure_checks_catch_open_configs() -> None:
    assert exposures("IpRanges: [{CidrIp: 0.0.0.0/0}]") and exposures("--dashboard-host=0.0.0.0")
    assert exposures("CidrIpv6: ::/0")
    assert not exposures("--dashboard-host=127.0.0.1  # never 0.0.0.0/0")
    assert published_services({"spec": {"headGroupSpec": {"serviceType": "LoadBalancer"}}})
    assert published_services({"spec": {"rayClusterSpec": {"headGroupSpec": {
        "enableIngress": True}}}})


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_nothing_is_opened_to_the_world(path: Path) -> None:
    text = path.read_text()
    assert not exposures(text), f"{path.name} opens to any address: {exposures(text)}"
    if path.suffix == ".yaml":
        for doc in yaml.safe_load_all(text):
            assert not published_services(doc)
            provider = (doc.get("provider") or {}) if "provider" in doc else {}
            rules = (provider.get("security_group") or {}).get("IpPermissions", [])
            assert not rules, "no extra security-group rules: the cluster's own group suffices"


# ----------------------------------------------------------------------------- ray up
@pytest.mark.parametrize("name", sorted(LAUNCHER))
def test_launcher_config_passes_ray_up_validation(name: str) -> None:
    raw = yaml.safe_load(LAUNCHER[name].read_text())
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)  # Ray's ray-schema.json plus its own cross-field checks
    assert prepared["head_node_type"] in prepared["available_node_types"]
    broken = copy.deepcopy(prepared)
    del broken["available_node_types"][broken["head_node_type"]]["node_config"]
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)


def _commands(cfg: dict[str, Any], key: str) -> str:
    return "\n".join(cfg.get(key) or [])


@pytest.mark.parametrize("name", sorted(LAUNCHER))
def test_launcher_installs_raynas_and_secures_ray(name: str) -> None:
    cfg = yaml.safe_load(LAUNCHER[name].read_text())
    setup = _commands(cfg, "setup_commands")
    assert "raynas[cluster]" in setup and "constraints.txt" in setup
    assert cfg["file_mounts"]["~/raynas"] == "."  # the checkout `ray up` runs from
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    head = _commands(cfg, "head_start_ray_commands")
    worker = _commands(cfg, "worker_start_ray_commands")
    for start in re.findall(r"[^;\n]*ray start[^\n;]*", head + "\n" + worker):
        assert "RAY_AUTH_MODE=token" in start, start
    assert "--dashboard-host=127.0.0.1" in head
    mlflow = re.search(r"mlflow server.*", head.replace("\n", " "))
    assert mlflow and "--host 127.0.0.1" in mlflow.group(0)


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_cloud_configs_have_cpu_and_gpu_workers(name: str) -> None:
    cfg = yaml.safe_load(LAUNCHER[name].read_text())
    types = cfg["available_node_types"]
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}

    def has_gpu(node: dict[str, Any]) -> bool:
        conf = node["node_config"]
        return (node["resources"].get("GPU", 0) > 0 or bool(conf.get("guestAccelerators"))
                or str(conf.get("InstanceType", "")).startswith(("g", "p")))

    gpu = [k for k, v in workers.items() if has_gpu(v)]
    cpu = [k for k, v in workers.items() if not has_gpu(v)]
    assert gpu and cpu, (gpu, cpu)
    for k in gpu:  # the CUDA build of torch (no CPU index), then raynas
        commands = _commands(types[k], "worker_setup_commands")
        assert "torch==2.13.0" in commands and "whl/cpu" not in commands
        assert "raynas[cluster]" in commands
    assert "whl/cpu" in _commands(cfg, "setup_commands")


def test_onprem_config_installs_torch_per_host_kind() -> None:
    cfg = yaml.safe_load(LAUNCHER["onprem"].read_text())
    assert cfg["provider"]["type"] == "local" and "available_node_types" not in cfg
    assert cfg["provider"]["worker_ips"]
    setup = _commands(cfg, "setup_commands")
    assert "nvidia-smi" in setup and "whl/cpu" in setup


# ----------------------------------------------------------------------------- KubeRay
_CONTAINER = {"type": "object", "required": ["name", "image"],
              "properties": {"name": {"type": "string"}, "image": {"type": "string"}}}
_POD_TEMPLATE = {
    "type": "object", "required": ["spec"],
    "properties": {"spec": {"type": "object", "required": ["containers"], "properties": {
        "containers": {"type": "array", "minItems": 1, "items": _CONTAINER}}}},
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
RAYCLUSTER_SPEC = {
    "type": "object", "required": ["headGroupSpec"],
    "properties": {
        "rayVersion": {"type": "string"},
        "authOptions": {"type": "object", "properties": {
            "mode": {"enum": ["disabled", "token"]}}},
        "headGroupSpec": {"type": "object", "required": ["rayStartParams", "template"],
                          "properties": {"rayStartParams": _STRING_MAP,
                                         "template": _POD_TEMPLATE}},
        "workerGroupSpecs": {"type": "array", "items": {
            "type": "object",
            "required": ["groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"],
            "properties": {"groupName": {"type": "string"},
                           "replicas": {"type": "integer", "minimum": 0},
                           "minReplicas": {"type": "integer", "minimum": 0},
                           "maxReplicas": {"type": "integer", "minimum": 0},
                           "rayStartParams": _STRING_MAP, "template": _POD_TEMPLATE}}},
    },
}
RESOURCE = {
    "RayCluster": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
                   "properties": {"apiVersion": {"const": "ray.io/v1"},
                                  "metadata": {"type": "object", "required": ["name"]},
                                  "spec": RAYCLUSTER_SPEC}},
    "RayJob": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
               "properties": {"apiVersion": {"const": "ray.io/v1"},
                              "metadata": {"type": "object", "required": ["name"]},
                              "spec": {"type": "object", "required": ["entrypoint",
                                                                      "rayClusterSpec"],
                                       "properties": {"entrypoint": {"type": "string"},
                                                      "rayClusterSpec": RAYCLUSTER_SPEC}}}},
    "ConfigMap": {"type": "object", "required": ["apiVersion", "kind", "metadata", "data"],
                  "properties": {"apiVersion": {"const": "v1"},
                                 "metadata": {"type": "object", "required": ["name"]},
                                 "data": _STRING_MAP}},
}


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(KUBERAY[name].read_text()) if d]


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_manifests_have_the_crd_required_fields(name: str) -> None:
    docs = _docs(name)
    assert docs
    for doc in docs:
        jsonschema.validate(doc, RESOURCE[doc["kind"]])
        if doc["kind"] == "ConfigMap":
            continue
        spec = _cluster_spec(doc)
        # Same Ray on the pods as in this venv and the pins (client and cluster must match).
        assert spec["rayVersion"] == ray.__version__ == _pinned("ray")
        assert spec["authOptions"]["mode"] == "token"
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
        assert {"cpu", "gpu"} <= set(groups)
        for group in groups.values():
            assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert gpu["nvidia.com/gpu"] == "1"
        broken = copy.deepcopy(doc)
        del _cluster_spec(broken)["workerGroupSpecs"][0]["groupName"]
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, RESOURCE[doc["kind"]])


def test_rayjob_runs_raynas_on_the_configmap_config() -> None:
    from raynas.run.config import parse_config
    from raynas.run.runner import build_components

    docs = {d["kind"]: d for d in _docs("rayjob")}
    configmap, job = docs["ConfigMap"], docs["RayJob"]
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    volume = next(v for v in head["volumes"] if v.get("configMap"))
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    entry = job["spec"]["entrypoint"].split()
    assert entry[:2] == ["raynas", "run"] and entry[entry.index("--address") + 1] == "auto"
    config_path = Path(entry[2])
    assert config_path.parent == Path(mount["mountPath"])
    assert config_path.name in configmap["data"]
    env = {e["name"]: e for e in head["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http")
    cfg = parse_config(yaml.safe_load(configmap["data"][config_path.name]))
    assert cfg.tracking.uri is None  # taken from MLFLOW_TRACKING_URI on the head
    comps = build_components(cfg)  # every name and option resolves
    assert comps.evaluator.replicas == "per_node"


def test_images_use_the_pinned_ray() -> None:
    text = (CLUSTER / "docker" / "Dockerfile").read_text()
    base = re.search(r"ARG BASE=rayproject/ray:([\d.]+)-", text)
    assert base and base.group(1) == _pinned("ray")
    assert "raynas-src[cluster]" in text and "constraints.txt" in text


@pytest.mark.parametrize("path", [*LAUNCHER.values(), *KUBERAY.values()], ids=lambda p: p.name)
def test_knobs_a_user_must_set_are_marked(path: Path) -> None:
    marked = {line.split(":", 1)[0].strip(" -") for line in path.read_text().splitlines()
              if "# SET:" in line and not line.lstrip().startswith("#")}
    must = {"aws.yaml": {"region", "cluster_name", "InstanceType"},
            "gcp.yaml": {"project_id", "region", "availability_zone", "sourceImage"},
            "onprem.yaml": {"head_ip", "worker_ips", "ssh_user", "ssh_private_key"},
            "raycluster.yaml": {"image", "value"},
            "rayjob.yaml": {"image", "value"}}[path.name]
    assert must <= marked, f"{path.name}: mark {sorted(must - marked)} with '# SET:'"
