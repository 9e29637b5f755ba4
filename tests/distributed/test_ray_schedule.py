"""Per-step lr schedules on Ray workers: sync runs equal local ones bit for bit (the store sharded across
the workers, several steps per call; store actors), through a killed worker's replay and a mid-epoch
checkpoint's resume; async workers apply the row of the step they claim."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.optim import lr_scheduler as dls
from tests.distributed.helpers import kill_when, worker_pid

pytestmark = pytest.mark.ray


def data(n=128):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


SCHEDULES = {  # (optimizer, scheduler) for `steps` steps in all
    "onecycle": lambda p, steps: (
        opt := dg.optim.SGD(p, lr=0.1, momentum=0.9),
        dls.OneCycleLR(opt, max_lr=0.5, total_steps=steps, cycle_momentum=True),
    ),
    "warmup": lambda p, steps: (opt := dg.optim.Adam(p, lr=0.02), dls.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 6))),
}


def trainer(backend, name="onecycle", steps=16, **kw):
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))
    opt, sched = SCHEDULES[name](model.parameters(), steps)
    return dg.Trainer(
        model, nn.functional.cross_entropy, opt, workers=2, backend=backend, scheduler=sched,
        scheduler_interval="step", progress=False, **kw,
    )  # fmt: skip


def params(t):
    return [p.detach().numpy().copy() for p in t.model.parameters()]


def fitted(backend, name="onecycle", epochs=2, n=128, **kw):
    with trainer(backend, name, steps=epochs * n // 16, **kw) as t:
        t.fit(data(n), epochs=epochs, batch_size=16)
        return t, params(t)


@pytest.mark.parametrize("allreduce", ["auto", "store"])  # the store in the workers' segment; store actors
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_per_step_schedule_on_ray_equals_local_bit_for_bit(ray_session, name, allreduce):
    """16 steps (8 an epoch); sharded calls carry 4 steps each, every one with its own row."""
    local, lp = fitted("local", name)
    remote, rp = fitted("ray", name, allreduce=allreduce)
    assert all(np.array_equal(a, b) for a, b in zip(lp, rp))
    assert local.history["loss"] == remote.history["loss"] and local.history["lr"] == remote.history["lr"]
    assert remote.optimizer.param_groups[0]["lr"] == local.optimizer.param_groups[0]["lr"]
    assert remote.lr_scheduler.last_epoch == 16


@pytest.mark.slow
def test_a_killed_worker_replays_with_the_same_per_step_rows(ray_session):
    """A worker killed after epoch 1 of 3 (64 steps each): the replayed steps take the rows they had."""
    _, reference = fitted("local", epochs=3, n=1024)
    t = trainer("ray", steps=3 * 64)
    killer = kill_when(t, 1, worker_pid(1))
    t.fit(data(1024), epochs=3, batch_size=16)
    killer.join()
    t.close()
    assert any("died" in e and "replayed" in e for e in t.history.events), t.history.events
    assert all(np.array_equal(a, b) for a, b in zip(reference, params(t)))


def test_a_mid_epoch_checkpoint_on_ray_resumes_to_the_same_bits(ray_session, tmp_path):
    """checkpoint_every_steps=5, none at epoch ends: the epochs run in segments of 5 steps, and the run's
    last checkpoint is global step 21 (epoch 3, step 5 of 8); a new Trainer resumes there, its rows run ahead from the saved scheduler, and ends
    with the uninterrupted run's bits, lr and scheduler."""
    ck = {"checkpoint_dir": str(tmp_path), "checkpoint_every_steps": 5, "checkpoint_every": 100}
    first, reference = fitted("ray", epochs=3, **ck)
    with trainer("ray", steps=24, **ck) as t:
        t.fit(data(), epochs=3, batch_size=16, resume=True)
    assert any(e.endswith("at epoch 2, step 5") for e in t.history.events), t.history.events
    assert all(np.array_equal(a, b) for a, b in zip(reference, params(t)))
    assert t.lr_scheduler.last_epoch == first.lr_scheduler.last_epoch == 24
    assert t.optimizer.param_groups[0]["lr"] == first.optimizer.param_groups[0]["lr"]
    assert t.history["lr"] == first.history["lr"]


@pytest.mark.parametrize("allreduce", ["auto", "store"])  # the async store in the segment; store actors
def test_async_workers_apply_the_row_of_the_step_they_claim(ray_session, allreduce):
    """LambdaLR: lr 0.1 for the first 6 steps, 0 from then on (SGD, no momentum). Async workers claim
    steps in any order, and whoever claims step t applies it with row t: epoch 1 moves the parameters,
    epoch 2 (all rows lr 0) leaves them exactly as they were; stepped once per epoch instead, the lr
    would be 0.1 all through epoch 2."""
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    sched = dls.LambdaLR(opt, lambda s: 1.0 if s < 6 else 0.0)
    initial = [p.detach().numpy().copy() for p in model.parameters()]
    with dg.Trainer(
        model, nn.functional.cross_entropy, opt, workers=2, backend="ray", sync="async", allreduce=allreduce,
        scheduler=sched, scheduler_interval="step", progress=False,
    ) as t:  # fmt: skip
        t.fit(data(), epochs=1, batch_size=16)  # 8 steps: 6 at lr 0.1, 2 at lr 0
        after_one = params(t)
        t.fit(data(), epochs=2, batch_size=16)  # 8 more, all at lr 0
        assert all(np.array_equal(a, b) for a, b in zip(after_one, params(t)))
    assert not all(np.array_equal(a, b) for a, b in zip(initial, after_one))
    assert t.history["lr"] == [0.0, 0.0] and sched.last_epoch == 16
