"""torch.distributed.nn.functional's differentiable collectives and Horovod's differentiable allreduce /
allgather / broadcast (and its in-place forms), on 2 real Ray ranks: each rank's outputs and its inputs' gradients equal one torch graph of both
ranks (float64), where each rank's loss weighs its outputs and the gradient of an input is the total loss's."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.distributed.horovod as hvd
from distgraph.distributed.nn import functional as dnf
from distgraph.errors import ConfigError

torch = pytest.importorskip("torch")  # the reference these tests compare with


def _inputs(case, r):
    """Rank r's input arrays for `case` (the same on the driver, for torch's graph)."""
    rng = np.random.default_rng(100 * len(case) + r)
    rows = {"all_to_all_single": 3 + r, "hvd allgather": 2 + r}.get(case, 2)
    count = {"scatter": 2, "reduce_scatter": 2, "all_to_all": 2}.get(case, 1)
    return [rng.standard_normal((rows, 3)) for _ in range(count)]


def _ours(case, xs, group=None, process_set=None):
    """Rank-local: the collective on this rank's inputs → a list of outputs; over `group` (torch's) or
    `process_set` (Horovod's) of two ranks, roots named by their global ranks."""
    first, second = (0, 1) if group is None else group.ranks
    if case == "all_reduce sum":
        return [dnf.all_reduce(xs[0], group=group)]
    if case == "all_reduce avg":
        return [dnf.all_reduce(xs[0], op=dist.ReduceOp.AVG, group=group)]
    if case == "broadcast":
        return [dnf.broadcast(xs[0], src=second, group=group)]
    if case == "reduce":
        return [dnf.reduce(xs[0], dst=first, group=group)]
    if case == "gather":
        return list(dnf.gather(xs[0], dst=first, group=group))
    if case == "scatter":
        return [dnf.scatter(xs, src=first, group=group)]
    if case == "all_gather":
        return list(dnf.all_gather(xs[0], group=group))
    if case == "reduce_scatter":
        return [dnf.reduce_scatter(dg.zeros(2, 3, dtype=dg.float64), xs, group=group)]
    if case == "all_to_all":
        return list(dnf.all_to_all([dg.zeros(2, 3, dtype=dg.float64) for _ in range(2)], xs, group=group))
    if case == "all_to_all_single":
        send = [[1, 2], [3, 1]][dist.get_rank(group)]
        take = [[1, 3], [2, 1]][dist.get_rank(group)]
        return [dnf.all_to_all_single(dg.zeros(sum(take), 3, dtype=dg.float64), xs[0], take, send, group=group)]
    if case == "hvd allreduce":
        return [hvd.allreduce(xs[0], prescale_factor=2.0, postscale_factor=0.25, process_set=process_set)]
    if case == "hvd allgather":
        return [hvd.allgather(xs[0], process_set=process_set)]
    if case == "hvd broadcast":
        return [hvd.broadcast(xs[0], root_rank=first, process_set=process_set)]
    raise AssertionError(case)


def _theirs(case, x):
    """torch: x[r] = rank r's inputs → per rank, its outputs (one graph over both ranks)."""
    a, b = x[0][0], x[1][0]
    return {
        "all_reduce sum": lambda: [[a + b], [a + b]],
        "all_reduce avg": lambda: [[(a + b) / 2], [(a + b) / 2]],
        "broadcast": lambda: [[b], [b]],
        "reduce": lambda: [[a + b], [b]],  # (rank 1's output is its own input: its loss does not weigh it)
        "gather": lambda: [[a, b], [a * 0, b * 0]],
        "scatter": lambda: [[x[0][0]], [x[0][1]]],
        "all_gather": lambda: [[a, b], [a, b]],
        "reduce_scatter": lambda: [[x[0][0] + x[1][0]], [x[0][1] + x[1][1]]],
        "all_to_all": lambda: [[x[0][0], x[1][0]], [x[0][1], x[1][1]]],
        "all_to_all_single": lambda: [[torch.cat([a[:1], b[:3]])], [torch.cat([a[1:], b[3:]])]],
        "hvd allreduce": lambda: [[(2 * a + 2 * b) / 2 * 0.25], [(2 * a + 2 * b) / 2 * 0.25]],
        "hvd allgather": lambda: [[torch.cat([a, b])], [torch.cat([a, b])]],
        "hvd broadcast": lambda: [[_averaged(a)], [_averaged(a)]],
    }[case]()


def _averaged(a):
    """a, with half its gradient: Horovod's broadcast averages the 2 ranks' gradients where torch's sums them."""
    return a * 0.5 + (a * 0.5).detach()


CASES = ("all_reduce sum", "all_reduce avg", "broadcast", "reduce", "gather", "scatter", "all_gather",
         "reduce_scatter", "all_to_all", "all_to_all_single", "hvd allreduce", "hvd allgather", "hvd broadcast")  # fmt: skip


def _weights(case, r, outputs):
    rng = np.random.default_rng(7 + r)
    skip = case == "reduce" and r == 1  # a non-destination's reduce output is not the reduction (torch's too)
    return [np.zeros(o.shape) if skip else rng.standard_normal(o.shape) for o in outputs]


def _every_case(group=None, process_set=None):
    """Each case's outputs and input gradients on this rank (its place in the group choosing its inputs)."""
    out, me = {}, dist.get_rank(group)
    for case in CASES:
        xs = [dg.tensor(a, requires_grad=True) for a in _inputs(case, me)]
        outputs = _ours(case, xs, group, process_set)
        loss = sum((o * dg.tensor(w)).sum() for o, w in zip(outputs, _weights(case, me, outputs)))
        loss.backward()
        out[case] = ([o.detach().numpy() for o in outputs], [x.grad.numpy() for x in xs])
    return out


def _on_each_rank():
    out = _every_case()
    with pytest.raises(ConfigError, match="op=MAX has no gradient an all-reduce gives"):
        dnf.all_reduce(dg.ones(2), op=dist.ReduceOp.MAX)
    with pytest.raises(ConfigError, match="The op parameter supersedes average"):
        hvd.allreduce(dg.ones(2), average=True, op=hvd.Sum)
    hvd.init()
    t = dg.tensor(np.array([1.0, 2.0]) * (hvd.rank() + 1))
    hvd.allreduce_(t, op=hvd.Sum)
    out["in place"] = t.numpy()
    out["max"] = hvd.allreduce(dg.tensor(np.array([1.0, -2.0]) * (hvd.rank() + 1)), op=hvd.Max).numpy()
    model = dg.nn.Linear(2, 2)
    with dg.no_grad():
        model.weight.fill_(float(hvd.rank()))
    hvd.broadcast_parameters(model.state_dict(), root_rank=1)
    out["broadcast parameters"] = model.weight.detach().numpy()
    with pytest.raises(
        ConfigError, match=r"broadcast: the ranks name different sources \(src 0: 1 rank\(s\), src 1: 1 rank\(s\)\)"
    ):
        dist.broadcast(dg.ones(2), src=dist.rank())
    # Horovod's own keywords on the rest of its names
    out["object"] = hvd.broadcast_object({"from": hvd.rank()}, root_rank=1, name="cfg")
    out["objects"] = hvd.allgather_object(hvd.rank(), name="ranks")
    pair = [dg.tensor(np.array([1.0, 2.0])), dg.tensor(np.array([3.0]))]
    out["grouped"] = [t.numpy() for t in hvd.grouped_allreduce(pair, average=False, name="g")]
    out["scattered"] = hvd.reducescatter(dg.tensor(np.arange(4.0)), name="rs", op=hvd.Sum).numpy()
    out["alltoall"] = hvd.alltoall(dg.tensor(np.arange(2.0) + 10 * hvd.rank()), name="a2a").numpy()
    return out


@pytest.mark.ray
def test_differentiable_collectives_give_torchs_values_and_gradients_of_both_ranks_graph(ray_session):
    ranks = dist.launch(_on_each_rank, workers=2, cpus_per_worker=0.5, timeout_s=60)
    _assert_every_case_as_torchs(ranks)
    for r in range(2):
        np.testing.assert_array_equal(ranks[r]["in place"], [3.0, 6.0])  # 1·[1, 2] + 2·[1, 2]
        np.testing.assert_array_equal(ranks[r]["max"], [2.0, -2.0])
        np.testing.assert_array_equal(ranks[r]["broadcast parameters"], np.ones((2, 2)))
        assert ranks[r]["object"] == {"from": 1} and ranks[r]["objects"] == [0, 1]
        np.testing.assert_array_equal(ranks[r]["grouped"][0], [2.0, 4.0])
        np.testing.assert_array_equal(ranks[r]["grouped"][1], [6.0])
        np.testing.assert_array_equal(ranks[r]["scattered"], np.arange(4.0)[2 * r : 2 * r + 2] * 2)
        np.testing.assert_array_equal(ranks[r]["alltoall"], [r, 10 + r])


def _assert_every_case_as_torchs(ranks):
    """`ranks`: the two ranks' `_every_case` → each equals torch's graph of both ranks."""
    for case in CASES:
        x = [[torch.tensor(a, requires_grad=True) for a in _inputs(case, r)] for r in range(2)]
        per_rank = _theirs(case, x)
        loss = sum(
            (o * torch.tensor(w)).sum() for r in range(2) for o, w in zip(per_rank[r], _weights(case, r, per_rank[r]))
        )
        loss.backward()
        for r in range(2):
            outputs, grads = ranks[r][case]
            assert len(outputs) == len(per_rank[r]), case
            for o, e in zip(outputs, per_rank[r]):
                np.testing.assert_allclose(o, e.detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=f"{case} rank {r}")
            for g, xi in zip(grads, x[r]):
                expected = np.zeros(xi.shape) if xi.grad is None else xi.grad.numpy()
                if case == "hvd allgather":
                    expected = expected / 2  # Horovod averages the ranks' gradients of each rank's rows
                np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-12, err_msg=f"{case} grad rank {r}")


