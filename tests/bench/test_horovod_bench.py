"""`bench horovod` on small settings: every collective timed on launched ranks, ratios printed, JSON written."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.ray


def test_horovod_bench_times_every_collective_against_dist_all_reduce(ray_session, tmp_path):
    from distgraph.bench.horovod import command

    out = tmp_path / "horovod.json"
    result = CliRunner().invoke(command, ["--calls", "3", "--repeat", "1", "--numel", "8", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    got = json.loads(out.read_text())
    assert set(got["us_per_call"]) == {"dist.all_reduce", "hvd.allreduce (Sum)", "hvd.allreduce (Average)",
                                       "hvd.allreduce (int, Average)", "hvd.broadcast", "hvd.allgather"}  # fmt: skip
    assert all(t > 0 for t in got["us_per_call"].values()) and len(got["per_rank"]) == 2
    assert "| hvd.broadcast" in result.output and "1.00x" in result.output  # dist.all_reduce's own row
