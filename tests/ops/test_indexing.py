"""Indexing ops (ops/indexing.py) against torch float64: __getitem__ with ints, slices, None, Ellipsis,
boolean masks and integer arrays (duplicates accumulate their gradient), __setitem__, gather /
scatter / index_select / masked ops, sort / topk, one_hot; gradcheck on the differentiable ones."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity

T = Table()
IDX = np.array([2, 0, 2])  # a duplicate: its gradient must be added twice
ROWS = np.array([[0, 2], [1, 1], [3, 0]])
T.op("int", lambda m, a: a[1], (3, 4))
T.op("negative-int", lambda m, a: a[-1, -2], (3, 4))
T.op("int-slice", lambda m, a: a[1, 1:3], (3, 4))
T.op("slice-step", lambda m, a: a[::2, 1::2], (5, 4))
T.op("slice-negative-bounds", lambda m, a: a[-2:, :-1], (3, 4))
T.op("slice-out-of-bounds-clamps", lambda m, a: a[1:10, 5:], (3, 4))
T.op("none-ellipsis", lambda m, a: a[None, ..., ::2], (3, 4))
T.op("ellipsis-int", lambda m, a: a[..., 1], (2, 3, 4))
T.op("none-middle", lambda m, a: a[:, None, 1:], (3, 4))
T.op("bool-mask-full", lambda m, a: a[a > 0], (3, 4))
T.op("bool-mask-rows", lambda m, a: a[m.tensor(np.array([True, False, True]))], (3, 4))
T.op("bool-mask-cols-after-slice", lambda m, a: a[:, m.tensor(np.array([False, True, True, False]))], (3, 4))
T.op("bool-mask-empty", lambda m, a: a[a > 100], (3, 4), gradcheck=False)
T.op("int-array", lambda m, a: a[m.tensor(IDX)], (3, 4))
T.op("int-array-cubed", lambda m, a: a[m.tensor(IDX)] ** 3, (3, 4), double=True)
T.op("int-list", lambda m, a: a[[0, 2, 2]], (3, 4))
T.op("int-arrays-broadcast", lambda m, a: a[m.tensor(np.array([[0], [2]])), m.tensor(np.array([1, 3, 1]))], (3, 4))
T.op("int-array-with-slice", lambda m, a: a[1:, m.tensor(IDX)], (3, 4))
T.op("int-array-then-ellipsis", lambda m, a: a[m.tensor(np.array([1, 0])), ...], (2, 3, 4))
T.op("separated-int-arrays", lambda m, a: a[m.tensor(np.array([1, 0])), :, m.tensor(np.array([3, 3]))], (2, 3, 4))
T.op("int-array-negative", lambda m, a: a[m.tensor(np.array([-1, -3]))], (3, 4))
T.op("index-size0", lambda m, a: a[m.tensor(np.array([], dtype=np.int64))], (3, 4), gradcheck=False)
T.op("tensor-0d-index", lambda m, a: a[m.tensor(1)], (3, 4))
T.op("gather", lambda m, a: m.gather(a, 1, m.tensor(ROWS)), (3, 4))
T.op("gather-dim0-method", lambda m, a: a.gather(0, m.tensor(np.array([[2, 0, 1, 0]]))), (3, 4))
T.op("take_along_dim", lambda m, a: m.take_along_dim(a, m.argsort(a, 1), 1), (3, 4))
T.op("scatter_add", lambda m, a, b: m.scatter_add(a, 1, m.tensor(ROWS), b), (3, 4), (3, 2))
T.op("scatter_add-dim0", lambda m, a, b: a.scatter_add(0, m.tensor(np.array([[2, 2, 0, 1]])), b), (3, 4), (1, 4))
T.op("scatter-src", lambda m, a, b: m.scatter(a, 1, m.tensor(np.array([[0, 2], [1, 3], [3, 0]])), b), (3, 4), (3, 2))
T.op("scatter-value", lambda m, a: a.scatter(1, m.tensor(np.array([[0], [1], [3]])), 2.5), (3, 4))
T.op("index_select", lambda m, a: m.index_select(a, 0, m.tensor(IDX)), (3, 4))
T.op("index_select-dim1", lambda m, a: a.index_select(-1, m.tensor(np.array([3, 3, 0]))), (3, 4))
T.op("masked_fill", lambda m, a: a.masked_fill(a > 0.5, -1.0), (3, 4))
T.op(
    "masked_fill-broadcast", lambda m, a: m.masked_fill(a, m.tensor(np.array([True, False, False, True])), 0.0), (3, 4)
)
T.op("masked_select", lambda m, a: m.masked_select(a, a < 0), (3, 4))
T.op("where-cond-only", lambda m, a: m.where(a > 0), (3, 4), grad=False)
T.op("nonzero", lambda m, a: m.nonzero(a > 0), (3, 4), grad=False)
T.op("nonzero-as-tuple", lambda m, a: m.nonzero(a > 0, as_tuple=True), (3, 4), grad=False)
T.op("argwhere", lambda m, a: m.argwhere(a > 0), (3, 4), grad=False)
T.op("sort", lambda m, a: m.sort(a, 1), (3, 4))
T.op("sort-descending-dim0", lambda m, a: a.sort(0, descending=True), (3, 4))
T.op("argsort", lambda m, a: m.argsort(a, -1, descending=True), (3, 4), grad=False)
T.op("topk", lambda m, a: m.topk(a, 2, 1), (3, 4))
T.op("gather-squared", lambda m, a: m.gather(a, 1, m.tensor(ROWS)) ** 2, (3, 4), double=True)
T.op("topk-smallest-dim0", lambda m, a: a.topk(2, 0, largest=False), (3, 4))
T.op("kthvalue", lambda m, a: m.kthvalue(a, 2, 1), (3, 4))
T.op("sort-size0", lambda m, a: m.sort(a, 1)[0], (0, 4))
# descending: NaN first, ties in their original order (stable), no wrap-around of unsigned/int64-min keys
NO_GRADCHECK = {"gradcheck": False}  # NaN inputs and ties: no finite differences
T.op(
    "sort-descending-nan-first",
    lambda m, a: m.sort(m.where(a > 1, a * float("nan"), a), 1, descending=True),
    (3, 5),
    **NO_GRADCHECK,
)
T.op("topk-nan", lambda m, a: m.topk(m.where(a > 1, a * float("nan"), a), 3), (4, 5), **NO_GRADCHECK)
T.op(
    "sort-descending-stable-ties",
    lambda m, a: m.sort(m.cat([a, a.detach()], 1), dim=1, descending=True, stable=True),
    (3, 2),
    **NO_GRADCHECK,
)
T.op(
    "argsort-descending-uint8-int64",
    lambda m, a: (_ints(m, m.uint8).argsort(descending=True), *_ints(m, m.int64).sort(descending=True)),
    (1,),
    grad=False,
)
T.op("argsort-descending-bool", lambda m, a: m.argsort(a > 0, descending=True, stable=True), (9,), grad=False)
# torch accepts: an index smaller than the input off the gather dim, a 0-d index_select index, x[[]],
# take_along_dim without dim (flattened), nonzero of a 0-d tensor
T.op("gather-index-smaller-off-dim", lambda m, a: m.gather(a, 1, m.tensor(np.array([[0, 3], [2, 2]]))), (3, 4))
T.op(
    "scatter_add-index-smaller-off-dim",
    lambda m, a, b: a.scatter_add(0, m.tensor(np.array([[2, 0]])), b),
    (3, 4),
    (1, 2),
)
T.op("index_select-0d-index", lambda m, a: m.index_select(a, 1, m.tensor(2)), (3, 4))
T.op("empty-list-index", lambda m, a: a[[]], (3, 4), gradcheck=False)
T.op("take_along_dim-flat", lambda m, a: m.take_along_dim(a, m.tensor(np.array([[0, 11], [5, 5]]))), (3, 4))
T.op("nonzero-0d", lambda m, a: (m.nonzero(a.sum() > -100), *m.nonzero(a.sum() > 100, as_tuple=True)), (3,), grad=False)
T.op("one_hot", lambda m, a: m.nn.functional.one_hot(m.tensor(np.array([0, 3, 1])), 5), (1,), grad=False)
T.op("one_hot-infer", lambda m, a: m.nn.functional.one_hot(m.tensor(np.array([[0, 2], [1, 1]]))), (1,), grad=False)
T.op("bincount", lambda m, a: m.bincount(m.tensor(np.array([0, 3, 3, 1]))), (1,), grad=False)
T.op("bincount-weights", lambda m, a: m.bincount(m.tensor(np.array([0, 3, 3])), a, minlength=6), (3,), grad=False)
T.op("searchsorted", lambda m, a: m.searchsorted(m.tensor(np.array([0.0, 1, 2])), a), (3, 4), grad=False)


def _ints(m, dtype):
    big = [0, 3, 255, 1, 3] if dtype is m.uint8 else [0, 5, -(2**63), -1, 2**63 - 1, 5]
    return m.tensor(big, dtype=dtype)


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


def _set(m, a, index, value):
    with m.no_grad():
        b = a.clone()
        b[index] = value
    return b


S = Table()
S.op("set-int-scalar", lambda m, a: _set(m, a, 1, 5.0), (3, 4), grad=False)
S.op("set-slice-tensor", lambda m, a, b: _set(m, a, (slice(None), slice(1, 3)), b), (3, 4), (3, 2), grad=False)
S.op("set-broadcast-row", lambda m, a, b: _set(m, a, (Ellipsis, 0), b), (3, 4), (3,), grad=False)
S.op("set-bool-mask", lambda m, a: _set(m, a, a > 0, 0.0), (3, 4), grad=False)
S.op("set-int-array", lambda m, a: _set(m, a, m.tensor(np.array([2, 0])), -1.0), (3, 4), grad=False)
S.op("set-none-step", lambda m, a: _set(m, a, (None, slice(None, None, 2)), 9.0), (3, 4), grad=False)


@pytest.mark.parametrize("row", S.rows())
def test_setitem_under_no_grad_matches_torch(row, device):
    run_parity(row, device)


def test_setitem_with_grad_routes_gradient_like_torch():
    def f(m, a, b):
        c = a * 1
        c[1:, ::2] = b * 3  # gradient of a's overwritten part is 0; b gets 3
        return c * c

    T2 = Table()
    T2.op("setitem-grad", f, (3, 4), (2, 2))
    run_parity(T2._rows[0], "cpu")


def test_one_hot_is_int64_and_checks_range():
    oh = dg.nn.functional.one_hot(dg.tensor([1, 0]), 3)
    assert oh.dtype == dg.int64 and oh.tolist() == [[0, 1, 0], [1, 0, 0]]
    with pytest.raises(IndexError):
        dg.nn.functional.one_hot(dg.tensor([3]), 3)


def test_gather_index_larger_than_input_off_dim_is_a_shape_error():
    with pytest.raises(dg.errors.ShapeError, match=r"gather\(\).*\(4, 1\).*\(3, 4\)"):
        dg.gather(dg.ones(3, 4), 1, dg.tensor([[0], [0], [0], [0]]))
