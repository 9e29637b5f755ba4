"""`launch(..., max_restarts=K)`, torchrun's fault tolerance: a rank's failure stops every rank and starts a
fresh group, which resumes from the function's own checkpoint; and torchrun's MASTER_ADDR / MASTER_PORT /
TORCHELASTIC_* in every rank's environment — on a real local Ray."""

import json
import os
import time

import pytest

import distgraph as dg
import distgraph.distributed as dist
from distgraph.errors import ConfigError, DistributedError, PeerExitedError

TORCHRUN_VARS = ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
                 "TORCHELASTIC_RUN_ID", "ROLE_WORLD_SIZE")  # fmt: skip


def _resuming_loop(folder, steps=4, die_at=2):
    """Each rank keeps its own checkpoint (the next step, a running sum); rank 1's process dies at the start of
    step `die_at` in the first attempt, before that step's all-reduce, so both checkpoints say the same step."""
    r = dist.rank()
    path = os.path.join(folder, f"ckpt.{r}.json")
    state = {"step": 0, "total": 0.0, "resumed_at": None}
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        state = {**saved, "resumed_at": saved["step"]}
    for step in range(state["step"], steps):
        if step == die_at and r == 1 and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
            os._exit(1)
        t = dg.tensor([float(step + 1)])
        dist.all_reduce(t)
        state.update(step=step + 1, total=state["total"] + t.item())
        with open(path, "w") as f:
            json.dump({"step": state["step"], "total": state["total"]}, f)
    return {**state, "env": {k: os.environ.get(k) for k in TORCHRUN_VARS}, "elastic": dist.is_torchelastic_launched()}


@pytest.mark.ray
def test_a_rank_that_dies_restarts_every_rank_which_resume_from_their_checkpoints(ray_session, tmp_path, capsys):
    out = dist.launch(_resuming_loop, workers=2, args=(str(tmp_path),), cpus_per_worker=0.5, timeout_s=30,
                      max_restarts=1)  # fmt: skip
    for got in out:
        assert got["step"] == 4 and got["total"] == 2 * (1 + 2 + 3 + 4) and got["resumed_at"] == 2
        assert got["env"]["TORCHELASTIC_RESTART_COUNT"] == "1" and got["env"]["TORCHELASTIC_MAX_RESTARTS"] == "1"
        assert got["elastic"] and got["env"]["ROLE_WORLD_SIZE"] == "2"
    assert out[0]["env"] == out[1]["env"]  # MASTER_ADDR/PORT, the run id: the launch's, alike on every rank
    assert "the worker of rank 1 died" in capsys.readouterr().err  # the restart, said on stderr


@pytest.mark.ray
def test_with_no_restarts_a_dead_rank_ends_the_launch_naming_it(ray_session, tmp_path):
    with pytest.raises(DistributedError, match=r"the worker of rank 1 died during _resuming_loop"):
        dist.launch(_resuming_loop, workers=2, args=(str(tmp_path),), cpus_per_worker=0.5, timeout_s=30)


def _peer_error_before_the_death_news():
    """Rank 0 fails at once with the error a barrier gives when a peer's process is gone; rank 1's process dies
    a moment later: the driver has rank 0's error in hand before Ray reports rank 1's death."""
    if dist.rank() == 0:
        raise PeerExitedError("shm all-reduce: process of rank(s) [1] has exited")
    time.sleep(0.3)
    os._exit(1)


@pytest.mark.ray
def test_a_peers_error_that_comes_back_first_still_names_the_rank_that_died(ray_session):
    with pytest.raises(DistributedError, match=r"the worker of rank 1 died during _peer_error_before_the_death_news"):
        dist.launch(_peer_error_before_the_death_news, workers=2, cpus_per_worker=0.5, timeout_s=30)


def _peer_error_of_another_kind():
    """Rank 0 fails with a distgraph error that names its own cause (no rank died); rank 1 is still working."""
    if dist.rank() == 0:
        raise DistributedError("all_reduce: the ranks passed tensors of different shapes")
    time.sleep(60)


@pytest.mark.ray
def test_a_peers_error_that_is_not_a_death_is_raised_without_waiting_for_death_news(ray_session, monkeypatch):
    import distgraph.distributed.loop as loop

    monkeypatch.setattr(loop, "DEATH_NEWS_S", 45.0)  # what the wait would cost, were it waited
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"_peer_error_of_another_kind failed on rank 0: .*different shapes"):
        dist.launch(_peer_error_of_another_kind, workers=2, cpus_per_worker=0.5, timeout_s=90)
    assert time.monotonic() - start < 30


def _master_and_attempt():
    return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), os.environ["TORCHELASTIC_RESTART_COUNT"]


@pytest.mark.ray
def test_every_rank_sees_rank_0s_master_addr_and_port(ray_session):
    import ray

    out = dist.launch(_master_and_attempt, workers=2, cpus_per_worker=0.5, timeout_s=30)
    assert out[0] == out[1] and out[0][0] == ray.util.get_node_ip_address()  # (one node: the driver's)
    assert 0 < out[0][1] < 65536 and out[0][2] == "0"


def _always_fails():
    if dist.rank() == 1:
        raise ValueError(f"bad batch in attempt {os.environ['TORCHELASTIC_RESTART_COUNT']}")
    dist.barrier()  # rank 0 waits for rank 1, which never comes: it is stopped


@pytest.mark.ray
def test_a_function_that_always_fails_exhausts_its_restarts_with_a_clear_error(ray_session, capsys):
    started = time.monotonic()
    with pytest.raises(ValueError, match="bad batch in attempt 1") as failed:
        dist.launch(_always_fails, workers=2, cpus_per_worker=0.5, timeout_s=60, max_restarts=1)
    notes = "\n".join(failed.value.__notes__)
    assert "raised on rank 1 of the launch (attempt 2 of 2)" in notes and "in _always_fails" in notes
    assert "every attempt failed, this the last (attempt 2 of 2) (max_restarts=1)" in notes
    err = capsys.readouterr().err
    assert "ValueError: bad batch in attempt 0 (raised on rank 1 of the launch (attempt 1 of 2))" in err
    assert "restarting all 2 ranks (1/1)" in err
    assert time.monotonic() - started < 40  # no attempt waited out rank 0's barrier (60 s)


def test_max_restarts_must_be_a_count():
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="launch: max_restarts must be an int >= 0"):
            dist.launch(_master_and_attempt, workers=2, max_restarts=bad)


def _config_error_counting(folder):
    """Counts its attempts in a file, then raises a ConfigError (a setting no restart changes)."""
    path = os.path.join(folder, f"attempts.{dist.rank()}")
    with open(path, "a") as f:
        f.write(os.environ["TORCHELASTIC_RESTART_COUNT"])
    raise ConfigError("a setting that no restart changes")


@pytest.mark.ray
def test_a_config_error_is_raised_at_once_without_restarts(ray_session, tmp_path):
    with pytest.raises(ConfigError, match="a setting that no restart changes"):
        dist.launch(_config_error_counting, workers=2, args=(str(tmp_path),), cpus_per_worker=0.5, timeout_s=30,
                    max_restarts=2)  # fmt: skip
    attempts = [open(p).read() for p in sorted(tmp_path.glob("attempts.*"))]
    assert attempts and all(a == "0" for a in attempts)  # one attempt: restart count 0 only


def test_dist_launch_takes_the_launchers_keywords():
    """`dist.launch` (which imports the launcher, and ray, only when called) spells out the launcher's signature."""
    import inspect

    from distgraph.distributed import launcher

    assert inspect.signature(dist.launch) == inspect.signature(launcher.launch)
