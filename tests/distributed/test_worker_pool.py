"""Warm worker groups (worker_pool.py): a closed Trainer's workers serve the next Trainer of the same shape,
which then trains exactly as in new processes; off, or for anything else that wants the CPUs, they go."""

import os
import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.distributed import runtime, worker_pool
from distgraph.errors import ConfigError

pytestmark = pytest.mark.ray


def data(n=96):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def make_trainer(workers=2, sync="sync", allreduce="auto"):
    dg.manual_seed(0)  # the same model, and the same base seed for the workers' dropout streams
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    opt = dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, dg.Trainer(model, nn.functional.cross_entropy, opt, workers=workers, backend="ray", sync=sync,
                             allreduce=allreduce, progress=False)  # fmt: skip


def fit(workers=2, sync="sync", allreduce="auto"):
    """→ (the trained parameters, the process ids of the workers and of the parameter-store shards)."""
    model, trainer = make_trainer(workers, sync, allreduce)
    with trainer:
        trainer.fit(data(), epochs=2, batch_size=16)
        pids = runtime.local_pids(trainer._cluster.group.actors + trainer._cluster.stores)
    return [p.detach().numpy().copy() for p in model.parameters()], pids


def free_cpus(want, within_s=10.0):
    """Ray's free CPUs once they reach `want` (a killed actor's come back a moment later), else what it has."""
    import ray

    deadline = time.monotonic() + within_s
    while (free := ray.available_resources().get("CPU", 0.0)) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return free


def test_the_next_trainer_reuses_the_processes_and_trains_as_new_ones_would(keep_workers):
    """Same pids, and the same bits as a Trainer in new processes: the instance is made anew and its
    generator seeded as a new process's (the dropout masks depend on it)."""
    first, pids = fit()
    again, reused = fit()
    assert reused == pids
    worker_pool.set_keep_seconds(0)  # off: new processes
    fresh, new = fit()
    assert not set(new) & set(pids)
    for a, b, c in zip(first, again, fresh):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_store_shards_are_made_anew_in_the_processes_a_closed_trainer_parked(keep_workers):
    """allreduce="store" (the store actors sum, as across nodes): workers and store shards both come back,
    and the parameters are those of new processes."""
    first, pids = fit(allreduce="store")
    again, reused = fit(allreduce="store")
    assert len(pids) > 2 and sorted(reused) == sorted(pids)  # (two workers and at least one shard)
    worker_pool.set_keep_seconds(0)
    fresh, new = fit(allreduce="store")
    assert not set(new) & set(pids)
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(first, again, fresh))


def test_a_branches_trainer_takes_the_plan_workers_the_last_one_parked(keep_workers):
    """A graph strategy's PlanWorkers are parked and made anew too (their generator back at a new process's
    seed): same processes, the same parameters as in new ones."""

    def branches():
        dg.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
        opt = dg.optim.SGD(model.parameters(), lr=0.1)
        with dg.Trainer(model, nn.functional.cross_entropy, opt, workers=2, backend="ray", strategy="branches",
                        progress=False) as trainer:  # fmt: skip
            trainer.fit(data(), epochs=1, batch_size=32)
            pids = runtime.local_pids(trainer._cluster.executor.actors)
        return [p.detach().numpy().copy() for p in model.parameters()], pids

    first, pids = branches()
    again, reused = branches()
    assert reused == pids
    worker_pool.set_keep_seconds(0)
    fresh, new = branches()
    assert not set(new) & set(pids)
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(first, again, fresh))


def test_an_async_trainer_reuses_a_sync_trainers_processes(keep_workers):
    """The mode is the instance's, not the process's: async workers (their shared store, its threads) start
    in the processes a sync Trainer closed, and the sync Trainer after them in the same processes again."""
    _, pids = fit()
    params, reused = fit(sync="async")
    assert reused == pids and all(np.isfinite(p).all() for p in params)
    again, same = fit()
    first, _ = fit()
    assert same == pids and all(np.array_equal(a, b) for a, b in zip(first, again))


def test_off_a_closed_trainer_gives_its_cpus_back_at_once(ray_session):
    worker_pool.set_keep_seconds(0)
    try:
        _, pids = fit()
        assert free_cpus(2) == 2
        _, again = fit()
        assert not set(again) & set(pids)
    finally:
        worker_pool.set_keep_seconds(None)


def test_a_parked_group_holds_its_cpus_until_the_timer_or_a_group_of_another_shape_frees_them(keep_workers):
    fit()
    assert free_cpus(2, within_s=1.0) == 0  # parked: held
    _, one = fit(workers=1)  # another shape: the parked group released, a new process started
    assert free_cpus(2, within_s=1.0) == 1
    worker_pool.set_keep_seconds(0.5)
    fit(workers=1)
    assert free_cpus(2) == 2  # the timer released it


def test_spawn_and_the_elastic_count_release_the_parked_group(keep_workers):
    from distgraph.distributed.worker import TrainWorker  # any actor class

    fit()
    assert free_cpus(2, within_s=1.0) == 0
    actors = runtime.spawn(TrainWorker, [(0, 1, dg.nn.Linear(2, 2), None, [])])
    runtime.gather([actors[0].ping.remote()], timeout_s=60)
    runtime.kill(actors)
    fit()
    model, trainer = make_trainer(workers=(1, 2))
    with trainer:  # elastic: counts the CPUs it can take, the parked group's among them
        trainer.fit(data(), epochs=1, batch_size=16)
        assert trainer.workers == 2


def test_a_task_that_waits_for_the_parked_cpus_gets_them_within_seconds_not_keep_seconds(keep_workers):
    """The watcher sees Ray's waiting request (what its autoscaler reads) and releases the parked group:
    nothing of the user's waits out keep_workers_s (30 s here)."""
    ray = pytest.importorskip("ray")
    fit()
    assert free_cpus(2, within_s=1.0) == 0
    started = time.monotonic()
    assert ray.get(ray.remote(num_cpus=2)(lambda: os.getpid()).remote(), timeout=60) > 0
    assert time.monotonic() - started < 10.0
    assert not worker_pool._parked


def test_a_parked_worker_that_died_is_replaced_by_a_new_group(keep_workers):
    _, pids = fit()
    ((_, _, actors, _),) = worker_pool._parked[next(iter(worker_pool._parked))]
    runtime.kill(actors[:1])
    params, new = fit()
    assert not set(new) & set(pids)
    assert all(np.isfinite(p).all() for p in params)


def test_keep_seconds_must_be_a_number():
    with pytest.raises(ConfigError, match="keep_workers_s"):
        worker_pool.set_keep_seconds(-1)
    previous = os.environ.get(worker_pool.ENV)
    os.environ[worker_pool.ENV] = "soon"
    try:
        with pytest.raises(ConfigError, match="DISTGRAPH_KEEP_WORKERS_S='soon'"):
            worker_pool.keep_seconds()
    finally:
        os.environ.pop(worker_pool.ENV)
        if previous is not None:
            os.environ[worker_pool.ENV] = previous
