"""The async parameter store in shared memory (async_store.py): two ranks' handles in this process on
a real segment. Updates must give the local optimizer's bits in push order, the version bound must
hold a worker back (and let it go), a dead or stalled peer must be dropped with its push refused,
and a push that fails midway must leave the published parameters untouched."""

import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.distributed.async_store import COLUMNS, SharedAsyncStore
from distgraph.errors import DistributedError
from distgraph.optim.functional import make_optimizer_spec

STATS = {"loss_sum": 1.0, "correct": 1.0, "count": 2}


def model(seed=0):
    dg.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def stores(opt_cls=dg.optim.Adam, staleness=2, timeout_s=10.0, **opt_kw):
    """(rank-0 store, rank-1 store, driver model, driver optimizer) on a fresh segment."""
    driver = model()
    opt = opt_cls(driver.parameters(), **opt_kw)
    name, groups = make_optimizer_spec(opt)
    hypers = [{k: v for k, v in groups[0].items() if k != "params"}] * len(list(driver.parameters()))
    seg = f"dg.test{uuid.uuid4().hex[:8]}.async1"
    handles = [
        SharedAsyncStore(seg, r, 2, [0, 1], list(model().parameters()), name, hypers, staleness, timeout_s)
        for r in (0, 1)
    ]
    handles[0].load([p.detach().numpy() for p in driver.parameters()], [{}] * len(hypers), 0)
    handles[1].wait_loaded()
    return handles[0], handles[1], driver, opt


def grads_like(driver, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(np.float32) for p in driver.parameters()]


def local_step(driver, opt, grads):
    for p, g in zip(driver.parameters(), grads):
        p.grad = dg.Tensor(g)
    opt.step()


def open_call(store, steps=8):
    with store._locked():
        store.control[1:4] = (0, steps, 1)  # NEXT, END, CHUNK


