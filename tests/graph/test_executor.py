import json

import numpy as np
import pytest

import distgraph as dg
from distgraph.graph.executor import LocalExecutor, Runner
from distgraph.graph.partition import independent, pipeline, replicas
from tests.graph.helpers import captured, randn
from tests.graph.test_partition import _tower_graph, _towers


def _close(a, b, tol=1e-12):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) <= tol


def test_independent_branches_equal_eager_and_repeat_bit_for_bit():
    graph, arrays = _tower_graph()
    ex = LocalExecutor(independent(graph), workers=2)
    (out,) = ex.run(*arrays)
    eager = _towers(*[dg.tensor(a) for a in arrays]).array
    assert _close(out, eager)
    assert ex.run(*arrays)[0].tobytes() == out.tobytes()


def test_branches_run_on_several_threads_and_the_trace_is_valid_chrome_json(tmp_path):
    graph, arrays = _tower_graph()
    ex = LocalExecutor(independent(graph), workers=2)
    for _ in range(3):
        ex.run(*arrays)
    path = ex.timeline.write(tmp_path / "trace.json")
    trace = json.loads(path.read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == 15
    assert all(e["dur"] >= 0 and e["ts"] >= 0 and "bytes" in e["args"] for e in spans)
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert all(n.startswith("dg-worker") for n in names)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline_over_micro_batches_equals_eager(schedule):
    def mlp(x, *ws):
        for w in ws:
            x = (x @ w).tanh()
        return x

    ws = [randn(16, 16) for _ in range(6)]
    micro, _ = captured(mlp, randn(4, 16), *ws)  # captured at micro-batch size
    x = randn(16, 16)
    ex = LocalExecutor(pipeline(micro, 3, micro_batches=4), schedule=schedule)
    (out,) = ex.run(x.array, *[w.array for w in ws])
    assert _close(out, mlp(x, *ws).array)
    stage_threads = {t for _, t, *_ in ex.timeline.events}
    assert stage_threads == {"dg-stage0_0", "dg-stage1_0", "dg-stage2_0"}
    assert len(ex.timeline.events) == 12


def test_replicas_average_a_mean_loss_like_the_full_batch():
    w = randn(3, 2)
    shard, _ = captured(lambda x, w: ((x @ w) ** 2).mean(), randn(4, 3), w)
    x = randn(8, 3)
    (loss,) = LocalExecutor(replicas(shard, 2)).run(x.array, w.array)
    assert _close(loss, ((x @ w) ** 2).mean().array)


def test_runner_rejects_a_wrong_number_of_inputs():
    graph, arrays = captured(lambda x: x.exp(), randn(2))
    with pytest.raises(dg.errors.ShapeError, match="expects 1 inputs"):
        Runner(graph)(*arrays, arrays[0])
