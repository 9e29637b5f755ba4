"""torch.distributed's and Horovod's collectives beyond sum / mean (collectives.py) inside `dg.distributed.launch`,
on a real local Ray with 2 ranks, each result checked against the same computation in numpy on the driver; then
the errors, raised alike on every rank (and the ranks still in step after them); then the same API as rank 0 of 1."""

import re
import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
from distgraph.errors import ConfigError, DTypeError, ShapeError

LAUNCH = {"workers": 2, "cpus_per_worker": 0.5, "timeout_s": 60}


def _inputs(r):
    """Rank r's tensors: float32, float64, int64 and bool, with negatives, zeros and ties across the ranks."""
    rng = np.random.default_rng(r)
    return {
        "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f64": np.round(rng.standard_normal(5) * 4, 1),
        "i64": rng.integers(-6, 7, (4,)).astype(np.int64),
        "bool": np.array([True, False, r == 0, True]),
        "rows": np.arange(15, dtype=np.float64).reshape(5, 3) * (r + 1) - 7,  # 5 rows: uneven over 2 ranks
    }


def _t(a):
    return dg.tensor(a.copy())


def _reductions():
    x, r = _inputs(dist.rank()), dist.rank()
    out = {}
    for op in ("max", "min", "product"):
        for k in ("f32", "f64", "i64"):
            t = _t(x[k])
            dist.all_reduce(t, op=getattr(dist.ReduceOp, op.upper()))
            out[f"{op}/{k}"] = t.numpy()
    for op in ("BAND", "BOR", "BXOR"):
        ts = [_t(x["i64"]), _t(x["bool"])]
        dist.all_reduce(ts, op=getattr(dist.ReduceOp, op))
        out[f"{op}/i64"], out[f"{op}/bool"] = (t.numpy() for t in ts)
    t = _t(x["i64"])
    assert dist.all_reduce(t) is None  # in place, returning None, as torch's
    out["sum/i64"] = t.numpy()  # the communicator's own path
    out["grouped"] = [t.numpy() for t in dist.grouped_allreduce([_t(x["f64"]), _t(x["f32"])])]  # Average
    out["grouped_min"] = [t.numpy() for t in dist.grouped_allreduce([_t(x["i64"])], op=dist.Min)]
    t = _t(x["f64"])
    assert dist.reduce(t, dst=1, op=dist.ReduceOp.MAX) is None
    out["reduce"] = t.numpy()
    rst = dg.zeros(3, dtype=dg.float32)
    dist.reduce_scatter_tensor(rst, _t(x["f32"]))  # (2, 3): one (3,) block per rank
    out["reduce_scatter_tensor"] = rst.numpy()
    rs = dg.zeros(3, dtype=dg.float64)
    dist.reduce_scatter(rs, [_t(x["rows"][i]) for i in (0, 4)], op=dist.ReduceOp.PRODUCT)
    out["reduce_scatter"] = rs.numpy()
    out["reducescatter"] = dist.reducescatter(_t(x["rows"])).numpy()
    out["reducescatter_max"] = dist.reducescatter(_t(x["i64"]), op=dist.Max).numpy()
    out["layout"] = (dist.is_initialized(), dist.local_rank(), dist.local_size(), dist.cross_rank(), dist.cross_size())
    return r, out


