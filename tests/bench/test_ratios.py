"""`bench allreduce` and `bench io` label their sizes MiB and point their ratio the same way: speed-up vs
torch = torch's time ÷ the peer's (> 1: faster than torch)."""

import json

import pytest
from click.testing import CliRunner


def test_allreduce_rows_give_speed_up_as_torch_time_over_the_peers():
    from distgraph.bench.allreduce import HEADERS, size_rows

    seconds = {"shm": 0.001, "shm slot": 0.0005, "torch gloo": 0.004}
    rows = size_rows(4, 4 * 2**20, seconds, 0.0002, 1.0)
    assert HEADERS[0] == "MiB" and HEADERS[-1] == "speed-up vs torch gloo"
    assert {r[1]: r[-1] for r in rows[:-1]} == {"shm": 4.0, "shm slot": 8.0, "torch gloo": 1.0}
    assert rows[-1][1] == "memcpy (1 rank)" and rows[-1][-1] == ""


def test_io_labels_mib_and_gives_speed_up_as_torch_time_over_the_peers(tmp_path):
    pytest.importorskip("torch")
    from distgraph.bench.io import command

    out = tmp_path / "io.json"
    result = CliRunner().invoke(command, ["--mb", "1", "--repeat", "1", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "checkpoint of 1 MiB float32" in result.output and "| speed-up vs torch |" in result.output
    for kind in json.loads(out.read_text())["results"].values():
        for op in ("save", "load"):
            seconds, speedups = kind[f"{op}_s"], kind[f"{op}_speedup_vs_torch"]
            assert speedups == pytest.approx({p: seconds["torch"] / t for p, t in seconds.items()})
            assert speedups["torch"] == 1.0
