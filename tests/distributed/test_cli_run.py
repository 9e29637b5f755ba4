"""`distgraph run --workers N SCRIPT ARGS`: the script runs once per rank, as torchrun starts it, on real Ray."""

import json
import os

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


RESTARTING_SCRIPT = """
import json, os, sys
import distgraph as dg

dist = dg.distributed
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
if attempt == 0 and dist.rank() == 1:
    raise KeyError("rank 1 lost its batch")  # (a script's own error: launch may raise it as itself)
with open(f"{sys.argv[1]}.{dist.rank()}", "w") as f:
    json.dump([attempt, os.environ["TORCHELASTIC_MAX_RESTARTS"]], f)
"""


def test_max_restarts_starts_every_rank_again_after_a_failure_as_torchrun(ray_session, tmp_path):
    (tmp_path / "flaky.py").write_text(RESTARTING_SCRIPT)
    args = ["run", "-np", "2", "--cpus-per-worker", "0.5", "--timeout", "30", "--max_restarts=2",
            str(tmp_path / "flaky.py"), str(tmp_path / "r")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "rank 1 lost its batch" in result.output and "restarting all 2 ranks (1/2)" in result.output
    assert [json.loads((tmp_path / f"r.{r}").read_text()) for r in range(2)] == [[1, "2"], [1, "2"]]
    result = CliRunner().invoke(main, [a for a in args if a != "--max_restarts=2"])  # none allowed: it fails
    assert result.exit_code == 1 and "rank 1 lost its batch" in result.output and "restarting" not in result.output


TORCHRUN_SCRIPT = """
import json, os, sys
import numpy as np
import distgraph as dg
import distgraph.distributed as dist  # where a torchrun script imports torch.distributed

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
local = int(os.environ.get("LOCAL_RANK", "0"))
t = dg.tensor(np.full(2, rank + 1.0))
work = dist.all_reduce(t, op=dist.ReduceOp.SUM, group=dist.group.WORLD, async_op=True)
work.wait()
stacked = dg.zeros(world, 2, dtype=dg.float64)
dist.all_gather_into_tensor(stacked, dg.tensor(np.full(2, 10.0 * rank)))
objects = [{"lr": 0.1}, "cfg"] if rank == 0 else [None, None]
dist.broadcast_object_list(objects, src=0)
gathered = [None] * world if rank == 0 else None
dist.gather_object(rank * 7, gathered, dst=0)
everyone = [None] * world
dist.all_gather_object(everyone, f"rank{rank}")
mine = [None]
dist.scatter_object_list(mine, [f"for{r}" for r in range(world)] if rank == 0 else None, src=0)
group = dist.new_group(list(range(world)))
dist.monitored_barrier(group)
out = {"rank": rank, "world": world, "env": [os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
       "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "ROLE_RANK")], "local": local, "sum": t.tolist(), "stacked": stacked.tolist(), "objects": objects,
       "gathered": gathered, "everyone": everyone, "mine": mine, "backend": dist.get_backend(),
       "initialized": dist.is_initialized()}
dist.destroy_process_group()
with open(f"{sys.argv[1]}.{rank}", "w") as f:
    json.dump(out, f)
"""


def test_a_script_written_for_torchrun_runs_unchanged_under_run_and_alone(ray_session, tmp_path):
    import subprocess
    import sys

    (tmp_path / "torch_style.py").write_text(TORCHRUN_SCRIPT)
    args = [
        "run",
        "--nproc_per_node=2",
        "--cpus-per-worker",
        "0.5",
        str(tmp_path / "torch_style.py"),
        str(tmp_path / "r"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    ranks = [json.loads((tmp_path / f"r.{r}").read_text()) for r in range(2)]
    for r, got in enumerate(ranks):
        assert got["rank"] == r and got["world"] == 2 and got["local"] == r
        assert got["env"] == [str(r), "2", str(r), "2", "0", "0", str(r)]  # torchrun's, one node
        assert got["sum"] == [3.0, 3.0] and got["stacked"] == [[0.0, 0.0], [10.0, 10.0]]
        assert got["objects"] == [{"lr": 0.1}, "cfg"] and got["everyone"] == ["rank0", "rank1"]
        assert got["gathered"] == ([0, 7] if r == 0 else None) and got["mine"] == [f"for{r}"]
        assert got["backend"] == "shm" and got["initialized"]
    alone = subprocess.run([sys.executable, str(tmp_path / "torch_style.py"), str(tmp_path / "a")], capture_output=True,
                           text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "LOCAL_RANK"})  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-2000:]
    got = json.loads((tmp_path / "a.0").read_text())
    assert got["world"] == 1 and got["sum"] == [1.0, 1.0] and got["stacked"] == [[0.0, 0.0]] and got["mine"] == ["for0"]
    assert got["env"] == [None] * 7 and got["backend"] == "gloo"  # no launch: the backend it asked for


def test_a_scripts_own_error_is_shown_with_its_rank_and_traceback(ray_session, tmp_path):
    """torchrun prints the failing rank's traceback; `distgraph run` ended with the error's one line alone."""
    (tmp_path / "fails.py").write_text(
        "import distgraph as dg\n\ndef check(rank):\n    if rank == 1:\n        raise ValueError('bad batch')\n\n"
        "check(dg.distributed.rank())\n"
    )
    result = CliRunner().invoke(main, ["run", "--workers", "2", "--cpus-per-worker", "0.5", str(tmp_path / "fails.py")])
    assert result.exit_code == 1 and "ValueError: bad batch" in result.output, result.output
    assert "raised on rank 1 of the launch" in result.output and "in check" in result.output, result.output