@pytest.mark.ray
def test_reductions_match_numpy_on_every_rank(ray_session):
    x0, x1 = _inputs(0), _inputs(1)
    both = {k: np.stack([x0[k], x1[k]]) for k in x0}
    ufunc = {"max": np.maximum, "min": np.minimum, "product": np.multiply}
    expect = {f"{op}/{k}": f(x0[k], x1[k]) for op, f in ufunc.items() for k in ("f32", "f64", "i64")}
    for op, f in {"BAND": np.bitwise_and, "BOR": np.bitwise_or, "BXOR": np.bitwise_xor}.items():
        expect[f"{op}/i64"], expect[f"{op}/bool"] = f(x0["i64"], x1["i64"]), f(x0["bool"], x1["bool"])
    total = both["rows"].sum(0)
    for r, out in dist.launch(_reductions, **LAUNCH):
        for key, want in expect.items():
            assert out[key].dtype == want.dtype, key
            np.testing.assert_array_equal(out[key], want, err_msg=key)  # one order on every rank: exact
        np.testing.assert_array_equal(out["sum/i64"], x0["i64"] + x1["i64"])
        np.testing.assert_allclose(out["grouped"][0], both["f64"].mean(0), rtol=1e-15)
        np.testing.assert_allclose(out["grouped"][1], both["f32"].mean(0), rtol=1e-6)
        np.testing.assert_array_equal(out["grouped_min"][0], both["i64"].min(0))
        np.testing.assert_array_equal(out["reduce"], both["f64"].max(0) if r else x0["f64"])
        np.testing.assert_array_equal(out["reduce_scatter_tensor"], (x0["f32"] + x1["f32"])[r])
        np.testing.assert_array_equal(out["reduce_scatter"], x0["rows"][(0, 4)[r]] * x1["rows"][(0, 4)[r]])
        rows = slice(0, 3) if r == 0 else slice(3, 5)  # 5 rows: 3 to rank 0 (the remainder), 2 to rank 1
        np.testing.assert_allclose(out["reducescatter"], total[rows] / 2, rtol=1e-15)
        np.testing.assert_array_equal(out["reducescatter_max"], both["i64"].max(0)[2 * r : 2 * r + 2])
        assert out["layout"] == (True, r, 2, 0, 1)  # one node: local rank = rank, one rank per local rank


def _routes():
    r = dist.rank()
    x = np.arange(6, dtype=np.float64).reshape(3, 2) + 10 * r  # (3, 2)
    sends, takes = ([1, 2], [1, 3]) if r == 0 else ([3, 0], [2, 0])
    out = dg.zeros(sum(takes), 2, dtype=dg.float64)
    dist.all_to_all_single(out, _t(x), output_split_sizes=takes, input_split_sizes=sends)
    even = dg.zeros(2, dtype=dg.int64)
    dist.all_to_all_single(even, dg.tensor(np.array([r, 100 + r])))
    ins = [dg.tensor(np.full((d + 1, r + 1), 10 * r + d, np.int64)) for d in range(2)]  # to rank d: (d+1, r+1)
    outs = [dg.zeros(r + 1, s + 1, dtype=dg.int64) for s in range(2)]
    dist.all_to_all(outs, ins)
    got, received = dist.alltoall(_t(x.astype(np.float32)), splits=[2, 1] if r == 0 else [0, 3])
    plain = dist.alltoall(dg.tensor(np.array([[r], [r + 0.5]])))  # no splits: only the result
    gl = [dg.zeros(3, 2, dtype=dg.float64) for _ in range(2)] if r == 1 else None
    dist.gather(_t(x), gl, dst=1)
    sc = dg.zeros(2, dtype=dg.int64)
    dist.scatter(sc, [dg.tensor(np.array([7, 8])), dg.tensor(np.array([9, -1]))] if r == 0 else None, src=0)
    return (
        out.numpy(),
        even.numpy(),
        [t.numpy() for t in outs],
        got.numpy(),
        received.numpy(),
        plain.numpy(),
        gl and [t.numpy() for t in gl],
        sc.numpy(),
    )


