"""Worker faults, restart budgets and resizes of a Ray Trainer, driven through the real RayCluster with fake
workers and no Ray: a fake sharded worker counts the steps applied to its parameters, so a step skipped or
applied twice shows in the parameter itself.

What these pin down: a restart in an elastic epoch (16-step segments, the Trainer's step moving on
without a snapshot) starts from the snapshot's step, not the Trainer's; `max_restarts` counts per fit;
a group grown onto a second node leaves the one-node segment; the gloo exchange's flags ride on one bucket.
"""

import types

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.distributed import cluster, cluster_restarts, driver_state
from distgraph.distributed.scheduler import StepTimeout
from distgraph.errors import DistributedError

STEPS = 80  # one epoch of batch_size 1


class _Remote:  # an actor method's stand-in: .remote() runs it at once
    def __init__(self, f):
        self.f = f

    def remote(self, *args, **kwargs):
        return self.f(*args, **kwargs)


class FakeShardedWorker:
    """One rank holding the whole store: `param` counts the steps applied to it, `version` as zero.py's."""

    def __init__(self, size):
        self.param, self.version, self.setups = np.zeros(size), 0, []
        self.setup_sharded, self.state_chunk = _Remote(self._setup), _Remote(self._chunk)
        self.set_data = _Remote(lambda x, y: None)

    def _setup(self, name, hypers, arrays, states, version, scaler=None):  # zero.py's `load`
        self.param, self.version = np.asarray(arrays[0], np.float64).reshape(-1).copy(), int(version)
        self.setups.append(int(version))

    def apply(self):
        self.param += 1
        self.version += 1

    def _chunk(self, params=True):
        return {"version": self.version, "pieces": [(0, 0, self.param.size)], "state": [{}], "buffers": [],
                "params": [self.param.astype(np.float32)]}  # fmt: skip


class FakeScheduler:
    """`run_sharded` as the DataParallelScheduler's: steps [start, stop) on every worker; a step in `faults`
    fails once (a hung worker)."""

    def __init__(self, workers, faults):
        self.workers, self.faults = workers, set(faults)

    def run_sharded(
        self, batches, on_step, start, stop, hypers=None, snapshot=False, hypers_for_step=None, streams=None
    ):
        for t in range(start, stop):
            if t in self.faults:
                self.faults.discard(t)
                raise StepTimeout(f"step {t} not back (hung?)")
            for w in self.workers:
                w.apply()
            on_step(t, {"loss": 0.0, "count": 1})
        return [w._chunk() for w in self.workers] if snapshot else None


def _trainer(**kw):
    model = nn.Linear(2, 2, bias=False)
    model.weight.array[...] = 0
    return dg.Trainer(model, F.cross_entropy, dg.optim.SGD(model.parameters(), lr=0.1), backend="ray",
                      progress=False, **kw)  # fmt: skip


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((STEPS, 2)).astype(np.float32), rng.integers(0, 2, STEPS)


def fake_cluster(trainer, monkeypatch, faults=()):
    """A RayCluster for `trainer` (set as its cluster) on one FakeShardedWorker, its store sharded."""
    monkeypatch.setattr(cluster, "ray", types.SimpleNamespace(put=lambda x: x, is_initialized=lambda: False))
    monkeypatch.setattr(cluster, "wait_ready", lambda refs, timeout_s, what: refs)
    monkeypatch.setattr(driver_state, "wait_ready", lambda refs, timeout_s, what: refs)
    monkeypatch.setattr(cluster_restarts, "lost_nodes", lambda pg, dead: set())
    monkeypatch.setattr(cluster, "ELASTIC_CHECK_S", 0.0)
    worker = FakeShardedWorker(trainer.model.weight.array.size)
    cl = object.__new__(cluster.RayCluster)
    cl.__dict__.update(
        trainer=trainer, params=list(trainer.step_fn.params), param_group=[0], name="sgd", sharded=True,
        async_shared=False, group=types.SimpleNamespace(actors=[worker], pg=None), group_name="dgnosuchgroup",
        stores=[], _epoch_base=0, _snapshot_version=trainer.global_step, _driver_current=True, _failed_fit=False,
        data_refs=None, scheduler=FakeScheduler([worker], faults),
    )  # fmt: skip
    cl._restart_workers = lambda: None  # the fake worker stays; `_setup_sharded` reloads it from the snapshot
    cl._dead_workers = lambda: [0]
    cl._fitting_workers = lambda lo, hi: trainer.workers
    # undone after the test: a later Ray test's fixture closes every Trainer still alive (conftest.py), and
    # this one, held in a cycle with its cluster until a collection, would have it shut a fake group down
    monkeypatch.setattr(trainer, "_cluster", cl)
    return cl, worker


