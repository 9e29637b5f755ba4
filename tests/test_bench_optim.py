"""`bench optim` runs every optimizer row, and distgraph's parameters end where torch.optim's do: the timed
steps are the same update, not merely a fast one."""

import json

import pytest
from click.testing import CliRunner


def test_optim_bench_times_every_optimizer_and_matches_torchs_parameters(tmp_path):
    pytest.importorskip("torch")
    from distgraph.bench.optim import OPTIMIZERS, command, label

    out = tmp_path / "optim.json"
    result = CliRunner().invoke(command, ["--repeat", "2", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "target: every optimizer ≤ 1.0x torch's step time" in result.output
    results = json.loads(out.read_text())["results"]
    names = [label(name, options) for name, options in OPTIMIZERS]
    assert len(names) == 7 and "SGD(lr=0.01, momentum=0.9, weight_decay=0.0001)" in names
    assert list(results) == names
    for name in names:
        assert f"| {name} " in result.output
        assert results[name]["steps"] == 5 and results[name]["max_abs_param_diff"] <= 1e-4
        assert results[name]["seconds"]["distgraph"] > 0 and results[name]["seconds"]["torch"] > 0
