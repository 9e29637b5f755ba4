"""Per-step lr schedules on the Ray paths test_ray_schedule.py leaves out: the gloo all-reduce group, elastic
workers (sync: growing mid-epoch; async: between epochs), the graph strategies (`branches`, `pipeline`) on
Ray workers, and async workers with one of them killed. Sync runs give the parameters of a local run with
the same schedule and the history's lr is torch's scheduler's; an async run applies every step once, with
its own row (`probe`: a model whose parameters record the lr of every update)."""

import sys
import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.optim import lr_scheduler as dls
from tests.distributed.helpers import free_between_steps, kill_when, worker_pid

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.ray


def data(n=128, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(dtype)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


SCHEDULES = {  # (optimizer, scheduler) over `steps` steps, for distgraph.optim or torch.optim
    "onecycle": lambda o, s, p, steps: (
        opt := o.SGD(p, lr=0.1, momentum=0.9),
        s.OneCycleLR(opt, max_lr=0.5, total_steps=steps, cycle_momentum=True),
    ),
    "warmup": lambda o, s, p, steps: (opt := o.Adam(p, lr=0.02), s.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 6))),
}


def torch_lrs(name, steps):
    """The lr of each of `steps` steps under torch's scheduler, stepped after every optimizer step."""
    opt, sched = SCHEDULES[name](torch.optim, torch.optim.lr_scheduler, [torch.zeros(1, requires_grad=True)], steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def trainer(backend, name, steps, model=None, **kw):
    dg.manual_seed(0)
    model = model or nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))
    opt, sched = SCHEDULES[name](dg.optim, dls, model.parameters(), steps)
    return dg.Trainer(
        model, F.cross_entropy, opt, backend=backend, scheduler=sched, scheduler_interval="step", progress=False, **kw
    )


def params(t):
    return [p.detach().numpy().copy() for p in t.model.parameters()]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_the_gloo_group_applies_the_per_step_rows_bit_for_bit(ray_session, name):
    """allreduce='gloo' (the sharded store's all-reduce across nodes): 2 epochs of 8 steps equal local."""
    with trainer("local", name, 16, workers=2) as local:
        local.fit(data(), epochs=2, batch_size=16)
    with trainer("ray", name, 16, workers=2, allreduce="gloo") as remote:
        remote.fit(data(), epochs=2, batch_size=16)
    assert all(np.array_equal(a, b) for a, b in zip(params(local), params(remote)))
    lrs = torch_lrs(name, 16)
    assert remote.history["lr"] == pytest.approx([lrs[7], lrs[15]], rel=1e-12)
    assert remote.history["lr"] == local.history["lr"] and remote.lr_scheduler.last_epoch == 16


class Blocker:
    """Holds one CPU of the cluster while it lives."""

    def ping(self):
        return True


def probe(n):
    """A model whose every update shows the hyperparameters it used: W (1 × n, float64), sample i is the
    one-hot e_i and its target far below, so an L1 step on sample i alone (batch 1) has the gradient e_i
    whatever the parameters: W[i] moves by the step's lr, and by its momentum times W[i]'s buffer."""
    dg.manual_seed(0)
    model = nn.Linear(n, 1, bias=False).double()
    return model, (np.eye(n), np.full((n, 1), -1e3))


def probe_steps(fits):
    """Steps of `fits`, [(samples, the epoch count fit reaches)] at batch 1."""
    return sum(n * (epochs - before) for (n, epochs), before in zip(fits, [0] + [e for _, e in fits]))


def probe_run(model, fits, momentum, sync="sync", **kw):
    """A Trainer of the probe: SGD and a OneCycleLR over `fits`, momentum cycled when there is momentum."""
    opt = dg.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    steps = probe_steps(fits)
    sched = dls.OneCycleLR(opt, max_lr=0.1, total_steps=steps, cycle_momentum=momentum > 0)
    t = dg.Trainer(model, F.l1_loss, opt, sync=sync, scheduler=sched, scheduler_interval="step", progress=False, **kw)
    return t, steps


