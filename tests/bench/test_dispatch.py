"""`bench dispatch` on small settings, in the test session's Ray (2 CPUs): every pattern runs on both
peers, the three ratio rows and the compiled-graph rows are printed, and the figures are written."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.ray


def test_dispatch_measures_every_pattern_on_both_peers(ray_session, tmp_path):
    from distgraph.bench.dispatch import command

    out = tmp_path / "dispatch.json"
    result = CliRunner().invoke(command, ["--n", "3", "--repeat", "2", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    for row in ("one subgraph vs one call", "chain of 3, per subgraph", "fan-out of 3, per subgraph", "2-actor step"):
        assert row in result.output
    report = json.loads(out.read_text())
    peers = {"bare call", "distgraph 1 subgraph", "bare chain", "distgraph chain", "bare fan-out", "distgraph fan-out",
             "2-actor step, classic", "2-actor step, compiled", "distgraph chain, classic", "distgraph chain, compiled"}  # fmt: skip
    assert set(report["seconds"]) == peers
    assert all(0 < s < 10 for s in report["seconds"].values())
    assert report["compiled_error"] is None  # the compiled chain ran as a compiled graph, not the fallback
    assert report["per_subgraph_s"]["distgraph chain"] == pytest.approx(report["seconds"]["distgraph chain"] / 3)