def _checkpoints(trainer, monkeypatch):
    """(epoch step, global step, steps in the parameters) of every checkpoint the Trainer saves."""
    saved, state_dict = [], trainer.state_dict

    def recording():
        sd = state_dict()
        saved.append((sd["epoch_step"], sd["global_step"], float(trainer.model.weight.array.reshape(-1)[0])))
        return sd

    monkeypatch.setattr(trainer, "state_dict", recording)
    return saved


def test_a_fault_in_an_elastic_epoch_restarts_from_the_snapshots_step_and_every_step_is_applied_once(
    monkeypatch, tmp_path
):
    """Elastic: the epoch runs in 16-step segments and the Trainer's global_step moves on at each one
    without a snapshot. The workers restarted from the epoch start's parameters labelled with the later
    step, a step checkpoint recorded that label, and the second fault replayed from it: 16 steps lost."""
    t = _trainer(workers=(1, 1), checkpoint_dir=str(tmp_path), checkpoint_every_steps=48)
    _, worker = fake_cluster(t, monkeypatch, faults=[20, 60])
    saved = _checkpoints(t, monkeypatch)
    t.fit(_data(), epochs=1, batch_size=1)
    assert worker.param.tolist() == [STEPS] * 4 and worker.version == STEPS and t.global_step == STEPS
    assert float(t.model.weight.array.reshape(-1)[0]) == STEPS  # the driver holds every step too
    assert worker.setups == [0, 48], worker.setups  # the snapshots' steps: the epoch's start, the checkpoint's
    assert saved == [(48, 48, 48.0), (0, STEPS, float(STEPS))], saved  # the step checkpoint: step 48, 48 steps in
    restarts = [e for e in t.history.events if e.startswith("worker(s)")]
    assert len(restarts) == 2 and t.restarts == 2, restarts
    assert "at epoch step 20" in restarts[0] and "snapshot of global step 0, replayed from epoch step 0" in restarts[0]
    assert (
        "at epoch step 60" in restarts[1] and "snapshot of global step 48, replayed from epoch step 48" in restarts[1]
    )


@pytest.mark.parametrize("elastic", [True, False])
def test_max_restarts_counts_the_restarts_of_a_whole_fit(monkeypatch, elastic):
    """Four faults, in four different 16-step segments: the fourth gives up (default max_restarts=3).
    The budget was per run of steps — a segment under elastic — so there it never gave up."""
    t = _trainer(workers=(1, 1) if elastic else 1)
    fake_cluster(t, monkeypatch, faults=[5, 20, 40, 60])
    with pytest.raises(DistributedError, match=r"giving up after 3 worker restarts in this fit \(max_restarts=3\)"):
        t.fit(_data(), epochs=1, batch_size=1)
    assert t.restarts == 3


def test_max_restarts_minus_one_never_gives_up_and_each_fit_has_its_own_budget(monkeypatch):
    t = _trainer(workers=(1, 1), max_restarts=-1)
    _, worker = fake_cluster(t, monkeypatch, faults=[3, 4, 5, 20, 21, 40, 41, 60, 61, 70, 75])
    t.fit(_data(), epochs=1, batch_size=1)
    assert t.restarts == 11 and worker.param[0] == STEPS and worker.version == STEPS
    t.max_restarts = 2
    t._cluster.scheduler.faults = {10, 50}
    t.fit(_data(), epochs=2, batch_size=1)  # a new fit: two restarts allowed again
    assert t.restarts == 2 and worker.param[0] == 2 * STEPS and t.global_step == 2 * STEPS


