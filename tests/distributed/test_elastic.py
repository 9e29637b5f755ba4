"""Elastic workers=(min, max) follow the cluster between steps, with a real node joining and leaving.

A second raylet (`ray start --address ... --num-cpus 1`, its own process group) joins the session's
2-CPU cluster, its CPU held by a placeholder actor (a node still booting: joining takes ~10 s here,
too long to time against an epoch). The placeholder ends in the middle of the second epoch, and in
the middle of the third the node is SIGKILLed, as a cloud node that is added and then crashes. The
group grows 2 → 3 onto it between two steps of epoch 2; in epoch 3 the worker on it dies with it,
and the group goes on with 2 from the store's version once the cluster has declared the node dead.
The parameters still match single-process training on the same batches (up to float rounding: the
gradient is summed over 2 or 3 shards; no step is applied twice).
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from tests.distributed.helpers import free_between_steps

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _data(n=512):  # 16 steps of 32
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def _trainer(backend, workers, **kw):
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))
    opt = dg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return dg.Trainer(model, nn.functional.cross_entropy, opt, workers=workers, backend=backend, progress=False, **kw)


def _wait_for_cpus(ray, total, timeout_s=90, resources=None):
    resources = resources or ray.cluster_resources
    deadline = time.monotonic() + timeout_s
    while resources().get("CPU", 0) != total:
        assert time.monotonic() < deadline, f"cluster did not reach {total} CPUs: {resources()}"
        time.sleep(0.1)


@pytest.fixture
def extra_node(ray_session):
    """start(): a 1-CPU raylet joins the session's cluster, in its own process group and temp dir (so it
    never becomes the machine's default cluster for other drivers), and its node id is returned; lose():
    SIGKILL to the node's processes, a node crash (the cluster notices after its missed health checks, ~15 s)."""
    ray = ray_session
    temp_dir = tempfile.mkdtemp(prefix="dgn", dir="/tmp")  # short: Ray's socket paths live under it
    procs = []

    def start():
        address = ray.get_runtime_context().gcs_address
        cmd = ["ray", "start", "--address", address, "--num-cpus", "1", "--block", "--disable-usage-stats"]
        log = open(os.path.join(temp_dir, "node.log"), "w")  # noqa: SIM115  (the node writes to it while it runs)
        procs.append(
            subprocess.Popen(
                [*cmd, "--temp-dir", temp_dir], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
        _wait_for_cpus(ray, 3)
        (node,) = [
            n
            for n in ray.nodes()
            if n["Alive"] and n["NodeManagerAddress"] and temp_dir in n.get("ObjectStoreSocketName", "")
        ]
        return node["NodeID"]

    def lose():
        _crash(procs[0])

    yield start, lose
    for proc in procs:
        if proc.poll() is None:
            _crash(proc)
    shutil.rmtree(temp_dir, ignore_errors=True)


def _crash(proc):
    """SIGKILL to a node's raylet group and to every process under it. Ray starts each worker in its own
    process group; spared, a worker goes on answering calls for seconds after its raylet died (long enough,
    on a busy host, for an epoch to end before any call fails: the flake CI met)."""
    import psutil

    workers = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for worker in workers:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()
    proc.wait()


class Placeholder:
    """Holds the new node's CPU while it lives."""

    def ping(self):
        return True


def test_elastic_group_grows_onto_a_joining_node_between_steps_and_shrinks_when_it_is_lost(
    ray_session, extra_node, monkeypatch
):
    from distgraph.distributed import cluster

    monkeypatch.setattr(cluster, "ELASTIC_CHECK_S", 0.0)  # look at every segment of 16 steps, whatever their pace
    ray = ray_session
    from ray import cloudpickle
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    start_node, lose_node = extra_node
    long = _data(16 * 1024)  # 512 steps: the CPU frees up while they run
    reference = _trainer("local", 1)
    for data, epochs in ((_data(), 1), (long, 2), (long, 3)):
        reference.fit(data, epochs=epochs, batch_size=32)
    _wait_for_cpus(ray, 2, resources=ray.available_resources)  # earlier tests' actors are gone
    t = _trainer("ray", (1, 3), allreduce="store")  # the store shards sum the gradients: works across nodes
    t.fit(_data(), epochs=1, batch_size=32)  # two free CPUs: two workers (and the store shards, on this node)
    assert t.workers == 2
    node_id = start_node()  # between fits: the Trainer looks at the cluster only while it fits
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Placeholder lives in this test module
    on_node = NodeAffinitySchedulingStrategy(node_id, soft=False)
    placeholder = ray.remote(num_cpus=1)(Placeholder).options(scheduling_strategy=on_node).remote()
    ray.get(placeholder.ping.remote(), timeout=60)

    def after_32_steps(action):  # once the epoch is under way (the store counts steps)
        def run():
            first = t._cluster.scheduler.version
            while t._cluster.scheduler.version < first + 32:
                time.sleep(0.01)
            action()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    free_between_steps(monkeypatch, t, 32, lambda: ray.kill(placeholder))
    t.fit(long, epochs=2, batch_size=32)
    assert t.workers == 3, t.history.events
    killer = after_32_steps(lose_node)
    hist = t.fit(long, epochs=3, batch_size=32)  # epoch 3: the node dies under it, back to two
    killer.join()
    t.close()
    elastic = [e for e in hist.events if e.startswith("elastic")]
    assert len(elastic) == 2, hist.events
    grown, shrunk = elastic
    assert grown.startswith("elastic: 2 -> 3 workers (cluster resources changed, before epoch step "), hist.events
    assert 32 <= int(grown.rsplit(" ", 1)[1].rstrip(")")) < 512, grown  # between two steps of epoch 2
    assert shrunk.startswith("elastic: 3 -> 2 workers (cluster resources changed, before epoch step "), hist.events
    (died,) = (e for e in hist.events if "died" in e)
    assert "their node was lost; went on with 2 workers" in died, died
    assert t.workers == 2 and len(hist) == 3
    for a, b in zip(reference.model.parameters(), t.model.parameters()):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), atol=1e-5)
