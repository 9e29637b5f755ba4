"""`bench layers` runs its rows forward and backward in both libraries and reports each ratio; a wrong row name
is refused by name."""

import json

import pytest
from click.testing import CliRunner


def test_layers_bench_times_the_rows_asked_for(tmp_path):
    pytest.importorskip("torch")
    from distgraph.bench.layers import command

    out = tmp_path / "layers.json"
    rows = ["gelu (tanh)", "layer_norm", "embedding"]
    args = ["--repeat", "1", "--json-out", str(out)] + [a for r in rows for a in ("--only", r)]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert sorted(payload["results"]) == sorted(rows)
    for name in rows:
        assert f"| {name} " in result.output
        assert payload["results"][name]["ms"]["distgraph"] > 0 and payload["results"][name]["ms"]["torch"] > 0
    assert "geometric mean" in result.output and payload["geomean"] > 0


def test_an_unknown_row_is_named():
    pytest.importorskip("torch")
    from distgraph.bench.layers import command

    result = CliRunner().invoke(command, ["--only", "softmaxx"])
    assert result.exit_code != 0 and "no row named ['softmaxx']" in result.output