@pytest.mark.ray
def test_all_to_all_gather_and_scatter_route_uneven_splits_as_numpy_slices_them(ray_session):
    xs = [np.arange(6, dtype=np.float64).reshape(3, 2) + 10 * r for r in range(2)]
    (o0, e0, l0, g0, n0, p0, gl0, s0), (o1, e1, l1, g1, n1, p1, gl1, s1) = dist.launch(_routes, **LAUNCH)
    np.testing.assert_array_equal(o0, np.concatenate([xs[0][:1], xs[1][:3]]))  # 1 row from 0, 3 from 1
    np.testing.assert_array_equal(o1, xs[0][1:3])  # 2 rows from rank 0, none from rank 1
    assert e0.tolist() == [0, 1] and e1.tolist() == [100, 101]
    for me, lists in enumerate((l0, l1)):
        for s, a in enumerate(lists):
            np.testing.assert_array_equal(a, np.full((me + 1, s + 1), 10 * s + me))
    assert g0.dtype == np.float32 and g0.tolist() == xs[0][:2].tolist() and n0.tolist() == [2, 0]
    assert g1.tolist() == np.concatenate([xs[0][2:], xs[1]]).tolist() and n1.dtype == np.int32
    assert n1.tolist() == [1, 3]
    assert p0.tolist() == [[0.0], [1.0]] and p1.tolist() == [[0.5], [1.5]]
    assert gl0 is None and [a.tolist() for a in gl1] == [xs[0].tolist(), xs[1].tolist()]
    assert s0.tolist() == [7, 8] and s1.tolist() == [9, -1]


def _bad_calls():
    """Each bad call, caught: every rank must raise the same error (then still meet the next collective)."""
    r = dist.rank()
    calls = {
        "max_shapes": lambda: dist.all_reduce(dg.zeros(2 + r), op=dist.ReduceOp.MAX),
        "min_dtypes": lambda: dist.all_reduce(dg.zeros(2, dtype=dg.float32 if r else dg.float64), op="min"),
        "sum_shapes": lambda: dist.reduce_scatter_tensor(dg.zeros(1), dg.zeros(2 + 2 * r)),
        "sum_ranks": lambda: dist.reduce_scatter_tensor(dg.zeros(1 + r), dg.zeros(2 + 2 * r)),  # the sum's path
        "gather_list": lambda: dist.gather(dg.zeros(2), None, dst=1),
        "scatter_list": lambda: dist.scatter(dg.zeros(2), [dg.zeros(2)] * 2, src=1),
        "bad_root": lambda: dist.reduce(dg.zeros(2), dst=2 if r else 0),
        "two_roots": lambda: dist.reduce(dg.zeros(2), dst=r),
        "a2a_splits": lambda: dist.all_to_all_single(dg.zeros(3, 2), dg.zeros(3, 2), [1, 2], [2, 1] if r else [1, 2]),
        "a2a_sum": lambda: dist.all_to_all_single(dg.zeros(4), dg.zeros(3), None, [1, 1 + r]),
        "a2a_even": lambda: dist.all_to_all_single(dg.zeros(2), dg.zeros(3)),
        "a2a_dtype": lambda: dist.all_to_all([dg.zeros(1), dg.zeros(1)], [dg.zeros(1, dtype=dg.int64)] * 2),
        "alltoall_trailing": lambda: dist.alltoall(dg.zeros(2, 1 + r)),
        "alltoall_splits": lambda: dist.alltoall(dg.zeros(2), splits=[2, 1]),
        "band_float": lambda: dist.all_reduce(dg.zeros(2), op=dist.ReduceOp.BAND),
    }
    return _errors_then_in_step(calls)


