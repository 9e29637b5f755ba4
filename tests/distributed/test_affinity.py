"""bind_to="core": each worker bound to cores of its own on its node, the same bits as unbound workers."""

import os

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph import optim
from distgraph.distributed import affinity
from distgraph.errors import ConfigError, DistributedError

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")


def _cpus(actor):
    import ray

    return ray.get(actor.__ray_call__.remote(lambda _self: sorted(os.sched_getaffinity(0))))


def test_local_ranks_count_the_ranks_before_on_the_same_node():
    assert affinity.local_ranks(["a", "a", "b", "a", "b"]) == [0, 1, 0, 2, 1]


def test_bind_to_accepts_none_and_core_only():
    assert affinity.check_bind_to(None) is None and affinity.check_bind_to("none") is None
    assert affinity.check_bind_to("core") == "core"
    model = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="Trainer: bind_to must be None, 'none' or 'core', got 'socket'"):
        dg.Trainer(model, F.mse_loss, optim.SGD(model.parameters(), lr=0.1), bind_to="socket")


class _Idle:
    def ping(self):
        return os.getpid()


@needs_affinity
def test_a_worker_group_binds_each_worker_to_its_own_core(ray_session):
    from distgraph.distributed.runtime import WorkerGroup

    group = WorkerGroup(_Idle, 2, cpus_per_worker=0.5, bind_to="core")
    try:
        for r in range(2):
            group.start(r)
        usable = sorted(os.sched_getaffinity(0))
        if len(usable) < 2:
            pytest.skip("one usable CPU")
        assert group.bound() == {0: [usable[0]], 1: [usable[1]]}
        assert [_cpus(a) for a in group.actors] == [[usable[0]], [usable[1]]]
    finally:
        group.shutdown()


@needs_affinity
def test_more_workers_than_cores_is_an_error_naming_the_worker(ray_session):
    from distgraph.distributed.runtime import WorkerGroup

    usable = len(os.sched_getaffinity(0))
    if usable > 4:
        pytest.skip("a worker per usable CPU plus one would be too many processes here")
    group = WorkerGroup(_Idle, usable + 1, cpus_per_worker=1.5 / (usable + 1), bind_to="core")
    try:
        for r in range(usable + 1):
            group.start(r)
        with pytest.raises(DistributedError, match=rf"worker {usable}: bind_to='core': .* only {usable} "):
            group.bound()
    finally:
        group.shutdown()


@needs_affinity
def test_bound_workers_train_to_the_same_bits(ray_session):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    finals = []
    for bind_to in (None, "core"):
        dg.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        trainer = dg.Trainer(
            model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.1), workers=2, backend="ray",
            cpus_per_worker=0.5, progress=False, bind_to=bind_to,
        )  # fmt: skip
        with trainer:
            trainer.fit((x, y), epochs=2, batch_size=32)
            cpus = [_cpus(a) for a in trainer._cluster.group.actors]
        if bind_to == "core" and len(os.sched_getaffinity(0)) >= 2:
            assert len({tuple(c) for c in cpus}) == 2 and all(len(c) == 1 for c in cpus)
        finals.append([p.array.copy() for p in model.parameters()])
    assert all(np.array_equal(a, b) for a, b in zip(*finals))
