"""Faults injected for real: worker and store processes killed mid-fit, the driver killed mid-run."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import distgraph as dg
import distgraph.nn as nn
from tests.distributed.helpers import free_between_steps, kill_when, worker_pid

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def data(n=1024):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def trainer(backend, workers=2, **kw):
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))
    opt = dg.optim.Adam(model.parameters(), lr=0.01)
    return dg.Trainer(model, nn.functional.cross_entropy, opt, workers=workers, backend=backend, progress=False, **kw)


def params(t):
    return [p.detach().numpy().copy() for p in t.model.parameters()]


def _kill_the_first_store(t):
    """kill_when for store shard 0's process, once the first epoch is done."""
    store_pid = {}

    def pick(cluster):
        return store_pid.setdefault("pid", dg.distributed.runtime.gather(cluster.stores[0].pid.remote()))

    return kill_when(t, 1, pick)


@pytest.mark.parametrize("allreduce", ["auto", "gloo"])  # the workers' segment; a gloo group (across nodes)
def test_killed_worker_is_replaced_and_result_is_bit_identical(ray_session, allreduce):
    if allreduce == "gloo":
        pytest.importorskip("torch")
    reference = trainer("local")
    reference.fit(data(), epochs=3, batch_size=16)
    t = trainer("ray", allreduce=allreduce)
    killer = kill_when(t, 1, worker_pid(1))
    t.fit(data(), epochs=3, batch_size=16)
    killer.join()
    t.close()
    assert any("died" in e and "replayed" in e for e in t.history.events), t.history.events
    assert all(np.array_equal(a, b) for a, b in zip(params(reference), params(t)))


def test_killed_store_resumes_from_checkpoint_without_double_application(ray_session, tmp_path):
    """Store actors hold the parameters when workers do not share a node (`allreduce="store"` forces
    that path here); by default the store is sharded across the workers and the test above covers it.
    With a checkpoint every 8 steps (64 steps an epoch), at most 8 steps are redone, none applied twice."""
    reference = trainer("local")
    reference.fit(data(), epochs=3, batch_size=16)
    t = trainer("ray", checkpoint_dir=str(tmp_path), checkpoint_every_steps=8, allreduce="store")
    killer = _kill_the_first_store(t)
    t.fit(data(), epochs=3, batch_size=16)
    killer.join()
    t.close()
    (lost,) = (e for e in t.history.events if "parameter store lost" in e)
    assert int(lost.split(": ")[-1].split(" step(s)")[0]) <= 8, lost  # at most checkpoint_every_steps redone
    assert len(t.history) == 3
    assert all(np.array_equal(a, b) for a, b in zip(params(reference), params(t)))


def test_killed_store_in_an_async_run_resumes_from_checkpoint(ray_session, tmp_path):
    """The async run on store actors: a store shard killed mid-fit raised Ray's RayActorError out of the
    scheduler (the Trainer's recovery waits for StoreLost), and a hung one left the driver waiting for ever.
    Now both are StoreLost, and the Trainer restores its last checkpoint and goes on."""
    t = trainer("ray", sync="async", checkpoint_dir=str(tmp_path), checkpoint_every_steps=8, allreduce="store")
    killer = _kill_the_first_store(t)
    t.fit(data(), epochs=3, batch_size=16)
    killer.join()
    t.close()
    assert any("parameter store lost" in e for e in t.history.events), t.history.events
    assert len(t.history) == 3 and t.global_step == 3 * 64


def test_events_after_loading_a_checkpoint_reach_the_history_the_trainer_holds(ray_session, tmp_path):
    """load_checkpoint gives the Trainer a new History; the cluster's schedulers, made once, went on appending
    their events (an async worker dropped, fenced and rejoining) to the old one's list, missing from what fit
    returned."""
    t = trainer("ray", sync="async", checkpoint_dir=str(tmp_path))
    t.fit(data(), epochs=1, batch_size=16)
    t.load_checkpoint()
    killer = kill_when(t, 2, worker_pid(1))
    history = t.fit(data(), epochs=4, batch_size=16)
    killer.join()
    t.close()
    assert history is t.history and any("dropped and fenced" in e for e in history.events), history.events


def test_killed_driver_resumes_to_the_same_parameters(tmp_path):
    cfg = {
        "data": {"name": "teacher", "samples": 4000, "features": 16, "classes": 4},
        "model": [{"Linear": [16, 32]}, {"ReLU": []}, {"Linear": [32, 4]}],
        "loss": "cross_entropy",
        "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 8, "batch_size": 16},
        "trainer": {"checkpoint_every": 1},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "distgraph", "train", str(path), "--quiet"]
    subprocess.run(cmd + ["--checkpoint-dir", str(tmp_path / "straight")], check=True, capture_output=True)
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(cmd + ["--checkpoint-dir", str(interrupted)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (interrupted / "checkpoint.dg").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = dg.load(interrupted / "checkpoint.dg")["epoch"]
    assert first < 8, "the driver finished before it could be killed"
    done = subprocess.run(cmd + ["--checkpoint-dir", str(interrupted), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stdout
    a, b = dg.load(tmp_path / "straight" / "checkpoint.dg"), dg.load(interrupted / "checkpoint.dg")
    assert a["epoch"] == b["epoch"] == 8
    for k in a["model"]:
        assert np.array_equal(a["model"][k].numpy(), b["model"][k].numpy()), k


def test_async_worker_death_drops_and_fences_it_and_training_continues(ray_session):
    t = trainer("ray", sync="async", staleness=1)
    killer = kill_when(t, 1, worker_pid(0))
    hist = t.fit(data(), epochs=3, batch_size=16)
    killer.join()
    ev = t.evaluate(data())
    t.close()
    assert any("worker 0 failed" in e and "dropped" in e for e in hist.events), hist.events
    assert len(hist) == 3 and ev["accuracy"] > 0.7


class Blocker:
    """Holds one CPU of the cluster while it lives (stands in for another job or a missing node)."""

    def ping(self):
        return True


def test_elastic_workers_grow_between_steps_when_the_cluster_frees_resources(ray_session, monkeypatch):
    """The store in the workers (sharded): the driver snapshots the parameters mid-epoch, the group
    grows 1 -> 2 from that step, and the result matches local training on the same batches."""
    from distgraph.distributed import cluster

    monkeypatch.setattr(cluster, "ELASTIC_CHECK_S", 0.0)  # look at every segment: steps here take ~0.5 ms
    ray = ray_session
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Blocker lives in this test module
    blocker = ray.remote(num_cpus=1)(Blocker).remote()
    ray.get(blocker.ping.remote(), timeout=60)  # earlier tests' actors gone: a CPU is free
    long = data(32 * 1024)  # 2,048 steps of 16
    reference = trainer("local", 1)
    reference.fit(data(256), epochs=1, batch_size=16)
    reference.fit(long, epochs=2, batch_size=16)
    t = trainer("ray", workers=(1, 2))
    t.fit(data(256), epochs=1, batch_size=16)  # the cluster has one free CPU: one worker
    assert t.workers == 1

    free_between_steps(monkeypatch, t, 64, lambda: ray.kill(blocker))
    hist = t.fit(long, epochs=2, batch_size=16)  # epoch 1: grows to two between steps
    t.close()
    (grown,) = (e for e in hist.events if e.startswith("elastic"))
    assert grown.startswith("elastic: 1 -> 2 workers (cluster resources changed, before epoch step "), hist.events
    assert 64 <= int(grown.rsplit(" ", 1)[1].rstrip(")")) < 2048, grown
    for a, b in zip(params(reference), params(t)):
        np.testing.assert_allclose(b, a, atol=1e-5)
