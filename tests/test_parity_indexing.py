"""Parity with torch (float64 values and gradients, and central differences) for take_along_dim's
broadcasting, searchsorted's full signature, counts given as 0-d integer tensors (split, chunk, roll,
diff), and set_detect_anomaly as a call and as a context manager."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import DTypeError, InputRangeError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
rng = np.random.default_rng(0)


# ---- take_along_dim ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x_shape, idx, dim",
    [
        ((2, 3, 4), [[[0], [3], [1]]], 2),  # indices broadcast up on dim 0
        ((1, 3, 4), np.zeros((2, 3, 2), np.int64), 2),  # input broadcast up on dim 0
        ((2, 3, 1), [[[0, 2, 1, 1], [2, 2, 0, 1]]], 1),  # each broadcast up on a different dim
        ((2, 3, 4), [[[-1]]], -1),  # a negative index counts from the end
        ((3, 4), [[2, 0, 1, 1]], 0),
    ],
)
def test_take_along_dim_broadcasts_all_dims_but_dim(x_shape, idx, dim):
    idx = np.asarray(idx, np.int64)
    x = rng.standard_normal(x_shape)
    check(
        lambda a: dg.take_along_dim(a, dg.tensor(idx), dim=dim),
        lambda a: torch.take_along_dim(a, torch.tensor(idx), dim=dim),
        x,
    )
    a = dg.tensor(x, requires_grad=True)
    assert dg.autograd.gradcheck(lambda a: dg.take_along_dim(a, dg.tensor(idx), dim=dim), [a])


def test_take_along_dim_flattened_without_dim():
    idx = np.array([[0, 5], [23, 7]])
    x = rng.standard_normal((2, 3, 4))
    check(lambda a: dg.take_along_dim(a, dg.tensor(idx)), lambda a: torch.take_along_dim(a, torch.tensor(idx)), x)
    check(lambda a: a.take_along_dim(dg.tensor(idx)), lambda a: a.take_along_dim(torch.tensor(idx)), x)


@pytest.mark.parametrize(
    "x_shape, idx_shape, match",
    [((2, 3, 4), (3, 1), "same number of dimensions"), ((2, 2, 4), (1, 3, 1), "do not broadcast at dimension 1")],
)
def test_take_along_dim_refuses_bad_shapes_naming_the_op(x_shape, idx_shape, match):
    with pytest.raises(ShapeError, match=f"take_along_dim.*{match}"):
        dg.take_along_dim(dg.zeros(*x_shape), dg.zeros(*idx_shape, dtype=dg.int64), dim=2)
    with pytest.raises(RuntimeError):
        torch.take_along_dim(torch.zeros(*x_shape), torch.zeros(*idx_shape, dtype=torch.int64), dim=2)


# ---- searchsorted --------------------------------------------------------------------------------------------
def _same(got, want):
    assert tuple(got.shape) == tuple(want.shape)
    assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
    np.testing.assert_array_equal(np.asarray(got.__array__()), want.numpy())


SEQ = np.array([1.0, 3, 3, 5, 7, 9])
VALS = np.array([[0.0, 3, 4], [9, 10, 3]])


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"right": True}, {"side": "left"}, {"side": "right"}, {"side": "right", "right": True}, {"out_int32": True}],
)
def test_searchsorted_side_right_and_out_int32(kwargs):
    want = torch.searchsorted(torch.tensor(SEQ), torch.tensor(VALS), **kwargs)
    _same(dg.searchsorted(dg.tensor(SEQ), dg.tensor(VALS), **kwargs), want)


def test_searchsorted_sorter_reads_an_unsorted_sequence():
    seq = np.array([[9.0, 1, 5, 3, 7], [2, 8, 4, 6, 0]])
    vals = np.array([[4.0, 5], [5, 9]])
    for flat in (True, False):
        s, v = (seq[0], vals.ravel()) if flat else (seq, vals)
        order = np.argsort(s, axis=-1, kind="stable")
        for right in (False, True):
            want = torch.searchsorted(torch.tensor(s), torch.tensor(v), sorter=torch.tensor(order), right=right)
            _same(dg.searchsorted(dg.tensor(s), dg.tensor(v), sorter=dg.tensor(order), right=right), want)


@pytest.mark.parametrize("value", [4, 4.0, 3.0, 100])
def test_searchsorted_number_gives_a_0d_tensor(value):
    _same(dg.searchsorted(dg.tensor(SEQ), value), torch.searchsorted(torch.tensor(SEQ), value))
    _same(dg.searchsorted(dg.tensor(SEQ), dg.tensor(value)), torch.searchsorted(torch.tensor(SEQ), torch.tensor(value)))


@pytest.mark.parametrize("right", [False, True])
def test_searchsorted_nd_sequence_searches_each_row(right):
    seq = np.sort(rng.integers(0, 6, (2, 3, 5)).astype(np.float64), axis=-1)
    vals = rng.integers(-1, 7, (2, 3, 4)).astype(np.float64)
    want = torch.searchsorted(torch.tensor(seq), torch.tensor(vals), right=right)
    _same(dg.searchsorted(dg.tensor(seq), dg.tensor(vals), right=right), want)
    empty = torch.searchsorted(torch.zeros(2, 0, dtype=torch.float64), torch.tensor([[4.5], [1]]))
    _same(dg.searchsorted(dg.zeros(2, 0, dtype=dg.float64), dg.tensor([[4.5], [1]])), empty)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda m: m.searchsorted(m.ones(2, 3), m.ones(3)), ShapeError, "first N-1 dimensions"),
        (lambda m: m.searchsorted(m.ones(2, 3), m.ones(1, 2)), ShapeError, "first N-1 dimensions"),
        (lambda m: m.searchsorted(m.ones(2, 3), 3.0), ShapeError, "scalar only when boundaries"),
        (lambda m: m.searchsorted(m.tensor(1.0), m.ones(2)), ShapeError, "positive dimension"),
        (lambda m: m.searchsorted(m.ones(3), m.ones(2), side="left", right=True), InputRangeError, "opposites"),
        (lambda m: m.searchsorted(m.ones(3), m.ones(2), side="up"), InputRangeError, "'left' or 'right'"),
        (lambda m: m.searchsorted(m.ones(3), m.ones(2), sorter=m.tensor([0, 1])), ShapeError, "same size"),
        (lambda m: m.searchsorted(m.ones(3), m.ones(2), sorter=m.ones(3)), DTypeError, "long dtype"),
        (lambda m: m.searchsorted(m.ones(3), m.ones(2), sorter=m.tensor([0, 1, 5])), IndexError, "out of range"),
    ],
)
def test_searchsorted_errors_name_the_op(call, err, match):
    with pytest.raises(err, match=f"searchsorted.*{match}"):
        call(dg)
    with pytest.raises(RuntimeError):
        call(torch)


def test_bucketize_keeps_torchs_signature():
    bounds, vals = np.array([1.0, 3, 5]), np.array([0.0, 3, 4, 6])
    for right in (False, True):
        for out_int32 in (False, True):
            want = torch.bucketize(torch.tensor(vals), torch.tensor(bounds), right=right, out_int32=out_int32)
            _same(dg.bucketize(dg.tensor(vals), dg.tensor(bounds), right=right, out_int32=out_int32), want)


# ---- counts as 0-d integer tensors ---------------------------------------------------------------------------
COUNT_OPS = {
    "split": (lambda m, x, k: x.split(k), 2),
    "split_sizes": (lambda m, x, k: m.split(x, [k, 6 - 2]), 2),
    "chunk": (lambda m, x, k: x.chunk(k), 3),
    "roll": (lambda m, x, k: x.roll(k), 2),
    "roll_dims": (lambda m, x, k: m.roll(x, (k,), (k - 2,)), 2),
    "diff": (lambda m, x, k: m.diff(x, n=k), 2),
}


@pytest.mark.parametrize("name", COUNT_OPS)
def test_a_0d_integer_tensor_counts_as_its_int(name):
    fn, k = COUNT_OPS[name]
    x = rng.standard_normal(6)
    check(lambda a: fn(dg, a, dg.tensor(k)), lambda a: fn(torch, a, k), x)
    check(lambda a: fn(dg, a, np.int64(k)), lambda a: fn(torch, a, k), x)


@pytest.mark.parametrize("name", ["split", "chunk", "roll", "diff"])
def test_a_float_count_is_refused_naming_the_op(name):
    fn, k = COUNT_OPS[name]
    for bad in (dg.tensor(float(k)), float(k)):
        with pytest.raises(TypeError, match=f"{name}: .*must be an int"):
            fn(dg, dg.arange(6.0), bad)


# ---- set_detect_anomaly --------------------------------------------------------------------------------------
def _nan_backward():
    x = dg.tensor([0.0], requires_grad=True)
    (dg.sqrt(x) * 0.0).sum().backward()  # 0·inf: NaN in backward


def test_set_detect_anomaly_as_a_call_and_as_a_context_manager():
    assert not dg.is_anomaly_enabled()
    with dg.autograd.set_detect_anomaly(True):
        assert dg.is_anomaly_enabled()
        with pytest.raises(Exception, match="(?i)nan"):
            _nan_backward()
        with dg.autograd.set_detect_anomaly(False):
            assert not dg.is_anomaly_enabled()
            _nan_backward()
        assert dg.is_anomaly_enabled()
    assert not dg.is_anomaly_enabled()
    dg.autograd.set_detect_anomaly(True)
    try:
        assert dg.is_anomaly_enabled()
    finally:
        dg.autograd.set_detect_anomaly(False)
    assert not dg.is_anomaly_enabled()
    with dg.autograd.set_detect_anomaly(True, check_nan=False):  # torch's keyword: no NaN check
        _nan_backward()
