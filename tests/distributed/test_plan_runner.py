"""Plans run on Ray actors: same outputs as the LocalExecutor bit for bit, branches overlap in time."""

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import distgraph as dg
from distgraph.distributed.plan_runner import RayPlanExecutor
from distgraph.graph.executor import LocalExecutor
from distgraph.graph.partition import independent, pipeline, replicas
from tests.graph.helpers import captured, randn

pytestmark = pytest.mark.ray


def _towers(x, *ws):
    return dg.cat([((x @ w).tanh() @ w.T).sum(1, keepdim=True) for w in ws], 1).sum(1)


def _training_step(x, *ws):
    for w in ws:
        x = (x @ w).tanh()
    return (x**2).mean()


def _local(plan, *arrays, **kwargs):
    """The LocalExecutor's outputs with BLAS on one thread, as in a worker with one CPU (OpenBLAS sums in
    another order with more threads)."""
    with threadpool_limits(1):
        return LocalExecutor(plan, **kwargs).run(*arrays)


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.tobytes() == y.tobytes()


def _overlap(events):
    """True when two runs on different workers were running at the same time."""
    return any(a[1] != b[1] and a[2] < b[3] and b[2] < a[3] for i, a in enumerate(events) for b in events[i + 1 :])


def test_branches_equal_local_and_eager_and_overlap_on_two_workers(ray_session, tmp_path):
    x = randn(256, 256)
    graph, arrays = captured(_towers, x, *[randn(256, 384 + k) for k in range(4)])
    plan = independent(graph)
    expected = _local(plan, *arrays)
    with RayPlanExecutor(plan, workers=2) as ex:
        pending = [ex.submit(*arrays) for _ in range(3)]  # three runs in flight: the driver did not wait
        for p in pending:
            _same(p.result(), expected)
        timeline = ex.timeline
    assert np.abs(expected[0] - _towers(dg.tensor(arrays[0]), *map(dg.tensor, arrays[1:])).array).max() < 1e-12
    assert len(timeline.events) == 3 * len(plan.subgraphs)
    assert {e[1] for e in timeline.events} == {"worker0", "worker1"}
    assert _overlap(timeline.events)
    trace = json.loads(timeline.write(tmp_path / "trace.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == 15 and all(e["dur"] >= 0 and e["ts"] >= 0 and e["args"]["bytes"] > 0 for e in spans)
    assert {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"} == {"worker0", "worker1"}


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline_of_a_training_step_equals_local(ray_session, schedule):
    ws = [randn(16, 16).requires_grad_() for _ in range(4)]
    micro, arrays = captured(_training_step, randn(4, 16), *ws, grad_of=ws)  # loss and 4 gradients
    plan = pipeline(micro, 2, micro_batches=4)  # each stage's forward and backward on one worker
    x = randn(16, 16).array
    expected = _local(plan, x, *arrays[1:], schedule=schedule)
    with RayPlanExecutor(plan, workers=2, schedule=schedule) as ex:
        _same(ex.run(x, *arrays[1:]), expected)
        worker0 = [e[0] for e in ex.timeline.events if e[1] == "worker0"]
    if schedule == "1f1b":
        steps = [("fwd", 0), ("fwd", 1), ("bwd", 0), ("fwd", 2), ("bwd", 1), ("fwd", 3), ("bwd", 2), ("bwd", 3)]
        assert worker0 == [f"stage0.{phase}/mb{j}" for phase, j in steps]
    else:
        assert worker0 == [f"stage0.{phase}/mb{j}" for phase in ("fwd", "bwd") for j in range(4)]


def test_data_replicas_equal_local(ray_session):
    w = randn(6, 3)
    shard, _ = captured(lambda x, w: ((x @ w).tanh() ** 2).mean(), randn(4, 6), w)
    x = randn(8, 6).array
    plan = replicas(shard, 2)
    with RayPlanExecutor(plan, workers=2) as ex:
        _same(ex.run(x, w.array), _local(plan, x, w.array))
        assert {e[1] for e in ex.timeline.events} == {"worker0", "worker1"}


def test_compiled_graph_gives_the_same_outputs_as_actor_calls(ray_session):
    x = randn(8, 16)
    graph, arrays = captured(_towers, x, *[randn(16, 8) for _ in range(3)])
    plan = independent(graph)
    with RayPlanExecutor(plan, workers=2, compiled=True) as ex:
        for _ in range(3):
            _same(ex.run(*arrays), _local(plan, *arrays))
            assert ex.compiled is not None, ex.compiled_error
        assert len(ex.timeline.events) == 3 * len(plan.subgraphs)


def test_auto_strategy_names_its_reason_and_runs(ray_session):
    graph, arrays = captured(_towers, randn(1, 64), *[randn(64, 64) for _ in range(4)])
    with RayPlanExecutor.for_graph(graph, "auto", workers=2) as ex:
        assert ex.strategy == "branches" and ex.reason.startswith("branches: estimated")
        _same(ex.run(*arrays), _local(ex.plan, *arrays))
        with pytest.raises(dg.errors.ShapeError, match="plan expects 5 inputs"):
            ex.run(*arrays[:2])