def test_a_restart_names_the_epoch_step_that_failed_in_an_epoch_resumed_inside(monkeypatch):
    """run_epoch from step 10 (a resumed mid-epoch checkpoint): a fault in step 20 is "at epoch step 20"
    (it said 10: the steps reported, not counting those before the start)."""
    t = _trainer()
    t.global_step = 10
    cl, _ = fake_cluster(t, monkeypatch, faults=[20])
    cl.run_epoch(list(range(STEPS)), lambda step, stats: None, start=10)
    (event,) = [e for e in t.history.events if e.startswith("worker(s)")]
    assert "at epoch step 20" in event and "snapshot of global step 10, replayed from epoch step 10" in event


@pytest.mark.parametrize("value", [-2, 1.5, "3"])
def test_max_restarts_must_be_an_int_of_minus_one_or_more(value):
    with pytest.raises(dg.errors.ConfigError, match="Trainer: max_restarts must be an int ≥ 0"):
        _trainer(max_restarts=value)


# ---- a group grown onto a second node ------------------------------------------------------------------
class FakeGroup:
    """runtime.WorkerGroup's stand-in: records each worker start's all-reduce backend."""

    started = []

    def __init__(self, cls, n, **options):
        self.actors, self.pg = [object() for _ in range(n)], "pg"

    def start(self, rank, *args):
        FakeGroup.started.append(args[-1]["backend"])

    def bound(self, timeout_s):
        pass

    def shutdown(self):
        pass

    def kill(self, rank):
        pass


def _grown_cluster(monkeypatch, sync, gloo=True):
    """A 2-worker group on nodeA that the cluster lets grow to 3, the third worker on nodeB."""
    FakeGroup.started = []
    stores = []
    store = types.SimpleNamespace(ping=_Remote(lambda: None))
    start_store = lambda *args, **kwargs: stores.append(args) or store  # noqa: E731
    monkeypatch.setattr(cluster, "runtime", types.SimpleNamespace(WorkerGroup=FakeGroup, start_store=start_store))
    monkeypatch.setattr(cluster, "remove_group", lambda name: None)
    monkeypatch.setattr(cluster, "gloo_available", lambda: gloo)
    monkeypatch.setattr(cluster, "wait_ready", lambda refs, timeout_s, what: refs)
    t = types.SimpleNamespace(
        workers=2, elastic=(2, 3), sync=sync, allreduce={"backend": "auto"}, device="cpu", cpus_per_worker=1,
        timeout_s=5, bind_to=None, model=None, loss_fn=None, global_step=7, history=types.SimpleNamespace(events=[]),
        worker_seed=1,
    )  # fmt: skip
    cl = object.__new__(cluster.RayCluster)
    cl.__dict__.update(
        trainer=t, name="sgd", sharded=sync == "sync", async_shared=sync == "async", data_refs=None, owner=[0], members=[[0]],
        group_name="g0", group=FakeGroup(None, 2), stores=[], async_scheduler=object(),
        scheduler=types.SimpleNamespace(workers=None, stores=None, version=None, reduce_in_store=False),
    )  # fmt: skip
    cl.scheduler.set_version = lambda v: setattr(cl.scheduler, "version", v)
    cl.scheduler.restart_from = lambda workers, version: cl.scheduler.__dict__.update(workers=workers, version=version)
    cl._fitting_workers = lambda lo, hi: 3
    cl._await_start = lambda: ["nodeA", "nodeA", "nodeB"]
    cl.setups = []
    cl._setup_sharded = lambda: cl.setups.append("sharded")
    cl._setup_async = lambda: cl.setups.append("async segment")
    cl.pull = lambda: None
    cl._driver_state = lambda: ([np.zeros(4)], [{}])
    cl._hypers = lambda: [{"lr": 0.1}]
    cl._push_optimizer_state = lambda: None
    return cl, t, stores


