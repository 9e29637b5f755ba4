"""The benchmarks' command line: every one takes the same `--json-out PATH` (default `bench-out/NAME.json`)
and says where its figures went; bad numbers and lists are usage errors naming the option; a distgraph
error in any subcommand ends it with one line, not a traceback."""

import json

import click
import pytest
from click.testing import CliRunner

from distgraph.cli import bench


def test_every_benchmark_takes_json_out_with_its_own_default():
    ctx = click.Context(bench)
    commands = {name: bench.get_command(ctx, name) for name in bench.list_commands(ctx)}
    commands = {name: c for name, c in commands.items() if c is not None}  # (helper modules have no command)
    assert {"allreduce", "async_slow", "dispatch", "scaling", "soak", "simulate", "ops", "mlp", "graph", "io"} <= set(
        commands
    )
    for name, command in commands.items():
        options = {o.name: o for o in command.params}
        assert "json_out" in options, f"bench {name} has no --json-out"
        assert options["json_out"].opts == ["--json-out"] and options["json_out"].default == f"bench-out/{name}.json"


def test_simulate_writes_its_default_json_and_an_empty_path_writes_none(tmp_path):
    from distgraph.bench.simulate import command

    result = CliRunner().invoke(command, ["--step-time", "0.1", "--params", "1e6"])
    assert result.exit_code == 0, result.output
    assert "wrote bench-out/simulate.json" in result.output
    assert json.loads((tmp_path / "bench-out" / "simulate.json").read_text())["prediction"]["rows"]
    (tmp_path / "bench-out" / "simulate.json").unlink()
    result = CliRunner().invoke(command, ["--step-time", "0.1", "--params", "1e6", "--json-out", ""])
    assert result.exit_code == 0, result.output
    assert "wrote" not in result.output and not (tmp_path / "bench-out" / "simulate.json").exists()


def test_a_json_out_it_cannot_write_fails_before_the_benchmark_runs(tmp_path):
    from distgraph.bench.simulate import command

    (tmp_path / "afile").write_text("")
    for bad, says in [(tmp_path / "afile" / "x.json", "cannot make the folder"), (tmp_path, "is a folder")]:
        result = CliRunner().invoke(command, ["--step-time", "0.1", "--json-out", str(bad)])
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--json-out'" in result.output and says in result.output
        assert "α-β model" not in result.output  # nothing was computed


def test_lists_and_counts_are_checked_before_anything_runs():
    from distgraph.bench.allreduce import command as allreduce
    from distgraph.bench.scaling import command as scaling
    from distgraph.bench.soak import command as soak

    for command, args, says in [
        (scaling, ["--workers", "0"], "Invalid value for '--workers': '0': every value must be positive"),
        (scaling, ["--workers", "1,a"], "'1,a' is not a comma-separated list of positive ints"),
        (scaling, ["--sizes", "32,-4,10"], "Invalid value for '--sizes'"),
        (allreduce, ["--sizes", "x"], "'x' is not a comma-separated list of positive numbers"),
        (soak, ["--workers", "0"], "Invalid value for '--workers': 0 is not in the range x>=1"),
    ]:
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2 and says in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_a_distgraph_error_in_a_subcommand_is_one_line(tmp_path):
    from distgraph.cli import main

    (tmp_path / "x.dg").write_bytes(b"abc")
    result = CliRunner().invoke(main, ["graph", "show", str(tmp_path / "x.dg")])
    assert result.exit_code == 1, result.output
    assert (
        result.output.strip()
        == f"Error: FileFormatError: {tmp_path / 'x.dg'}: not a distgraph file (too short: 3 bytes)"
    )


def test_bench_mlp_runs_on_the_device_asked_for_and_names_a_device_it_cannot_use(device):
    """`--device cuda` times distgraph on cupy against torch on the GPU; a device that is not there is one
    line naming it, not a traceback."""
    from distgraph.bench.mlp import command

    pytest.importorskip("torch")  # the peer it times
    result = CliRunner().invoke(command, ["--device", "tpu", "--json-out", ""])
    assert result.exit_code != 0 and "bench mlp: unknown device 'tpu'" in result.output
    result = CliRunner().invoke(
        command, ["--device", device, "--repeat", "1", "--model", "overhead-bound", "--json-out", ""]
    )
    assert result.exit_code == 0, result.output
    assert (f"on {device}" if device != "cpu" else "1 BLAS threads") in result.output
    assert "| overhead-bound |" in result.output
