"""cluster/: the ray-up configs pass Ray's own cluster-config schema; the KubeRay manifest is complete."""

import json
import os
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def ray_schema():
    ray = pytest.importorskip("ray")
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        return jsonschema, json.load(f)


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_ray_up_config_matches_rays_schema(name):
    jsonschema, schema = ray_schema()
    cfg = yaml.safe_load((CLUSTER / name).read_text())
    jsonschema.validate(cfg, schema)
    workers = [t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] >= 1 for t in workers)
    assert any("distgraph[cuda]" in c for c in cfg["setup_commands"])
    assert "distgraph train" in (CLUSTER / name).read_text()


def test_schema_check_can_fail():
    jsonschema, schema = ray_schema()
    cfg = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    cfg["max_workers"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, schema)


def test_kuberay_manifest_structure():
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"RayCluster", "RayJob"} and all(d["apiVersion"] == "ray.io/v1" for d in docs)
    spec = kinds["RayCluster"]["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    gpu_groups = [
        g
        for g in spec["workerGroupSpecs"]
        if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
    ]
    assert gpu_groups and all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in gpu_groups)
    job = kinds["RayJob"]["spec"]
    assert job["entrypoint"].startswith("distgraph train ") and "--address auto" in job["entrypoint"]
    assert job["clusterSelector"]["ray.io/cluster"] == kinds["RayCluster"]["metadata"]["name"]
