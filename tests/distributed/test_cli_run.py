"""`distgraph run --workers N SCRIPT ARGS`: the script runs once per rank, as torchrun starts it, on real Ray."""

import json

import pytest
from click.testing import CliRunner

from distgraph.cli import main

pytestmark = pytest.mark.ray

SCRIPT = """
import json, sys
import distgraph as dg
from helper_beside import SCALE  # a module next to the script

dist = dg.distributed
t = dg.tensor([SCALE * (dist.rank() + 1)])
dist.all_reduce(t)
out = sys.argv[sys.argv.index("--out") + 1]
with open(f"{out}.{dist.rank()}", "w") as f:
    json.dump({"rank": dist.rank(), "world": dist.world_size(), "sum": t.item(), "argv": sys.argv[1:]}, f)
if "--exit-1" in sys.argv and dist.rank() == 1:
    sys.exit(1)
"""


def test_run_starts_the_script_on_every_rank_with_its_arguments(ray_session, tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT)
    (tmp_path / "helper_beside.py").write_text("SCALE = 10.0\n")
    out = tmp_path / "r"
    args = ["run", "--workers", "2", "--cpus-per-worker", "0.5", str(tmp_path / "train.py"), "--lr", "0.1"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    ranks = [json.loads((tmp_path / f"r.{r}").read_text()) for r in range(2)]
    for r, got in enumerate(ranks):
        assert got == {"rank": r, "world": 2, "sum": 30.0, "argv": ["--lr", "0.1", "--out", str(out)]}


def test_a_rank_that_exits_non_zero_or_a_broken_script_ends_run_with_one_line(ray_session, tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT)
    (tmp_path / "helper_beside.py").write_text("SCALE = 1.0\n")
    args = ["run", "--workers", "2", "--cpus-per-worker", "0.5", "--timeout", "30", str(tmp_path / "train.py")]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "r"), "--exit-1"])
    assert result.exit_code == 1 and "exited with status 1" in result.output, result.output
    assert "failed on rank 1" in result.output and len(result.output.strip().splitlines()) == 1
    (tmp_path / "bad.py").write_text("def f(:\n")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "bad.py")])
    assert result.exit_code == 1 and f"{tmp_path / 'bad.py'}:1: invalid syntax" in result.output, result.output
