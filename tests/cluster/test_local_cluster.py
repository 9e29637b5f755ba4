"""cluster/local.sh starts a real 2-node Ray cluster on loopback; `distgraph train` trains the digits
config across both nodes; stop ends exactly the processes it started."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_local_multi_node_cluster_trains_digits_across_nodes(tmp_path):
    pytest.importorskip("sklearn")
    env = {**os.environ, "DISTGRAPH_LOCAL_CLUSTER": f"/tmp/dgc-{os.getpid()}", "RAY_AUTH_MODE": "token"}
    script = str(ROOT / "cluster" / "local.sh")
    started = subprocess.run(["bash", script, "start", "1"], env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    try:
        address = (Path(env["DISTGRAPH_LOCAL_CLUSTER"]) / "address").read_text().strip()
        status = subprocess.run(["bash", script, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.stdout.count("node_") == 2, status.stdout
        out = tmp_path / "result.json"
        train = subprocess.run(
            [sys.executable, "-m", "distgraph", "train", str(ROOT / "examples" / "digits.yaml"), "--address", address,
             "--workers", "2", "--epochs", "12", "--quiet", "--checkpoint-dir", str(tmp_path / "ck"), "--json-out", str(out)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert train.returncode == 0, train.stderr[-2000:]
        assert "workers span 2 nodes" in train.stdout
        import json

        assert json.loads(out.read_text())["test"]["accuracy"] >= 0.95
    finally:
        stopped = subprocess.run(["bash", script, "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0
    left = subprocess.run(["pgrep", "-f", env["DISTGRAPH_LOCAL_CLUSTER"] + "/n"], capture_output=True, text=True)
    assert left.stdout.strip() == ""
