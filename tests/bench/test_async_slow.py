"""`bench async_slow` on small settings: both systems run, the ratio is printed, and the async run's
schedule is written as a Chrome trace with every measured step on the worker that computed it."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.ray


def test_async_slow_prints_the_ratio_and_writes_the_schedule(ray_session, tmp_path):
    from distgraph.bench.async_slow import command

    out = tmp_path / "async_slow.json"
    args = "--sizes 16,32,4 --batch 32 --steps 12 --repeat 1 --slow-worker 2"
    result = CliRunner().invoke(command, [*args.split(), "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "async / sync = " in result.output and "staleness (pushes between" in result.output
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"sync", "async"} and report["async_over_sync"] > 0
    trace = json.loads((tmp_path / "async_slow.trace.json").read_text())
    steps = {e["args"]["step"] for e in trace["traceEvents"] if e["ph"] == "X"}
    assert steps == set(range(12))  # the last measured epoch, every step drawn once (compute and push)
    assert {e["pid"] for e in trace["traceEvents"] if e["ph"] == "X"} <= {0, 1}  # (tiny steps: one worker may take all)