@pytest.mark.ray
def test_bad_arguments_raise_the_same_error_on_every_rank_and_leave_them_in_step(ray_session):
    started = time.monotonic()  # the timeout far above a worker start on a loaded host: the time tells them apart
    (errors, after), (errors1, after1) = dist.launch(_bad_calls, **{**LAUNCH, "timeout_s": 300})
    assert time.monotonic() - started < 200  # no rank waited out a timeout
    assert errors == errors1 and after == after1 == 1.0
    expect = {
        "max_shapes": ("ShapeError", r"all_reduce: the ranks' tensors differ \(rank 0: float32 \(2,\), rank 1: float32 \(3,\)\)"),
        "min_dtypes": ("DTypeError", r"rank 0: float64 \(2,\), rank 1: float32 \(2,\)"),
        "sum_ranks": ("ShapeError", r"reduce_scatter_tensor: the ranks' tensors differ \(rank 0: float32 \(2,\), rank 1: float32 \(4,\)\)"),
        "sum_shapes": ("ShapeError", r"input tensor must be the same size as output size times world size \(input \(4,\), output \(1,\), world size 2\) \(on rank 1\)"),
        "gather_list": ("ConfigError", r"gather: Argument ``gather_list`` must be specified on destination rank\. \(on rank 1\)"),
        "scatter_list": ("ConfigError", r"scatter: Argument ``scatter_list`` must NOT be specified on non-source ranks\. \(on rank 0\)"),
        "bad_root": ("ConfigError", r"reduce: invalid root rank: 2 \(world size 2\) \(on rank 1\)"),
        "two_roots": ("ConfigError", r"reduce: the ranks name different roots \(rank 0: 0, rank 1: 1\)"),
        "a2a_splits": ("ShapeError", r"all_to_all_single: rank 0 sends rank 1 float32 \(2, 2\), rank 1 expects float32 \(1, 2\)"),
        "a2a_sum": ("ShapeError", r"Split sizes doesn't match total dim 0 size \(input_split_sizes \[1, 1\], input has 3 rows\) \(on rank 0\)"),
        "a2a_even": ("ShapeError", r"Tensor's dim 0 does not divide equally across group size \(input has 3 rows, 2 ranks\) \(on rank 0\)"),
        "a2a_dtype": ("DTypeError", r"all_to_all: rank 0 sends rank 0 int64 \(1,\), rank 0 expects float32 \(1,\)"),
        "alltoall_trailing": ("ShapeError", r"alltoall: rank 0 sends rank 1 float32 \(1, 1\), rank 1 expects float32 \(any, 2\)"),
        "alltoall_splits": ("ShapeError", r"Sum of splits entries is greater than the first dimension of tensor \(\[2, 1\], 2 rows\) \(on rank 0\)"),
        "band_float": ("DTypeError", r"all_reduce: Cannot use ReduceOp\.BAND with non-integral dtype float32 \(on rank 0\)"),
    }  # fmt: skip
    for name, (kind, pattern) in expect.items():
        assert errors[name] is not None and errors[name][0] == kind, (name, errors[name])
        assert re.search(pattern, errors[name][1]), (name, errors[name][1])


def _errors_then_in_step(calls):
    """Each call's error (type name, message), or None; then one all-reduce: its result shows the ranks are
    still in step after them."""
    errors = {}
    for name, call in calls.items():
        try:
            call()
            errors[name] = None
        except Exception as exc:  # noqa: BLE001  (the error is what is checked)
            errors[name] = (type(exc).__name__, str(exc))
    t = dg.tensor([float(dist.rank())])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return errors, t.item()


def _bad_calls_on_one_rank():
    """Each call bad on one rank only (the other's arguments are fine), caught: both must raise that rank's
    error at once, naming it, rather than one raising alone and the other waiting in the collective."""
    r, zero_d = dist.rank(), dg.tensor(np.array(1.0, np.float32))
    calls = {
        "a2a_single_0d": lambda: dist.all_to_all_single(dg.zeros(2), zero_d if r == 0 else dg.zeros(2)),
        "alltoall_0d": lambda: dist.alltoall(zero_d if r == 1 else dg.zeros(2)),
        "a2a_empty": lambda: dist.all_to_all(*([[], []] if r == 0 else [[dg.zeros(1)] * 2, [dg.zeros(1)] * 2])),
        "gather_into_dtype": lambda: dist.all_gather_into_tensor(
            dg.zeros(4, dtype=dg.float64 if r else dg.float32), dg.zeros(2)
        ),  # fmt: skip
        "all_gather_dtype": lambda: dist.all_gather(
            [dg.zeros(2), dg.zeros(2, dtype=dg.int64 if r == 0 else dg.float32)], dg.zeros(2)
        ),  # fmt: skip
    }
    return _errors_then_in_step(calls)