@pytest.mark.parametrize(
    "opt_cls, kw",
    [
        (dg.optim.Adam, {"lr": 0.01}),
        (dg.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
        (dg.optim.NAdam, {"lr": 0.01}),  # a float scalar state (mu_product) in the segment's scalar region
        (dg.optim.ASGD, {"lr": 0.01, "t0": 1}),
    ],
)
def test_interleaved_pushes_give_the_local_optimizers_bits_in_push_order(opt_cls, kw):
    a, b, driver, opt = stores(opt_cls, **kw)
    open_call(a)
    order = []
    ta, tb = a._claim(), b._claim()  # both compute on version 0
    for store, t, seed in ((b, tb, 1), (a, ta, 2)):  # b pushes first
        g = grads_like(driver, seed)
        assert store._push(t, g, STATS) == 1
        order.append(g)
    t = a._claim()  # version 2, copied into a's model
    for g in order:
        local_step(driver, opt, g)
    assert all(np.array_equal(p.array, q.detach().numpy()) for p, q in zip(a.params, driver.parameters()))
    g = grads_like(driver, 3)
    a._push(t, g, STATS)
    local_step(driver, opt, g)
    snap = b.snapshot()
    assert snap["version"] == 3
    assert all(np.array_equal(x, q.detach().numpy()) for x, q in zip(snap["params"], driver.parameters()))
    local_state = opt.state_dict()["state"]
    for i, st in enumerate(snap["states"]):
        for k, v in st.items():
            assert np.array_equal(np.asarray(v), np.asarray(local_state[i][k])), (i, k)
    assert snap["table"][:3, 0].tolist() == [1.0, 1.0, 1.0]
    a.close(), b.close()


def test_a_worker_more_than_staleness_versions_ahead_waits_for_the_slowest():
    a, b, driver, _ = stores(staleness=2)
    open_call(a, steps=16)
    tb = b._claim()  # b computes on version 0
    for k in range(3):  # versions 0, 1, 2 are within 2 of b's base
        a._push(a._claim(), grads_like(driver, k), STATS)
    claimed = []
    waiter = threading.Thread(target=lambda: claimed.append(a._claim()))
    waiter.start()
    time.sleep(0.3)
    assert not claimed, "a took version 3 while b still computes on version 0"
    b._push(tb, grads_like(driver, 9), STATS)
    waiter.join(60)
    assert claimed and int(a.base[0]) == 4
    a.close(), b.close()


def test_a_dead_peer_is_dropped_by_the_waiting_worker_and_its_late_push_is_refused():
    a, b, driver, _ = stores(staleness=0)
    open_call(a)
    tb = b._claim()
    a._push(a._claim(), grads_like(driver, 0), STATS)  # version 1: a is now 1 ahead of b's base
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    b.pids[1] = gone.pid  # b's "process" has exited
    assert a._claim() is not None  # dropped b, then went on
    assert a.events and a.events[0]["rank"] == 1 and "exited" in a.events[0]["why"]
    before = a.snapshot()
    assert b._push(tb, grads_like(driver, 5), STATS) == 0  # refused: b was fenced
    after = a.snapshot()
    assert after["version"] == before["version"] and after["live"] == [0]
    assert all(np.array_equal(x, y) for x, y in zip(before["params"], after["params"]))
    a.close(), b.close()


def test_a_stalled_peer_is_dropped_after_timeout():
    a, b, driver, _ = stores(staleness=0, timeout_s=0.3)
    open_call(a)
    b._claim()
    a._push(a._claim(), grads_like(driver, 0), STATS)
    started = time.monotonic()
    assert a._claim() is not None
    assert 0.3 <= time.monotonic() - started < 30
    assert a.events and a.events[0]["rank"] == 1 and "did not push within" in a.events[0]["why"]
    a.close(), b.close()


def test_a_push_that_fails_midway_leaves_the_published_version_untouched():
    a, b, driver, _ = stores()
    open_call(a)
    a._push(a._claim(), grads_like(driver, 0), STATS)
    before = b.snapshot()
    t = a._claim()
    bad = grads_like(driver, 1)
    bad[-1] = np.zeros((5, 5), np.float32)  # the last parameter's update raises after the others ran
    with pytest.raises(ValueError):
        a._push(t, bad, STATS)
    after = b.snapshot()
    assert after["version"] == before["version"] and after["table"][t, 0] == 0  # not applied, not marked done
    assert all(np.array_equal(x, y) for x, y in zip(before["params"], after["params"]))
    assert b._push(b._claim(), grads_like(driver, 2), STATS) == 1  # the lock was released
    a.close(), b.close()


def test_a_call_runs_every_step_once_and_records_its_statistics():
    a, b, driver, _ = stores()
    batches = [np.arange(2) + k for k in range(10)]
    seen = []

    def compute(indices):
        seen.append(int(indices[0]))
        return grads_like(driver, int(indices[0])), {"loss_sum": float(indices[0]), "count": 2}

    out = a.run(1, batches, compute)
    assert sorted(seen) == list(range(10)) and out["pushed"] == 10
    assert out["table"][:, 1].tolist() == [float(k) for k in range(10)]
    assert np.isnan(out["table"][:, 2]).all()  # no "correct" reported
    rows = [dict(zip(COLUMNS, r)) for r in out["table"]]
    assert all(r["rank"] == 0 and r["version"] == r["base"] + 1 for r in rows)  # alone: nobody pushed between
    assert all(r["t_claim"] <= r["t_computed"] <= r["t_pushed"] for r in rows)
    assert b.run(1, batches, compute)["pushed"] == 0  # the call's steps are taken
    assert b.snapshot()["version"] == 10
    a.close(), b.close()


def test_state_the_first_step_did_not_create_is_a_clear_error():
    a, b, driver, _ = stores(dg.optim.SGD, lr=0.1)  # no momentum: no state at all
    with pytest.raises(DistributedError, match="momentum_buffer"):
        a.load([p.detach().numpy() for p in driver.parameters()], [{"momentum_buffer": np.zeros((7, 5))}] * 4, 0)
    a.close(), b.close()
