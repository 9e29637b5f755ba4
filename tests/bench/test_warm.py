"""`bench warm` on small settings: the cold block starts new processes for every Trainer (or launch), the warm
block none after its first."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.ray
SMALL = "--sizes 8,16,3 --batch 16 --steps 2 --trainers 2 --rounds 1"


def _bench(tmp_path, *extra):
    """`bench warm` on SMALL settings → (its output, the JSON's results)."""
    from distgraph.bench.warm import command

    out = tmp_path / "warm.json"
    result = CliRunner().invoke(command, [*SMALL.split(), *extra, "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text())["results"]


def test_warm_trainers_start_no_process_and_the_ratio_is_printed(ray_session, tmp_path):
    """With the store's shards as actors: a cold Trainer starts its two workers and its shards, a warm one none."""
    output, report = _bench(tmp_path, "--allreduce", "store")
    assert "new processes / warm workers: " in output
    cold, warm = report["cold"], report["warm"]
    assert all(n >= 3 for _, n in cold["runs"]) and all(n == 0 for _, n in warm["runs"])
    assert len(cold["runs"]) == len(warm["runs"]) == 2 and cold["seconds"] > 0 and warm["seconds"] > 0


def test_warm_launches_start_no_process(ray_session, tmp_path):
    """`--launch`: a cold launch starts its two ranks, a warm one none (the ranks of the launch before it)."""
    output, report = _bench(tmp_path, "--launch")
    assert "the time a launch takes from its call to its return" in output
    assert all(n == 2 for _, n in report["cold"]["runs"]) and all(n == 0 for _, n in report["warm"]["runs"])