@pytest.mark.ray
def test_a_bad_argument_on_one_rank_raises_on_every_rank_without_a_wait(ray_session):
    (errors, after), (errors1, after1) = dist.launch(_bad_calls_on_one_rank, **LAUNCH)
    assert errors == errors1 and after == after1 == 1.0
    assert errors == {
        "a2a_single_0d": ("ShapeError", "all_to_all_single: 0-d tensors have no dim 0 to split (output (2,), input ()) (on rank 0)"),
        "alltoall_0d": ("ShapeError", "alltoall: a 0-d tensor has no dim 0 to split (reshape it to (1,)) (on rank 1)"),
        "a2a_empty": ("ConfigError", "all_to_all: input_tensor_list has 0 tensors for 2 ranks (on rank 0)"),
        "gather_into_dtype": ("DTypeError", "all_gather_into_tensor: output tensor must have the same type as input tensor (output float64, input float32) (on rank 1)"),
        "all_gather_dtype": ("DTypeError", "all_gather: output tensor must have the same type as input tensor (tensor_list[1] is int64, the input float32) (on rank 0)"),
    }  # fmt: skip


def test_outside_a_launch_every_collective_runs_as_rank_0_of_1():
    x = _inputs(0)
    assert not dist.is_initialized()
    assert (dist.local_rank(), dist.local_size(), dist.cross_rank(), dist.cross_size()) == (0, 1, 0, 1)
    for op in ("max", "min", "product", "mean"):
        t = _t(x["f64"])
        assert dist.all_reduce(t, op=op) is None and t.numpy().tolist() == x["f64"].tolist()
    (g,) = dist.grouped_allreduce([_t(x["i64"])], op=dist.Product)
    assert g.numpy().tolist() == x["i64"].tolist()
    assert dist.reducescatter(_t(x["rows"])).numpy().tolist() == x["rows"].tolist()
    out = dg.zeros(2, 3)
    dist.reduce_scatter_tensor(out, _t(x["f32"]), op=dist.ReduceOp.MIN)
    np.testing.assert_array_equal(out.numpy(), x["f32"])
    got, received = dist.alltoall(_t(x["rows"]), splits=[4])  # Horovod: rows past the splits' sum stay home
    assert got.numpy().tolist() == x["rows"][:4].tolist() and received.numpy().tolist() == [4]
    gl, sc = [dg.zeros(5, 3, dtype=dg.float64)], dg.zeros(5, 3, dtype=dg.float64)
    dist.gather(_t(x["rows"]), gl)
    dist.scatter(sc, [_t(x["rows"])])
    assert gl[0].numpy().tolist() == sc.numpy().tolist() == x["rows"].tolist()
    with pytest.raises(ConfigError, match=r"op must be one of 'sum', 'mean', 'max', .* got 'median'"):
        dist.all_reduce(dg.ones(2), op="median")
    with pytest.raises(DTypeError, match="Cannot use ReduceOp.AVG with non-floating dtype int64"):
        dist.grouped_allreduce([_t(x["i64"])])
    with pytest.raises(ConfigError, match=r"scatter: invalid root rank: 1 \(world size 1\)"):
        dist.scatter(dg.zeros(2), [dg.zeros(2)], src=1)
    with pytest.raises(ConfigError, match="all_to_all: input_tensor_list has 0 tensors for 1 ranks"):
        dist.all_to_all([], [])
    with pytest.raises(ConfigError, match="Number of tensor splits not equal to group size"):
        dist.all_to_all_single(dg.zeros(2), dg.zeros(2), input_split_sizes=[1, 1])
    with pytest.raises(
        ShapeError, match="reduce_scatter: input_list\\[0\\] is float32 \\(3,\\), output float32 \\(2,\\)"
    ):
        dist.reduce_scatter(dg.zeros(2), [dg.zeros(3)])