def test_a_sync_group_grown_onto_a_second_node_restarts_its_workers_in_a_gloo_group(monkeypatch):
    cl, t, stores = _grown_cluster(monkeypatch, "sync")
    assert cl.fit_to_cluster(2, 3)
    assert FakeGroup.started == ["auto"] * 3 + ["gloo"] * 3  # restarted out of the one-node segment
    assert t.allreduce["backend"] == "gloo" and cl.sharded and cl.setups == ["sharded"] and not stores
    assert cl.scheduler.reduce_in_store is False


def test_a_sync_group_grown_onto_a_second_node_without_torch_says_why_it_cannot(monkeypatch):
    cl, t, _ = _grown_cluster(monkeypatch, "sync", gloo=False)
    with pytest.raises(DistributedError, match="on 2 nodes.*only in a gloo group, which needs torch"):
        cl.fit_to_cluster(2, 3)
    assert cl.setups == []  # no worker took the store in a segment the new node cannot share


def test_an_async_group_grown_onto_a_second_node_moves_its_store_into_store_actors(monkeypatch):
    cl, t, stores = _grown_cluster(monkeypatch, "async")
    assert cl.fit_to_cluster(2, 3)
    assert FakeGroup.started == ["auto"] * 3 + ["store"] * 3 and t.allreduce["backend"] == "store"
    assert not cl.async_shared and cl.async_scheduler is None and cl.setups == []
    assert len(stores) == 1 and cl.scheduler.stores == cl.stores and len(cl.stores) == 1
    assert cl.scheduler.reduce_in_store is True and cl.scheduler.version == 7  # from the driver's state


@pytest.mark.parametrize("sync", ["sync", "async"])
def test_a_group_grown_on_the_same_node_keeps_its_segment(monkeypatch, sync):
    cl, t, stores = _grown_cluster(monkeypatch, sync)
    cl._await_start = lambda: ["nodeA"] * 3
    assert cl.fit_to_cluster(2, 3)
    assert FakeGroup.started == ["auto"] * 3 and t.allreduce["backend"] == "auto" and not stores
    assert cl.setups == ["sharded" if sync == "sync" else "async segment"]


# ---- the gloo exchange's flags -------------------------------------------------------------------------
class RecordingCollective:
    """A gloo collective of 2 ranks holding the same gradient: the sum doubles it; records each call's start
    in the flags-and-slot array (0: the flags went along)."""

    def __init__(self):
        self.starts = []

    def allreduce(self, array, group_name):
        base = array.base if array.base is not None else array
        self.starts.append((array.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // 4)
        array *= 2

    def barrier(self, group_name):
        pass


def test_the_gloo_flags_ride_on_the_steps_last_bucket_only_after_a_zero_size_first_parameter():
    """A zero-size first parameter has a bucket of its own, and the next bucket starts at flat 0 too: the
    flags rode on both, one reduced during backward before the step's `mark`."""
    from distgraph.distributed.zero import ShardedParameters
    from distgraph.optim.functional import make_optimizer_spec

    collective = RecordingCollective()
    comm = types.SimpleNamespace(collective=collective, group="g")
    params = [nn.Parameter(dg.tensor(np.zeros(n, np.float32))) for n in (0, 2**18)]  # 0 and 1 MiB
    _, (hypers,) = make_optimizer_spec(dg.optim.SGD(params, lr=0.1))
    hypers = {k: v for k, v in hypers.items() if k != "params"}
    store = ShardedParameters(params, 0, 2, "g", "sgd", [hypers] * 2, bucket_mb=0.5, comm=comm)
    assert store.buckets == [(0, 2**18), (0, 0)]  # two buckets at the slot's start
    store.load([p.array for p in params], [{}, {}], 0)
    store.begin_step()
    store.step([np.zeros(0, np.float32), np.ones(2**18, np.float32)])
    head = store.exchange.head
    assert collective.starts == [head, 0], collective.starts  # the first bucket alone, then the flags' one
    assert store.exchange.unmarked.tolist() == [2.0, 2.0]  # this step's flags, summed once
