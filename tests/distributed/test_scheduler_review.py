"""Ray workers' random streams, RayPlanExecutor's "auto" and errors, the sharded calls' wait, the plan
workers' log and start-up allowance."""

import types

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import distgraph as dg
import distgraph.nn as nn
from distgraph.distributed import plan_runner, scheduler
from distgraph.distributed.plan_runner import PlanWorker, RayPlanExecutor
from distgraph.graph.executor import LocalExecutor
from distgraph.graph.partition import independent, replicas
from tests.graph.helpers import captured, randn

ROW = np.random.default_rng(0).standard_normal(32)


def _dropout_step(seed):
    """One step of Dropout → Linear(32, 1) on a batch of two equal samples, one per rank, after
    `dg.manual_seed(seed)` → the weight's change per unit of input."""
    dg.manual_seed(0)
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(32, 1, bias=False)).to(dg.float64)
    before = model[1].weight.detach().numpy().copy()
    dg.manual_seed(seed)
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    with dg.Trainer(model, nn.functional.mse_loss, opt, workers=2, backend="ray", progress=False) as t:
        t.fit((np.stack([ROW, ROW]), np.zeros((2, 1))), epochs=1, batch_size=2)
    return ((model[1].weight.detach().numpy() - before) / ROW).ravel()


@pytest.mark.ray
def test_ray_ranks_draw_their_own_dropout_masks_and_follow_the_drivers_seed(ray_session):
    change = _dropout_step(3)
    # each rank's gradient is its output times its mask: equal masks would make one ratio of all kept inputs
    ratios = np.unique(np.round(change[change != 0] / np.abs(change).max(), 9))
    assert len(ratios) > 1
    assert np.array_equal(_dropout_step(3), change)  # dg.manual_seed before fit repeats the run
    assert not np.array_equal(_dropout_step(4), change)


def _chain(x, *ws):
    for w in ws:
        x = (x @ w).tanh()
    return (x**2).mean()


def _unseeded_draw():
    return dg.rand(4).numpy()


@pytest.mark.ray
def test_launch_ranks_start_alike_as_torchruns_processes(ray_session):
    """launch's ranks are not seeded per rank (only the Trainer's and a plan's workers are): as torchrun's
    processes, each starts at the default seed, so an unseeded model is the same on every rank."""
    dg.manual_seed(7)  # the driver's seed does not reach them either, as torch's does not reach torchrun's
    first, second = dg.distributed.launch(_unseeded_draw, workers=2)
    np.testing.assert_array_equal(first, second)


@pytest.mark.ray
def test_auto_for_a_captured_graph_recaptures_it_at_the_task_size(ray_session):
    ws = [randn(256, 256) for _ in range(4)]
    graph, arrays = captured(_chain, randn(64, 256), *ws)  # the cost model picks data for it

    def recapture(rows):
        return captured(_chain, randn(rows, 256), *ws)[0]

    with pytest.raises(dg.errors.ConfigError, match="pass recapture=fn"):
        RayPlanExecutor.for_graph(graph, "auto", workers=2).shutdown()  # (if it ran: its workers freed)
    with RayPlanExecutor.for_graph(graph, "auto", workers=2, recapture=recapture) as ex:
        assert ex.strategy == "data" and ex.reason.startswith("data: estimated")
        with threadpool_limits(1):
            expected = LocalExecutor(replicas(recapture(32), 2)).run(*arrays)
        assert np.array_equal(ex.run(*arrays)[0], expected[0])


@pytest.mark.ray
def test_a_tasks_error_reaches_the_caller_as_itself(ray_session):
    graph, arrays = captured(lambda x, w: (x @ w).sum(), randn(4, 3), randn(3, 2))
    with RayPlanExecutor.for_graph(graph, "branches", workers=2) as ex:
        with pytest.raises(dg.errors.ShapeError, match="captured for") as caught:  # refused by the worker
            ex.run(np.zeros((4, 2)), arrays[1])
    assert type(caught.value) is dg.errors.ShapeError  # not Ray's RayTaskError(ShapeError)


def test_a_sharded_call_is_given_twice_the_step_timeout_per_step_it_carries(monkeypatch):
    waits = []
    stats = {"loss_sum": 1.0, "count": 2, "t_start": 0.0, "t_end": 1.0}

    def get_failing_fast(refs, timeout_s, what):
        waits.append(timeout_s)
        return [([stats] * scheduler.FIRST_CALL_STEPS, None) for _ in refs]

    monkeypatch.setattr(scheduler, "get_failing_fast", get_failing_fast)
    worker = types.SimpleNamespace(step_sharded=types.SimpleNamespace(remote=lambda packed, **options: object()))
    sched = scheduler.DataParallelScheduler([worker, worker], [], timeout_s=10.0)
    batches = [np.arange(2)] * scheduler.FIRST_CALL_STEPS
    sched.run_sharded(batches, lambda t, s: None)
    assert waits == [2 * 10.0 * scheduler.FIRST_CALL_STEPS]


def test_a_plan_workers_log_keeps_its_latest_tasks_only(monkeypatch):
    monkeypatch.setattr(plan_runner, "LOG_TASKS", 3, raising=False)
    graph, arrays = captured(lambda x, w: (x @ w).sum(), randn(4, 3), randn(3, 2))
    worker = PlanWorker(0, {"g": graph}, [(f"t{k}", "g") for k in range(10)])
    for k in range(10):
        worker.run(k, None, *arrays)
    assert [label for label, *_ in worker.drain()] == ["t7", "t8", "t9"]
    assert len(worker.log) == 0


def _stub_actor():
    call = types.SimpleNamespace(remote=lambda *args: None)
    return types.SimpleNamespace(ping=call, run=types.SimpleNamespace(options=lambda **options: call))


def test_plan_workers_get_the_start_allowance_to_start(monkeypatch):
    waits = []

    class Group:  # a WorkerGroup without Ray: records what its start is given
        def __init__(self, cls, n, **options):
            self.actors = [_stub_actor() for _ in range(n)]

        def start(self, rank, *args):
            pass

        def bound(self, timeout_s):
            waits.append(("bound", timeout_s))

        def shutdown(self):
            pass

    monkeypatch.setattr(plan_runner, "WorkerGroup", Group)
    monkeypatch.setattr(plan_runner, "wait_ready", lambda refs, timeout_s, what: waits.append(("ping", timeout_s)))
    graph, _ = captured(lambda x, w: (x @ w).sum(), randn(4, 3), randn(3, 2))
    RayPlanExecutor(independent(graph), workers=2, timeout_s=5.0, compiled=False)
    startup = scheduler.start_allowance(5.0)
    assert startup > 5.0 and waits == [("bound", startup), ("ping", startup)]
