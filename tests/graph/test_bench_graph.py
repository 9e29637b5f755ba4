"""Smoke tests for `distgraph bench graph` (tiny sizes: the figures are not checked, only that every
measurement runs and yields a sane, finite ratio) and for examples/pipeline_mlp.py."""

import importlib.util
import json
import math
import pathlib

import pytest

pytest.importorskip("torch")

from distgraph.bench import graph as bench  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_bench_graph_small_runs_every_measurement():
    res = bench.run_all(small=True)
    table = bench.rows(res)
    assert len(table) == 10
    for row in table:
        ratio = float(row[3].rstrip("x%"))
        assert math.isfinite(ratio) and ratio > 0, row
    assert res["branches"]["subgraphs"] >= 4  # the four towers were found
    assert res["branches_train"]["subgraphs"] >= 9  # and in the train step, their backward passes too
    assert res["memory"]["plan_on"] < res["memory"]["plan_off"]  # freeing dead values lowers the peak
    assert res["memory"]["planned_peak_ckpt"] <= res["memory"]["planned_peak"]


def _example():
    spec = importlib.util.spec_from_file_location("pipeline_mlp", ROOT / "examples" / "pipeline_mlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pipeline_mlp_example_matches_eager_and_writes_trace(tmp_path, capsys):
    trace = tmp_path / "trace.json"
    metrics = _example().main(
        ["--sizes", "16,32,32,4", "--batch", "8", "--stages", "2", "--micro-batches", "4", "--trace", str(trace)]
    )
    assert metrics["stages"] == 2 and metrics["subgraphs"] == 4 and metrics["micro_batches"] == 4
    assert metrics["max_error"] < 1e-5  # the loss and every gradient against eager
    assert metrics["events"] == 3 * 2 * 2 * 4  # 3 runs x 2 stages x (forward, backward) x 4 micro-batches
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e["name"] for e in events if e["ph"] == "X"} >= {"stage0.fwd/mb0", "stage1.bwd/mb3", "stage0.bwd/mb3"}
    assert "Plan(pipeline, 4 subgraphs" in capsys.readouterr().out
