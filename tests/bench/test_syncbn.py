"""`bench syncbn` on small settings: both systems run side by side, and SyncBatchNorm's model is the one
that stays with one process training on the global batches."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.ray


def test_syncbn_prints_the_cost_and_each_models_distance_from_one_process(ray_session, tmp_path):
    from distgraph.bench.syncbn import command

    out = tmp_path / "syncbn.json"
    args = "--sizes 12,16,16,3 --batch 32 --steps 4 --repeat 2"
    result = CliRunner().invoke(command, [*args.split(), "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "SyncBatchNorm / BatchNorm samples/s = " in result.output
    report = json.loads(out.read_text())["results"]
    assert report["syncbn"]["max_diff_from_one_process"] <= 1e-6
    assert report["batchnorm"]["max_diff_from_one_process"] > 1e-4
    assert len(report["syncbn"]["repeats"]) == 2 and report["syncbn"]["samples_per_s"] > 0
