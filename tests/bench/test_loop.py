"""`bench loop` on small settings: both systems at each worker count, ratios and JSON."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.ray


def test_loop_bench_runs_both_systems_and_writes_the_figures(ray_session, tmp_path):
    pytest.importorskip("torch")
    from distgraph.bench.loop import command

    out = tmp_path / "loop.json"
    args = ["--workers", "1,2", "--sizes", "16,32,4", "--batch", "16", "--steps", "4", "--repeat", "1"]
    result = CliRunner().invoke(command, [*args, "--bind-to", "none", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    points = {(p["system"], p["workers"]): p for p in json.loads(out.read_text())["points"]}
    assert set(points) == {(s, w) for s in ("distgraph", "distgraph-ddp", "torch-ddp") for w in (1, 2)}
    assert all(p["samples_per_s"] > 0 and len(p["runs"]) == 1 for p in points.values())
    assert points["distgraph", 1]["efficiency"] == 1.0 and points["torch-ddp", 2]["vs_ddp"] == 1.0
    assert points["distgraph", 2]["vs_ddp"] == pytest.approx(
        points["distgraph", 2]["samples_per_s"] / points["torch-ddp", 2]["samples_per_s"]
    )
    assert "| 2 | distgraph" in result.output and "÷ddp" in result.output
