"""torch.distributed's subgroups (distributed/subgroups.py) on 3 real Ray ranks: `new_group(ranks)` and every
collective's `group=` run over the members alone, src / dst are global ranks, a rank outside the group takes no
part, two overlapping groups and the launch's own group interleave, and bad ranks are refused by name."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
from distgraph.errors import ConfigError

pytestmark = pytest.mark.ray


def _subgroups():
    r = dist.get_rank()
    ends, left = dist.new_group([2, 0]), dist.new_group([0, 1])  # every rank makes both, in the same order
    out = {"place": (dist.get_rank(ends), dist.get_world_size(ends), dist.get_process_group_ranks(ends))}
    t = dg.tensor(np.full(3, 10.0 * (r + 1), np.float32))
    out["reduced"] = dist.all_reduce(t, group=ends)  # None on rank 1, which is not a member
    out["sum"] = t.numpy().tolist()
    b = dg.tensor(np.array([float(r)]))
    dist.broadcast(b, src=2, group=ends)  # src: a global rank
    out["broadcast"] = b.item()
    g = dg.tensor(np.array([float(r)]))
    dist.broadcast(g, group=ends, group_src=1)  # torch 2.13's group_src: the root's rank in the group ([0, 2]: 2)
    out["group_src"] = g.item()
    gathered = [None] * 2
    if r in (0, 1):
        dist.all_gather_object(gathered, {"rank": r}, group=left)
    out["objects"] = gathered
    m = dg.tensor(np.array([float(r + 1)]))
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=left)  # a gathered ReduceOp, over the members
    out["max"] = m.item()
    w = dg.tensor(np.ones(2))
    dist.all_reduce(w)  # the launch's group, after the subgroups'
    out["world"] = w.numpy().tolist()
    dist.barrier(group=ends)
    errors = []
    for call in (
        lambda: dist.broadcast(b, src=1, group=ends),
        lambda: dist.new_group([0, 3]),
        lambda: dist.broadcast(b, src=0, group=ends, group_src=0),
    ):
        try:
            call()
        except ConfigError as exc:
            errors.append(str(exc))
    out["errors"] = errors  # (rank 1, outside `ends`, is not asked about its src)
    out["global"] = (dist.get_global_rank(ends, 1), dist.get_group_rank(ends, 2))
    return out


def test_subgroups_run_their_collectives_over_their_members_alone(ray_session):
    out = dist.launch(_subgroups, workers=3, cpus_per_worker=0.5, timeout_s=60)
    assert [o["place"] for o in out] == [(0, 2, [0, 2]), (-1, 2, [0, 2]), (1, 2, [0, 2])]
    assert out[1]["reduced"] is None and out[1]["sum"] == [20.0] * 3  # rank 1 took no part: its own values
    assert out[0]["sum"] == out[2]["sum"] == [40.0] * 3  # 10 + 30
    assert [o["broadcast"] for o in out] == [2.0, 1.0, 2.0]
    assert [o["group_src"] for o in out] == [2.0, 1.0, 2.0]  # rank 1, outside the group, keeps its own
    assert out[0]["objects"] == out[1]["objects"] == [{"rank": 0}, {"rank": 1}] and out[2]["objects"] == [None] * 2
    assert [o["max"] for o in out] == [2.0, 2.0, 3.0]  # rank 2 is outside [0, 1]: its own
    assert all(o["world"] == [3.0, 3.0] for o in out)
    assert out[0]["errors"] == [
        "broadcast: Global rank 1 is not part of group [0, 2]",
        "new_group: ranks [0, 3] are not the launch's ranks [0, 1, 2]",
        "broadcast: Can not specify both group_src and src (torch's rule)",
    ]
    assert out[1]["errors"] == [  # (rank 1, outside `ends`, is not asked about its src; both roots: refused anywhere)
        "new_group: ranks [0, 3] are not the launch's ranks [0, 1, 2]",
        "broadcast: Can not specify both group_src and src (torch's rule)",
    ]
    assert all(o["global"] == (2, 1) for o in out)


def test_a_subgroups_place_is_seen_only_by_the_thread_running_its_collective():
    """A subgroup's collective overlays its place on its own thread: a bucket thread reducing for the launch at
    the same time (DDP's, through a comm hook) still reads the launch's rank, world size and communicator."""
    import threading

    from distgraph.distributed import loop

    inside, seen = threading.Event(), {}

    def other_thread():
        inside.wait(10)
        seen["other"] = (loop.rank(), loop.world_size(), loop._context["comm"], loop._context.get("subgroup"))

    t = threading.Thread(target=other_thread)
    t.start()
    with loop.in_group(1, 2, "the group's", None, subgroup="g"):
        seen["inside"] = (loop.rank(), loop.world_size(), loop._context["comm"], loop._context.get("subgroup"))
        inside.set()
        t.join(10)
    assert seen["inside"] == (1, 2, "the group's", "g")
    assert seen["other"] == (0, 1, None, None)  # the launch's: rank 0 of 1 outside a launch
    assert (loop.rank(), loop._context.get("subgroup")) == (0, None)  # and this thread's again after


def _locally_synchronized_groups():
    """torch's use_local_synchronization=True: only the members call new_group. Ranks {0, 1} and {2, 3} make a
    group each (the first group every one of them makes), {0, 1} a second one; then every rank makes one."""
    r = dist.get_rank()
    pair = [0, 1] if r < 2 else [2, 3]
    mine = dist.new_group(pair, use_local_synchronization=True)
    t = dg.tensor(np.full(2, float(r + 1)))
    dist.all_reduce(t, group=mine)
    out = {"name": mine.name.split(".", 1)[1], "sum": t.tolist()}
    if r < 2:
        again = dist.new_group([1, 0], use_local_synchronization=True)  # the same ranks again: a group of its own
        m = dg.tensor(np.array([10.0 * (r + 1)]))
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=again)
        out["again"], out["max"] = again.name.split(".", 1)[1], m.item()
    ends = dist.new_group([0, 3])  # every rank: its count is not the local groups' (ranks made 2 or 1 of those)
    e = dg.tensor(np.array([float(r)]))
    dist.all_reduce(e, group=ends)
    out["ends"], out["ends sum"] = ends.name.split(".", 1)[1], e.item()
    return out


def test_groups_made_by_their_members_alone_have_names_of_their_own(ray_session):
    out = dist.launch(_locally_synchronized_groups, workers=4, cpus_per_worker=0.5, timeout_s=60)
    assert [o["name"] for o in out] == ["l0-1.1", "l0-1.1", "l2-3.1", "l2-3.1"]  # not one name for both pairs
    assert [o["sum"] for o in out] == [[3.0, 3.0], [3.0, 3.0], [7.0, 7.0], [7.0, 7.0]]
    assert [(o["again"], o["max"]) for o in out[:2]] == [("l0-1.2", 20.0)] * 2
    assert [o["ends"] for o in out] == ["g1"] * 4
    assert [o["ends sum"] for o in out] == [3.0, 1.0, 2.0, 3.0]  # ranks 1 and 2, outside [0, 3]: their own