def torch_probe(w0, fits, momentum):
    """(W, the lr of each step) under torch's SGD and OneCycleLR stepped after every step of the Trainer's
    batches (epoch e visits numpy.random.default_rng([0, e]).permutation(samples))."""
    w = torch.tensor(w0, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=momentum)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=probe_steps(fits), cycle_momentum=momentum > 0
    )
    done, lrs = 0, []
    for n, epochs in fits:
        for epoch in range(done, epochs):
            for i in np.random.default_rng([0, epoch]).permutation(n):
                w.grad = torch.zeros_like(w)
                w.grad[0, i] = 1.0
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
        done = epochs
    return w.detach().numpy(), lrs


@pytest.mark.slow
@pytest.mark.parametrize("allreduce", ["auto", "store"])  # the store sharded in the workers; store actors
def test_elastic_workers_growing_mid_epoch_keep_the_per_step_rows(ray_session, monkeypatch, allreduce):
    """One CPU free: one worker; the other is freed 64 steps into a 1,024-step epoch and the group grows
    to two between steps. The probe (momentum cycled) ends exactly as a local Trainer's, and as torch's
    SGD with its OneCycleLR: every step applied once, with its own lr and momentum, before and after."""
    from ray import cloudpickle

    from distgraph.distributed import cluster

    monkeypatch.setattr(cluster, "ELASTIC_CHECK_S", 0.0)  # look at every segment: steps here take ~1 ms
    ray = ray_session
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Blocker lives in this test module
    blocker = ray.remote(num_cpus=1)(Blocker).remote()
    ray.get(blocker.ping.remote(), timeout=60)
    n, fits = 1024, [(64, 1), (1024, 2)]
    local, _ = probe_run(probe(n)[0], fits, 0.9)
    model, (x, y) = probe(n)
    w0 = model.weight.detach().numpy().copy()
    t, steps = probe_run(model, fits, 0.9, backend="ray", workers=(1, 2), allreduce=allreduce)
    for tr in (local, t):
        tr.fit((x[:64], y[:64]), epochs=1, batch_size=1)
    assert t.workers == 1

    free_between_steps(monkeypatch, t, 64, lambda: ray.kill(blocker))
    t.fit((x, y), epochs=2, batch_size=1)
    t.close()
    local.fit((x, y), epochs=2, batch_size=1)
    (grown,) = (e for e in t.history.events if e.startswith("elastic"))
    assert grown.startswith("elastic: 1 -> 2 workers (cluster resources changed, before epoch step "), t.history.events
    assert np.array_equal(params(t)[0], params(local)[0])
    expected, lrs = torch_probe(w0, fits, 0.9)
    np.testing.assert_allclose(params(t)[0], expected, rtol=0, atol=1e-12)  # a step twice or none: off by ~1e-4
    assert t.history["lr"] == pytest.approx([lrs[63], lrs[-1]], rel=1e-12) and t.lr_scheduler.last_epoch == steps


@pytest.mark.parametrize("strategy", ["branches", "pipeline"])
def test_graph_strategies_on_ray_workers_follow_the_per_step_rows(ray_session, strategy):
    """The step split by the graph across 2 Ray workers (float64; 96 samples, 3 steps of 32 an epoch, none
    dropped): the parameters of local data-parallel training with the same OneCycleLR, torch's lrs."""
    model = lambda: nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double()  # noqa: E731
    x, y = data(96, np.float64)
    dg.manual_seed(0)
    with trainer("local", "onecycle", 6, model()) as local:
        local.fit((x, y), epochs=2, batch_size=32)
    dg.manual_seed(0)
    micro = {"micro_batches": 2} if strategy == "pipeline" else {}
    with trainer("ray", "onecycle", 6, model(), workers=2, strategy=strategy, **micro) as remote:
        remote.fit((x, y), epochs=2, batch_size=32)
    assert any(e.startswith(f"strategy {strategy}:") for e in remote.history.events), remote.history.events
    for a, b in zip(params(local), params(remote)):
        np.testing.assert_allclose(b, a, atol=1e-10)
    lrs = torch_lrs("onecycle", 6)
    assert remote.history["lr"] == pytest.approx([lrs[2], lrs[5]], rel=1e-12) and remote.lr_scheduler.last_epoch == 6


