"""cluster/: the ray-up configs pass Ray's own cluster-config schema and launch distgraph on GPU workers
with token auth; the KubeRay manifest is a complete RayCluster + RayJob."""

import json
import os
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
RAY_UP = ["aws-gpu.yaml", "gcp-gpu.yaml"]


@pytest.fixture(scope="module")
def ray_schema():
    """The JSON schema `ray up` validates cluster configs with, as shipped inside the installed ray."""
    ray = pytest.importorskip("ray")
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        return jsonschema, json.load(f)


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_matches_rays_schema(name, ray_schema):
    jsonschema, schema = ray_schema
    jsonschema.validate(yaml.safe_load((CLUSTER / name).read_text()), schema)


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_has_a_cpu_head_and_autoscaling_gpu_workers_with_distgraph_cuda(name):
    cfg = yaml.safe_load((CLUSTER / name).read_text())
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types and not types[cfg["head_node_type"]]["resources"].get("GPU")
    gpu = [t for n, t in types.items() if n != cfg["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(0 <= t["min_workers"] < t["max_workers"] <= cfg["max_workers"] for t in gpu)
    assert any('"distgraph[cuda,examples] @ ' in c for c in cfg["setup_commands"])


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_keeps_token_auth_and_documents_the_job_command(name):
    text = (CLUSTER / name).read_text()
    cfg = yaml.safe_load(text)
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert cfg["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}  # the same token on every node
    comments = "\n".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert f"ray up cluster/{name}" in comments and f"ray down cluster/{name}" in comments
    assert "ray job submit" in comments
    assert "distgraph train examples/configs/digits.yaml --address auto --workers 4 --device cuda" in comments


def test_schema_check_can_fail(ray_schema):
    jsonschema, schema = ray_schema
    cfg = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    cfg["max_workers"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, schema)
    cfg = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    cfg["available_node_types"]["gpu_worker"]["min_wokers"] = 1  # a typo is refused too
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, schema)


@pytest.fixture(scope="module")
def kuberay():
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["RayCluster", "RayJob"]
    assert all(d["apiVersion"] == "ray.io/v1" and d["metadata"]["name"] for d in docs)
    return {d["kind"]: d for d in docs}


def _containers(group):
    return group["template"]["spec"]["containers"]


def test_kuberay_raycluster_has_a_head_and_a_gpu_worker_group(kuberay):
    spec = kuberay["RayCluster"]["spec"]
    assert spec["rayVersion"] >= "2.52" and spec["authOptions"] == {"mode": "token"}  # token auth needs 2.52
    head = spec["headGroupSpec"]
    assert "rayStartParams" in head and _containers(head)[0]["image"]
    assert {p["containerPort"] for p in _containers(head)[0]["ports"]} >= {6379, 8265, 10001}
    (group,) = spec["workerGroupSpecs"]
    assert group["groupName"] and "rayStartParams" in group
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    (worker,) = _containers(group)
    assert worker["image"] == _containers(head)[0]["image"]  # same distgraph on every pod
    res = worker["resources"]
    # an extended resource: Kubernetes requires requests == limits when both are given
    assert (
        int(res["limits"]["nvidia.com/gpu"]) >= 1
        and res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
    )


def test_kuberay_rayjob_trains_digits_on_that_cluster(kuberay):
    job = kuberay["RayJob"]["spec"]
    assert job["entrypoint"].split() == [
        "distgraph", "train", "examples/configs/digits.yaml", "--address", "auto", "--workers", "2", "--device", "cuda",
    ]  # fmt: skip
    assert job["clusterSelector"]["ray.io/cluster"] == kuberay["RayCluster"]["metadata"]["name"]
    gpus = sum(int(_containers(g)[0]["resources"]["limits"]["nvidia.com/gpu"]) * g["maxReplicas"]
               for g in kuberay["RayCluster"]["spec"]["workerGroupSpecs"])  # fmt: skip
    assert gpus >= 2  # room for the job's 2 GPU workers
