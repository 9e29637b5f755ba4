"""`bench checkpoint` on a small model: the four systems, each load checked to restore, ratios to torch's DCP."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.ray


def test_checkpoint_bench_saves_and_loads_the_four_systems_and_writes_the_figures(ray_session, tmp_path):
    pytest.importorskip("torch")
    from distgraph.bench.checkpoint import command

    out = tmp_path / "checkpoint.json"
    args = ["--sizes", "16,32,4", "--repeat", "1", "--bind-to", "none", "--dir", str(tmp_path / "ck")]
    result = CliRunner().invoke(command, [*args, "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    points = {p["system"]: p for p in json.loads(out.read_text())["points"]}
    assert set(points) == {"distgraph-dcp", "distgraph-full", "torch-dcp", "torch-full"}
    assert points["torch-dcp"]["save_vs_torch_dcp"] == 1.0
    assert all(p["save_s"] > 0 and p["load_s"] > 0 for p in points.values())
    # what is on disk: the 676 float32 parameters and Adam's two moments, plus each format's own bytes
    assert all(p["bytes"] >= 3 * 4 * 676 for p in points.values())
    assert sorted((tmp_path / "ck" / "distgraph-dcp").iterdir()) == sorted(
        tmp_path / "ck" / "distgraph-dcp" / f for f in (".metadata", "__0_0.distcp", "__1_0.distcp")
    )
    assert "| distgraph-dcp" in result.output and "load ÷torch-dcp" in result.output
