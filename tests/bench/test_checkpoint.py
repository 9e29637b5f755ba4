"""`bench checkpoint` on a small model: the six systems, each load checked to restore, ratios to torch's peers."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.ray


def test_checkpoint_bench_saves_and_loads_the_six_systems_and_writes_the_figures(ray_session, tmp_path):
    pytest.importorskip("torch")
    from distgraph.bench.checkpoint import command

    out = tmp_path / "checkpoint.json"
    args = ["--sizes", "16,32,4", "--repeat", "1", "--bind-to", "none", "--dir", str(tmp_path / "ck")]
    result = CliRunner().invoke(command, [*args, "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    points = {p["system"]: p for p in json.loads(out.read_text())["points"]}
    kinds = ("dcp", "dcp-async", "full")
    assert set(points) == {f"{system}-{kind}" for system in ("distgraph", "torch") for kind in kinds}
    assert all(points[f"torch-{kind}"]["save_vs_torch"] == 1.0 for kind in kinds)
    assert all(p["save_s"] > 0 and p["written_s"] >= p["save_s"] for p in points.values())
    assert all((p["load_s"] is None) == p["system"].endswith("async") for p in points.values())
    # what is on disk: the 676 float32 parameters and Adam's two moments, plus each format's own bytes
    assert all(p["bytes"] >= 3 * 4 * 676 for p in points.values())
    assert sorted((tmp_path / "ck" / "distgraph-dcp").iterdir()) == sorted(
        tmp_path / "ck" / "distgraph-dcp" / f for f in (".metadata", "__0_0.distcp", "__1_0.distcp")
    )
    assert "| distgraph-dcp-async" in result.output and "load ÷torch" in result.output