@pytest.mark.slow
@pytest.mark.parametrize("allreduce", ["auto", "store"])  # the async store in the workers' segment; store actors
def test_async_updates_use_their_steps_rows_through_a_killed_worker(ray_session, monkeypatch, allreduce):
    """Async, OneCycleLR over 4 epochs of 512 steps (no momentum: async updates land in push order);
    worker 1 is killed after epoch 1 and replaced. Every applied update used its step's row of torch's
    schedule, and each step was applied once: W[i] ends as W0[i] − Σ over epochs of the lr of i's step.
    Calls of the shared store carry at most 16 steps, so the steps the killed worker left undone are
    redone in a call with later steps, each with its own row (one call would hold the epoch's rest)."""
    from distgraph.distributed import async_run

    monkeypatch.setattr(async_run, "MAX_STEPS", 16)
    n, fits = 512, [(512, 4)]
    model, (x, y) = probe(n)
    w0 = model.weight.detach().numpy().copy()
    t, steps = probe_run(model, fits, 0.0, "async", backend="ray", workers=2, allreduce=allreduce)
    with t:
        killer = kill_when(t, 1, worker_pid(1))
        t.fit((x, y), epochs=4, batch_size=1)
        killer.join()
        w = params(t)[0]
    assert any("worker 1 failed" in e and "dropped" in e for e in t.history.events), t.history.events
    np.testing.assert_allclose(w, torch_probe(w0, fits, 0.0)[0], rtol=0, atol=1e-12)  # a step twice or none: ~1e-4
    assert t.global_step == steps and t.lr_scheduler.last_epoch == steps


@pytest.mark.slow
def test_async_per_step_schedule_still_converges_after_a_killed_worker(ray_session):
    """OneCycleLR (SGD, momentum cycled) on 2 async workers, worker 0 killed after epoch 1 of 3: the run
    completes every step and reaches the accuracy the fault tests ask of it."""
    x, y = data(1024)
    with trainer("ray", "onecycle", 3 * 64, workers=2, sync="async", staleness=1) as t:
        killer = kill_when(t, 1, worker_pid(0))
        hist = t.fit((x, y), epochs=3, batch_size=16)
        killer.join()
        ev = t.evaluate((x, y))
    assert any("worker 0 failed" in e and "dropped" in e for e in hist.events), hist.events
    lrs = torch_lrs("onecycle", 3 * 64)
    assert hist["lr"] == pytest.approx([lrs[63], lrs[127], lrs[191]], rel=1e-12)
    assert t.global_step == 3 * 64 and ev["accuracy"] > 0.7


@pytest.mark.slow
@pytest.mark.parametrize("allreduce", ["auto", "store"])  # the async store in the workers' segment; store actors
def test_elastic_async_workers_growing_between_epochs_keep_the_per_step_rows(ray_session, allreduce):
    """Async, one worker, then two once a CPU is freed between fits: every update used its row (the probe
    ends as torch's), and the store actors' scheduler stands at the store's version after async epochs, so
    the group's resize reads the parameters there. It counted no async push: the resize asked every shard
    for version 0, which they no longer hold (an unhandled DistributedError printed while training)."""
    from ray import cloudpickle

    ray = ray_session
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Blocker lives in this test module
    blocker = ray.remote(num_cpus=1)(Blocker).remote()
    ray.get(blocker.ping.remote(), timeout=60)
    n, fits = 256, [(256, 1), (256, 3)]
    model, (x, y) = probe(n)
    w0 = model.weight.detach().numpy().copy()
    t, steps = probe_run(model, fits, 0.0, "async", backend="ray", workers=(1, 2), allreduce=allreduce)
    with t:
        t.fit((x, y), epochs=1, batch_size=1)
        assert t.workers == 1
        ray.kill(blocker)
        _wait_for_free_cpu(ray)
        assert t._cluster.fit_to_cluster(*t.elastic)  # what the next fit does first
        ray.get(t._cluster.scheduler.param_refs, timeout=60)  # the store actors' parameters the group starts from
        t.fit((x, y), epochs=3, batch_size=1)
        assert t.workers == 2
        w = params(t)[0]
    expected, lrs = torch_probe(w0, fits, 0.0)
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-12)
    assert t.history["lr"] == pytest.approx([lrs[255], lrs[511], lrs[767]], rel=1e-12)
    assert t.global_step == steps and t.lr_scheduler.last_epoch == steps


def _wait_for_free_cpu(ray, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < 1:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.05)
