"""cluster/local.sh: a real 2-node Ray cluster on loopback. A separate driver process sees both nodes
alive and runs a task pinned to each; `distgraph train` trains the digits config across them, and the GAN
example runs its own loop across them (`dg.distributed.launch`, gloo); `stop`
ends exactly the processes the script started (and no one else's: the session's own Ray stays up)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "cluster" / "local.sh")

# runs in its own interpreter: this test process may already be a driver of the shared ray_session
PROBE = """
import json, sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
nodes = [n for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

pinned = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)) for n in nodes]
print(json.dumps({"nodes": {n["NodeID"]: n["Resources"].get("CPU") for n in nodes},
                  "ran_on": ray.get([f.remote() for f in pinned], timeout=120)}))
"""


def _marked(cluster_id):
    """PIDs of live processes whose environment carries the cluster's id (what local.sh stop kills)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"DGC_CLUSTER_ID={cluster_id}".encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _run(args, env, timeout):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def test_local_cluster_two_nodes_run_tasks_train_digits_and_stop_cleanly(tmp_path, ray_session):
    pytest.importorskip("sklearn")
    state_dir = f"/tmp/dgc-{os.getpid()}"  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"DISTGRAPH_LOCAL_CLUSTER": state_dir, "RAY_AUTH_MODE": "token"}
    started = _run(["bash", SCRIPT, "start", "1"], env, timeout=240)
    assert started.returncode == 0, started.stdout + started.stderr
    state = dict(line.split("=", 1) for line in Path(state_dir, "state").read_text().splitlines())
    cluster_id, address = state["CLUSTER_ID"], state["ADDRESS"]
    try:
        assert f"export RAY_ADDRESS={address}" in started.stdout
        assert _marked(cluster_id), "no process carries the cluster id"

        probe = _run([sys.executable, "-c", PROBE, address], env, timeout=180)
        assert probe.returncode == 0, probe.stderr[-3000:]
        seen = json.loads(probe.stdout.strip().splitlines()[-1])
        assert len(seen["nodes"]) == 2 and set(seen["nodes"].values()) == {1.0}  # head + 1 worker, 1 CPU each
        assert sorted(seen["ran_on"]) == sorted(seen["nodes"])  # one task ran on each node

        status = _run(["bash", SCRIPT, "status"], env, timeout=60)
        assert status.returncode == 0 and status.stdout.count(" node_") == 2, status.stdout

        out = tmp_path / "result.json"
        train = _run(
            [sys.executable, "-m", "distgraph", "train", str(ROOT / "examples" / "configs" / "digits.yaml"), "--address", address,
             "--workers", "2", "--epochs", "12", "--quiet", "--checkpoint-dir", str(tmp_path / "ck"),
             "--json-out", str(out)],
            env, timeout=300,
        )  # fmt: skip
        assert train.returncode == 0, train.stderr[-2000:]
        assert "workers span 2 nodes" in train.stdout
        gloo = importlib.util.find_spec("torch") is not None  # then the workers meet in a gloo group
        assert ("they meet in a gloo group" in train.stdout) == gloo, train.stdout
        assert json.loads(out.read_text())["test"]["accuracy"] >= 0.95

        # a loop of one's own across the two nodes (dg.distributed.launch): its ranks meet in gloo there
        gan = _run(
            [sys.executable, str(ROOT / "examples" / "gan.py"), "--workers", "2", "--address", address, "--steps", "100",
             "--quiet"],
            env, timeout=300,
        )  # fmt: skip
        if gloo:
            assert gan.returncode == 0 and "final: quality" in gan.stdout, gan.stderr[-2000:]
        else:
            assert "the ranks span 2 nodes and need gloo there" in gan.stderr, gan.stderr[-2000:]
    finally:
        stopped = _run(["bash", SCRIPT, "stop"], env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert _marked(cluster_id) == []
    assert not Path(state_dir, "state").exists()
    # the session's own Ray (another cluster on this machine) was left alone
    assert ray_session.get(ray_session.remote(lambda: 7).remote(), timeout=60) == 7
    shutil.rmtree(state_dir)  # the nodes' temp dirs and logs, kept above for a failing run
