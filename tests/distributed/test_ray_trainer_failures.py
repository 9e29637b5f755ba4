"""Failures inside a Ray fit: a hung worker, a batch that does not fit the model, one rank's error —
raised on the driver at once, no peer left waiting, and the steps before the error kept as locally."""

import re
import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from tests.distributed import test_ray_trainer as base
from tests.distributed.test_ray_trainer import OPTIMIZERS, WithSpare, data, small_model

pytestmark = pytest.mark.ray


def test_a_hung_worker_is_timed_out_and_restarted_not_waited_for_forever(ray_session):
    """One worker (no peer whose barrier would give up first) stalls 60 s in a step: the driver's wait
    gives up after 2 × timeout_s per step its call carries, names the call, restarts the worker and the epoch
    completes. timeout_s
    is shorter than a worker's process start: the replacement's first call is allowed a start's time
    (with the step's 1 s it failed, "workers did not answer within 1.0s")."""
    model, opt = small_model("sgd")
    with dg.Trainer(
        model, nn.functional.cross_entropy, opt, workers=1, backend="ray", progress=False, timeout_s=1.0
    ) as t:
        t.fit(data(), epochs=1, batch_size=32)  # starts the worker
        dg.distributed.runtime.gather([t._cluster.group.actors[0].stall_next.remote(60.0)])
        started = time.monotonic()
        h = t.fit(data(), epochs=2, batch_size=32)
        assert time.monotonic() - started < 55  # a replacement's process start included; not the 60 s stall
    assert np.isfinite(h["loss"]).all() and t.global_step == 8
    # 2 × timeout_s per step the call carries (a first call carries 4: a healthy slow run is not called hung)
    assert any(re.search(r"not back within (2|8)s \(hung\?\)", e) and "restarted 1 workers" in e for e in h.events), (
        h.events
    )


@pytest.mark.parametrize("sync", ["sync", "async"])
def test_batch_that_does_not_fit_the_model_is_reported_on_the_driver(ray_session, sync):
    """The worker's ShapeError itself, at once: no worker restarts (it would raise again) on either path."""
    model = nn.Sequential(nn.Linear(5, 3))  # data has 8 features
    t = dg.Trainer(model, nn.functional.cross_entropy, dg.optim.SGD(model.parameters(), lr=0.1), workers=2,
                   backend="ray", sync=sync, progress=False, timeout_s=30)  # fmt: skip
    with pytest.raises(dg.errors.ShapeError, match="input features 8 do not match weight") as info:
        t.fit(data(), epochs=1, batch_size=32)
    t.close()
    assert "(3, 5)" in str(info.value)
    assert not [e for e in t.history.events if "restart" in e or "dropped" in e]


@pytest.mark.parametrize(
    "spare_dtype,sync,allreduce",
    [(None, "sync", "auto"), (dg.float64, "sync", "auto"), (None, "async", "auto"), (None, "sync", "gloo")],
)  # the sharded store; store actors; the async store; the sharded store in a gloo group
def test_an_error_in_one_ranks_shard_is_raised_and_its_peer_is_not_left_waiting(
    ray_session, spare_dtype, sync, allreduce
):
    """A NaN in one rank's shard: that rank raises NonFiniteError, and its peer, waiting for it in the
    all-reduce (async: for its push), used to stay blocked until its timeout (60 s; the driver's close
    waited 10 s for it, then gave up). Now the failed rank tells it to give up: the driver raises the
    failed rank's own error and every worker answers at once. gloo cannot wake a peer in a collective:
    there the failed rank joins the rest of the step's all-reduces, marking the step void."""
    if allreduce == "gloo":
        pytest.importorskip("torch")
    ray_session.cloudpickle.register_pickle_by_value(base)  # WithSpare lives there
    x, y = data(512)  # 16 steps: an async peer runs more than `staleness` ahead of the failed rank
    x[28, 3] = np.nan  # the rank whose shard (async: whose batch) holds sample 28 raises
    dg.manual_seed(0)
    model = WithSpare(spare_dtype)
    t = dg.Trainer(model, nn.functional.cross_entropy, dg.optim.SGD(model.parameters(), lr=0.1), workers=2,
                   backend="ray", sync=sync, allreduce=allreduce, progress=False, timeout_s=60)  # fmt: skip
    try:
        with pytest.raises(dg.errors.NonFiniteError, match="NaN/Inf in 1 of"):
            t.fit((x, y), epochs=1, batch_size=32)
        # answered, not blocked until the 60 s timeout (30 s: a loaded host's Ray calls, not a peer's wait)
        dg.distributed.runtime.gather([w.ping.remote() for w in t._cluster.group.actors], timeout_s=30)
    finally:
        t.close()