def _in_two_sets():
    """4 ranks: every case over {0, 2} and over {1, 3} at once — torch's through new_group, Horovod's through
    process sets — then Horovod's other ops in the sets."""
    groups = [dist.new_group([0, 2]), dist.new_group([1, 3])]
    even, odd = hvd.ProcessSet([0, 2]), hvd.ProcessSet([1, 3])
    hvd.init(process_sets=[even, odd])
    low = hvd.add_process_set([0, 1])  # a third set, dynamic: removed below
    me, other = (even, odd) if dist.rank() % 2 == 0 else (odd, even)
    out = _every_case(groups[dist.rank() % 2], me)
    out["set"] = (me.process_set_id, me.rank(), me.size(), me.included(), low.included())
    t = dg.tensor(np.array([1.0, 2.0]) * (dist.rank() + 1))
    hvd.allreduce_(t, op=hvd.Sum, process_set=me)
    out["in place"] = t.numpy()
    out["object"] = hvd.broadcast_object({"from": dist.rank()}, root_rank=me.ranks[1], process_set=me)
    out["objects"] = hvd.allgather_object(dist.rank(), process_set=me)
    out["alltoall"] = hvd.alltoall(dg.tensor(np.arange(2.0) + 10 * dist.rank()), process_set=me).numpy()
    p = dg.tensor(np.array([float(dist.rank())]), requires_grad=True)
    opt = hvd.DistributedOptimizer(dg.optim.SGD([p], lr=1.0), process_set=me)
    (p * 1.0).sum().backward()
    p.grad.array[...] = dist.rank()  # each rank's own gradient: the set's mean is what the step takes
    opt.step()
    out["optimizer"] = p.detach().numpy()
    hvd.barrier(process_set=me)
    with pytest.raises(ConfigError, match=r"this rank \(\d\) is not in the process set of ranks"):
        hvd.allreduce(dg.ones(1), process_set=other)
    out["removed"] = (hvd.remove_process_set(low), hvd.remove_process_set(low), low.process_set_id)
    hvd.shutdown()
    out["after shutdown"] = me.process_set_id
    return out


