"""`bench fsdp` on small settings: the three systems, their ratios to torch's FSDP and what a rank holds."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.ray


def test_fsdp_bench_runs_the_three_systems_and_writes_the_figures(ray_session, tmp_path):
    pytest.importorskip("torch")
    from distgraph.bench.fsdp import command

    out = tmp_path / "fsdp.json"
    args = ["--sizes", "16,32,4", "--batch", "16", "--steps", "3", "--repeat", "1", "--bind-to", "none"]
    result = CliRunner().invoke(command, [*args, "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    points = {p["system"]: p for p in json.loads(out.read_text())["points"]}
    assert set(points) == {"distgraph-fsdp", "distgraph-ddp", "torch-fsdp"}
    assert points["torch-fsdp"]["vs_torch_fsdp"] == 1.0 and all(p["samples_per_s"] > 0 for p in points.values())
    # 676 float32 parameters and Adam's two moments: DDP holds all, each FSDP rank half (a unit per Linear)
    assert points["distgraph-ddp"]["bytes_held"] == 3 * 4 * (16 * 32 + 32 + 32 * 4 + 4)
    assert points["distgraph-fsdp"]["bytes_held"] == points["torch-fsdp"]["bytes_held"] == 3 * 4 * (272 + 66)
    assert "| distgraph-fsdp" in result.output and "MiB held per rank" in result.output