@pytest.mark.parametrize(
    "allreduce, bad",
    [
        ("auto", "nan"),
        ("store", "nan"),
        ("auto", "label"),
        ("store", "label"),
        ("shm", "label"),
        ("gloo", "nan"),
        ("gloo", "label"),
    ],
)  # the store sharded across the workers (one node's segment; a gloo group); store actors (fed by the shm all-reduce)
def test_a_fit_ended_by_one_ranks_error_keeps_the_steps_before_it_and_the_next_fit_goes_on_as_locally(
    ray_session, allreduce, bad
):
    """A local run keeps the steps before the one that raised. On Ray the driver only heard of the
    steps of finished calls, and the call queued behind the failed one ran on: its steps met the
    peer's barriers of the failed step and summed gradients of different steps. Now no rank meets again
    after giving up, the driver takes the workers' state (the failed step applied nowhere), and the
    next fit restarts the workers from it: both fits give the local run's bits.

    Batch norm's buffers too: a failed step leaves none of its forward behind. Before, rank 0's
    buffers (the ones the driver keeps) held the forward of the failed step — rank 0 ran it while its
    peer raised — and, sharded, of the calls queued behind it (3 forwards more than the local run);
    a NaN input raises before the forward, a target out of range after it.

    In a gloo group the peers used to wait out gloo's timeout, so the driver could not ask them and kept
    its snapshot from before the fit; now the failed rank joins the rest of the step's all-reduces with the
    step marked void, and no rank applies it."""
    if allreduce == "gloo":
        pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    bad_x, bad_y = x.copy(), y.copy()
    if bad == "nan":
        bad_x[300, 3] = np.nan
    else:
        bad_y[316] = 7  # 3 classes
    error = dg.errors.NonFiniteError if bad == "nan" else dg.errors.IndexOutOfRangeError

    def run(backend, **kw):
        dg.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
        opt = OPTIMIZERS["adam"](model.parameters())
        with dg.Trainer(model, nn.functional.cross_entropy, opt, workers=2, backend=backend, progress=False,
                        **kw) as t:  # fmt: skip
            with pytest.raises(error):
                t.fit((bad_x, bad_y), epochs=1, batch_size=32)
            failed = (t.global_step, [v.numpy().copy() for v in model.state_dict().values()])
            hist = t.fit((x, y), epochs=2, batch_size=32)
        return failed, [v.numpy().copy() for v in model.state_dict().values()], hist

    (local_step, local_mid), local_end, _ = run("local")
    (step, mid), end, hist = run("ray", allreduce=allreduce)
    assert 0 < step == local_step < 16
    assert len(mid) == 9  # two linear layers (4), batch norm: weight, bias, running mean, var, batch count
    assert all(np.array_equal(a, b) for a, b in zip(local_mid, mid))
    assert all(np.array_equal(a, b) for a, b in zip(local_end, end))
    assert [e for e in hist.events if "restarted" in e] == [
        f"restarted 2 workers after the error that ended the last fit, from global step {step} (the steps "
        "before the error were kept)"
    ]