@pytest.mark.ray
def test_collectives_over_two_sets_of_four_ranks_give_torchs_values_and_gradients_in_each(ray_session):
    ranks = dist.launch(_in_two_sets, workers=4, cpus_per_worker=0.5, timeout_s=60)
    for pair in ((0, 2), (1, 3)):
        _assert_every_case_as_torchs([ranks[r] for r in pair])
        for place, r in enumerate(pair):
            assert ranks[r]["set"] == (1 + pair[0], place, 2, True, r in (0, 1))
            np.testing.assert_array_equal(ranks[r]["in place"], np.array([1.0, 2.0]) * (pair[0] + pair[1] + 2))
            assert ranks[r]["object"] == {"from": pair[1]} and ranks[r]["objects"] == list(pair)
            np.testing.assert_array_equal(ranks[r]["alltoall"], [pair[0] * 10 + place, pair[1] * 10 + place])
            np.testing.assert_array_equal(ranks[r]["optimizer"], [r - (pair[0] + pair[1]) / 2])
            assert ranks[r]["removed"] == (True, False, None) and ranks[r]["after shutdown"] is None


def test_alone_each_collective_is_the_identity_and_so_is_its_gradient():
    """World size 1 (no launch), as one Horovod process or a torch group of one."""
    x = dg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    z = dg.zeros(2, 3, dtype=dg.float64)
    for name, run in {
        "all_reduce": lambda: [dnf.all_reduce(x, op=dist.ReduceOp.AVG)], "broadcast": lambda: [dnf.broadcast(x, 0)],
        "reduce": lambda: [dnf.reduce(x, 0)], "gather": lambda: dnf.gather(x, 0), "scatter": lambda: [dnf.scatter([x], 0)],
        "all_gather": lambda: dnf.all_gather(x), "reduce_scatter": lambda: [dnf.reduce_scatter(z, [x])],
        "all_to_all": lambda: dnf.all_to_all([z], [x]), "all_to_all_single": lambda: [dnf.all_to_all_single(z, x)],
        "hvd allreduce": lambda: [hvd.allreduce(x, compression=hvd.Compression.fp16)],
        "hvd allgather": lambda: [hvd.allgather(x)], "hvd broadcast": lambda: [hvd.broadcast(x, 0)],
    }.items():  # fmt: skip
        x.grad = None
        (out,) = run()
        np.testing.assert_array_equal(out.detach().numpy(), x.detach().numpy(), err_msg=name)
        (out * dg.tensor(np.full((2, 3), 3.0))).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 3.0), err_msg=name)
        assert out is not x and not np.shares_memory(out.detach().numpy(), x.detach().numpy()), name
    with pytest.raises(ConfigError, match=r"all_reduce: group must be the launch's \(None or dist.group.WORLD\)"):
        dnf.all_reduce(x, group=object())
    assert dnf.all_reduce(x, group=dist.group.WORLD).tolist() == x.tolist()  # torch's callers name the group
    with pytest.raises(ConfigError, match="allreduce: process_set must be an hvd.ProcessSet"):
        hvd.allreduce(x, process_set=object())
    with pytest.raises(ConfigError, match="allreduce: op=max is not differentiable here"):
        hvd.allreduce(x, op=hvd.Max)
    assert hvd.allreduce(x.detach(), op=hvd.Max).tolist() == x.tolist()
