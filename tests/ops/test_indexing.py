"""Indexing ops (ops/indexing.py, ops/index_put.py) against torch float64: __getitem__ with ints, slices,
None, Ellipsis, boolean and uint8 masks, integer arrays and lists, read as torch reads them (duplicates
accumulate their gradient), __setitem__ and index_put(_) (values, gradients, writes through views, what
torch refuses and warns about), gather / scatter / index_select / masked ops, sort / topk, one_hot;
gradcheck on the differentiable ones. tests/ops/test_indexing_fuzz.py mixes these forms at random."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity

torch = pytest.importorskip("torch")

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
# torch's reading of a subscript (ops/subscript.py): each row once differed
I2 = np.array([1, 3])
T.op("list-of-lists-is-a-tuple", lambda m, a: a[[[0, 1], [1, 2]]], (2, 3, 4))
T.op("list-holding-slice-is-a-tuple", lambda m, a: a[[1, slice(None), 0]], (2, 3, 4))
T.op("list-holding-none-is-a-tuple", lambda m, a: a[[0, None]], (2, 3, 4))
T.op("list-holding-tensors-is-a-tuple", lambda m, a: a[[m.tensor(1), m.tensor(np.array([2, 0]))]], (2, 3, 4))
T.op("nested-empty-list", lambda m, a: a[[[]]], (2, 3, 4), gradcheck=False)
T.op("float-list-truncates", lambda m, a: a[[1.7, -0.5]], (2, 3, 4))
T.op("uint8-mask", lambda m, a: a[m.tensor(np.array([1, 0, 1], dtype=np.uint8))], (3, 4))
T.op("numpy-uint8-mask", lambda m, a: a[np.array([[1, 0, 0, 1]] * 3, dtype=np.uint8)], (3, 4))
T.op("int-slice-tensor-keeps-dim-order", lambda m, a: a[0, :, m.tensor(I2)], (2, 3, 4))
T.op("0d-tensor-slice-tensor-keeps-dim-order", lambda m, a: a[m.tensor(1), :, m.tensor(I2)], (2, 3, 4))
T.op("tensors-apart-go-first", lambda m, a: a[m.tensor(np.array([1, 0])), :, m.tensor(I2)], (2, 3, 4))
T.op("mask-slice-int", lambda m, a: a[m.tensor(np.array([True, False])), 1:, 2], (2, 3, 4))
T.op("slice-mask2d-none", lambda m, a: a[1:, m.tensor(np.array([[True, False, True, True]] * 3)), None], (2, 3, 4))
T.op("bool-in-tuple-adds-indexed-dim", lambda m, a: a[m.tensor(np.array([1, 0])), :, True], (2, 3, 4))
T.op(
    "int32-index-broadcast", lambda m, a: a[m.tensor(np.array([[0], [1]], dtype=np.int32)), 1, m.tensor(I2)], (2, 3, 4)
)
T.op("second-ellipsis-spans-nothing", lambda m, a: a[..., 0, ...], (2, 3, 4))
T.op("list-of-0d-tensors", lambda m, a: a[[m.tensor(1), m.tensor(0)]], (2, 3, 4))
T.op(
    "index_put-accumulate-sums-duplicates",
    lambda m, a, b: m.index_put(a, (m.tensor(IDX),), b, accumulate=True),
    (3, 4),
    (3, 4),
)
T.op("index_put-last-write", lambda m, a, b: a.index_put((m.tensor(np.array([2, 0])), m.tensor(I2)), b), (3, 4), (2,))
T.op(
    "index_put_-non-leaf",
    lambda m, a, b: (a * 1).index_put_((m.tensor(np.array([True, False, True])),), b),
    (3, 4),
    (4,),
)
T.op(
    "index_put-accumulate-broadcast-value",  # numpy's add.at summed a lower-rank value wrongly
    lambda m, a, b: m.index_put(a, (m.tensor(np.array([[0, 2, 2], [1, 0, 0]])),), b, accumulate=True),
    (3,),
    (3,),
)
T.op(
    "index_put-cubed",
    lambda m, a, b: m.index_put(a, (m.tensor(IDX),), b, accumulate=True) ** 3,
    (3, 4),
    (4,),
    double=True,
)
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


def _put(m, a, index, value, add=False):
    """c = a * 1 (a non-leaf), then c[index] = value (or += value): torch records it on c's graph."""
    c = a * 1
    if add:
        c[index] += value
    else:
        c[index] = value
    return c * c


DUP = np.array([0, 2, 0])
DUP_GRAD = {"gradcheck": False}  # torch gives every duplicated write the gradient, not only the one kept:
# not the finite difference of the last-write-wins forward, so only the torch comparison applies
P = Table()
P.op("set-duplicates-last-write-wins", lambda m, a, b: _put(m, a, (m.tensor(DUP), 1), b), (3, 4), (3,), **DUP_GRAD)
P.op("set-duplicates-broadcast-value", lambda m, a, b: _put(m, a, m.tensor(DUP), b), (3, 4), (1, 4), **DUP_GRAD)
P.op(
    "iadd-duplicates-do-not-accumulate",
    lambda m, a, b: _put(m, a, m.tensor(DUP), b, add=True),
    (3, 4),
    (3, 4),
    **DUP_GRAD,
)
P.op("iadd-basic-view", lambda m, a, b: _put(m, a, (slice(None), 1), b, add=True), (3, 4), (3,))
P.op("set-int-slice-tensor", lambda m, a, b: _put(m, a, (0, slice(None), m.tensor(I2)), b), (2, 3, 4), (3, 2))
P.op("set-value-leading-ones", lambda m, a, b: _put(m, a, 1, b), (3, 4), (1, 1, 4))
P.op("set-scalar-into-mask", lambda m, a: _put(m, a, a > 0, -2.0), (3, 4))
P.op("set-float32-0d-through-lone-mask", lambda m, a: _put(m, a, a > 0, m.tensor(np.float32(3))), (3, 4))
P.op("set-float32-basic-casts", lambda m, a: _put(m, a, 0, m.tensor(np.ones(4, np.float32))), (3, 4))
P.op("set-int64-basic-casts", lambda m, a: _put(m, a, (slice(None), 2), m.tensor(np.array([1, 2, 3]))), (3, 4))
P.op("set-list-of-lists", lambda m, a, b: _put(m, a, [[0, 1], [1, 2]], b), (2, 3, 4), (2, 1))
P.op(
    "set-uint8-mask-full-value", lambda m, a, b: _put(m, a, m.tensor(np.array([1, 0, 1], np.uint8)), b), (3, 4), (2, 4)
)
P.op(
    "set-value-needs-grad-target-does-not",
    lambda m, a, b: _put(m, a.detach(), m.tensor(DUP), b),
    (3, 4),
    (4,),
    **DUP_GRAD,
)
P.op("set-bare-true-whole-tensor", lambda m, a, b: _put(m, a, True, b), (3, 4), (4,))


def _through_view_of_constant(m, b):
    """Only the value needs grad; it reaches z through views of z (z gets a graph, as in torch)."""
    z = m.zeros(3, 4, dtype=m.float64)
    z[1][m.tensor(np.array([2, 0]))] = b[:2]
    z[1:][0, 1:3] = b[1:] * 2
    return z * z


def _twice_through_one_view(m, a, b):
    """Every write through a view reaches its base, not only the first one."""
    c = a * 1
    v = c[0]
    v[0] = b[0] * 5
    v[m.tensor(np.array([1, 2]))] = b[1:] * 7
    v.mul_(3)
    return c * c


def _through_empty_view(m, a, b):
    c = a * 1
    c[None][0][m.tensor(np.array([1]))] = b
    return c * 2


P.op("set-through-views-of-constant", _through_view_of_constant, (3,))
P.op("set-twice-through-one-view", _twice_through_one_view, (2, 3), (3,))
P.op("set-through-empty-view", _through_empty_view, (2, 0), (0,))


@pytest.mark.parametrize("row", P.rows())
def test_setitem_on_non_leaf_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", P.gradcheck_rows())
def test_setitem_gradcheck(row):
    run_gradcheck(row)


def test_setitem_double_backward_matches_torch():
    Q = Table()
    Q.op("setitem-double", lambda m, a, b: _put(m, a, (m.tensor(DUP), slice(1, 3)), b**2) ** 2, (3, 4), (3, 2))
    run_double_backward(Q._rows[0])


def m_idx(x, values):
    return (torch if isinstance(x, torch.Tensor) else dg).tensor(values)


def _overlap(write):
    """A write into a (5, 2) tensor from memory it shares (torch refuses unless both are the same)."""

    def call(m):
        x = m.arange(10.0).reshape(5, 2)
        write(x)

    return call


# (what torch refuses, the error torch raises, words distgraph's message must hold); distgraph raises a
# DistgraphError that is also the same builtin (torch's RuntimeErrors are ValueError/TypeError here)
REFUSED = [
    ("int8-index", lambda m: m.ones(3)[m.tensor(np.array([1], np.int8))], IndexError, ["getitem", "int8", "long, int, byte or bool"]),
    ("float-index", lambda m: m.ones(3)[m.tensor(np.array([1.0]))], IndexError, ["getitem", "float64"]),
    ("float-item", lambda m: m.ones(3)[1.0], IndexError, ["only integers", "float"]),
    ("negative-step", lambda m: m.ones(3)[::-1], ValueError, ["step must be greater than zero"]),
    ("zero-step", lambda m: m.ones(3)[::0], ValueError, ["step cannot be zero"]),
    ("tensor-out-of-range", lambda m: m.ones(2, 3)[:, m.tensor(np.array([0, 3]))], IndexError, ["index 3", "dimension 1", "size 3"]),
    ("negative-out-of-range", lambda m: m.ones(2, 3)[m.tensor(np.array([-3]))], IndexError, ["index -3", "dimension 0", "size 2"]),
    ("int32-out-of-range", lambda m: m.ones(2, 3)[0, m.tensor(np.array([5], np.int32))], IndexError, ["index 5", "dimension 1", "size 3"]),
    ("list-out-of-range", lambda m: m.ones(2, 3)[[0, 2]], IndexError, ["index 2", "dimension 0", "size 2"]),
    ("0d-tensor-out-of-range", lambda m: m.ones(2, 3)[m.tensor(4)], IndexError, ["index 4", "dimension 0", "size 2"]),
    ("index-a-0d-tensor", lambda m: m.ones(())[0], IndexError, ["0-dim"]),
    ("mask-shape", lambda m: m.ones(2, 3)[:, m.tensor(np.array([True, False]))], IndexError, ["mask", "[2]", "[2, 3]"]),
    ("not-broadcastable", lambda m: m.ones(2, 3)[m.tensor(np.array([0, 1])), m.tensor(np.array([0, 1, 2]))], IndexError, ["[2], [3]"]),
    ("too-many-with-mask", lambda m: m.ones(2, 3)[m.ones(2, 3, 1, dtype=m.bool)], IndexError, ["too many indices", "dimension 2"]),
    ("set-uint8-mask-scalar", lambda m: m.zeros(3, 4).__setitem__(m.tensor(np.array([1, 0, 1], np.uint8)), 1.0), RuntimeError, ["masked_fill_", "uint8"]),
    ("set-other-dtype-through-tensor-index", lambda m: m.zeros(3, dtype=m.float64).__setitem__(m.tensor(np.array([1])), m.ones(1, dtype=m.float32)), RuntimeError, ["setitem", "dtypes match", "float32"]),
    ("set-shape-mismatch", lambda m: m.zeros(3, 4).__setitem__(m.tensor(np.array([1, 0])), m.ones(3, 4)), RuntimeError, ["setitem", "[3, 4]", "[2, 4]"]),
    ("set-basic-shape-mismatch", lambda m: m.zeros(3, 4).__setitem__(0, m.ones(2)), RuntimeError, ["setitem", "[2]", "[4]"]),
    ("index_put-dtype", lambda m: m.zeros(3, dtype=m.float64).index_put_((m.tensor(np.array([1])),), m.ones(1, dtype=m.float32)), RuntimeError, ["index_put", "dtypes match"]),
    ("index_put-scalar-value", lambda m: m.zeros(3).index_put_((m.tensor(np.array([1])),), 1.0), TypeError, ["index_put", "values", "float"]),
    ("index_put-list-index", lambda m: m.zeros(3).index_put_(([1],), m.ones(1)), TypeError, ["index_put", "list"]),
    ("index_put-out-of-range-accumulate", lambda m: m.zeros(3).index_put_((m.tensor(np.array([3])),), m.ones(1), accumulate=True), IndexError, ["index 3", "size 3"]),
    ("set-overlapping-view", _overlap(lambda x: x.__setitem__(slice(1, None), x[:-1])), RuntimeError, ["setitem", "single memory location"]),
    ("set-advanced-from-own-view", _overlap(lambda x: x.__setitem__(m_idx(x, [0]), x[1])), RuntimeError, ["setitem", "single memory location"]),
    ("index_put_-from-own-view", _overlap(lambda x: x.index_put_((m_idx(x, [0]),), x[1])), RuntimeError, ["index_put_", "single memory location"]),
    ("set-list-value", lambda m: m.zeros(2, 3).__setitem__(0, [1.0, 2.0, 3.0]), TypeError, ["setitem", "list"]),
    ("set-ndarray-value", lambda m: m.zeros(2, 3).__setitem__(0, np.ones(3)), TypeError, ["setitem", "ndarray"]),
    ("set-none-value", lambda m: m.zeros(2, 3).__setitem__(0, None), TypeError, ["setitem", "NoneType"]),
    ("set-uint8-overflow", lambda m: m.zeros(2, dtype=m.uint8).__setitem__(0, 300), RuntimeError, ["setitem", "300", "uint8"]),
    ("set-int32-overflow", lambda m: m.zeros(2, dtype=m.int32).__setitem__(0, 2**40), RuntimeError, ["setitem", "int32"]),
    ("set-float32-overflow", lambda m: m.zeros(2).__setitem__(0, 1e300), RuntimeError, ["setitem", "float32"]),
    ("set-nan-into-int", lambda m: m.zeros(2, dtype=m.int64).__setitem__(0, float("nan")), RuntimeError, ["setitem", "nan"]),
    ("set-int-beyond-int64", lambda m: m.zeros(2, dtype=m.float64).__setitem__(0, 2**70), ValueError, ["setitem", "int64"]),
    ("index_select-uint8", lambda m: m.zeros(3, 4).index_select(0, m.tensor(np.array([1], np.uint8))), RuntimeError, ["index_select", "uint8"]),
]  # fmt: skip


@pytest.mark.parametrize("call,torch_error,words", [pytest.param(*c[1:], id=c[0]) for c in REFUSED])
def test_refused_like_torch(call, torch_error, words):
    with pytest.raises(torch_error):
        call(torch)
    with pytest.raises(dg.errors.DistgraphError if torch_error is RuntimeError else torch_error) as info:
        call(dg)
    assert isinstance(info.value, dg.errors.DistgraphError)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {str(info.value)!r}"


def test_writes_from_shared_memory_torch_allows():
    """The same memory (x[0] = x[0], x[0] += 1), a broadcast value and a strided view are not checked."""
    for write in (
        lambda x: x.__setitem__(0, x[0]),
        lambda x: x.__setitem__(Ellipsis, x),
        lambda x: x.__setitem__(slice(None), x[0]),
        lambda x: x.__setitem__((slice(None), 1), x[:, 0]),
        lambda x: x.__setitem__(x > 4, x[0, 0]),
    ):
        x, t = dg.arange(10.0).reshape(5, 2), torch.arange(10.0, dtype=torch.float64).reshape(5, 2)
        write(x), write(t)
        np.testing.assert_array_equal(x.numpy(), t.numpy())


@pytest.mark.parametrize(
    "dtype,value",
    [
        ("uint8", -1),
        ("uint8", -255),
        ("int8", -128),
        ("int64", 2.7),
        ("bool", 5),
        ("float32", float("inf")),
        ("float16", 1e6),
    ],
)
def test_setitem_scalars_torch_accepts(dtype, value):
    """Numbers a dtype holds (an unsigned one wraps down to -max, float16 overflows to inf) are written
    as torch writes them."""
    x, t = dg.zeros(3, dtype=getattr(dg, dtype)), torch.zeros(3, dtype=getattr(torch, dtype))
    with np.errstate(over="ignore"):
        x[1] = value
    t[1] = value
    assert x.tolist() == t.tolist()


@pytest.mark.parametrize(
    "shape,index",
    [
        ((0, 3), (slice(None), [5])),  # nothing is read: torch checks no index
        ((2, 0), [5]),
        ((4, 3), (slice(0, 0), [[-4]])),
        ((0, 1), ([2], [False])),  # the indices broadcast to no element
        ((0, 0), [1]),  # an index of elements into a dim of size 0: refused up front
        ((0, 3), [1]),
    ],
)
def test_out_of_range_index_checked_only_where_torch_checks(shape, index):
    """torch checks indices as it reads elements: an empty result checks none, unless an indexed dim of
    size 0 meets an index of elements."""
    idx = tuple(np.array(i) if isinstance(i, list) else i for i in index)
    try:
        want = torch.zeros(shape)[tuple(torch.tensor(i) if isinstance(i, np.ndarray) else i for i in idx)]
    except IndexError:
        with pytest.raises(IndexError, match="out of bounds for dimension"):
            dg.zeros(shape)[tuple(dg.tensor(i) if isinstance(i, np.ndarray) else i for i in idx)]
        return
    got = dg.zeros(shape)[tuple(dg.tensor(i) if isinstance(i, np.ndarray) else i for i in idx)]
    assert tuple(got.shape) == tuple(want.shape)
    x = dg.zeros(shape)
    x[tuple(dg.tensor(i) if isinstance(i, np.ndarray) else i for i in idx)] = 1.0  # writes nothing
    assert not x.numpy().any()


def test_setitem_on_leaf_that_requires_grad_is_refused_like_torch():
    a = dg.ones(2, 3, requires_grad=True)
    with pytest.raises(dg.errors.AutogradError, match="a view of a leaf Variable that requires grad"):
        a[0] = 1.0
    for index in ((0, dg.tensor([1])), (None, dg.tensor([0])), (slice(0, 1), dg.tensor([0]))):
        with pytest.raises(dg.errors.AutogradError, match="a view of a leaf Variable that requires grad"):
            a[index] = 1.0
    for index in (dg.tensor([0]), dg.tensor([True, False]), Ellipsis, (), slice(None), slice(0, 2), slice(0, None)):
        with pytest.raises(dg.errors.AutogradError, match="^setitem: a leaf Variable that requires grad"):
            a[index] = 1.0
    with pytest.raises(dg.errors.AutogradError, match="index_put_: a leaf Variable"):
        a.index_put_((dg.tensor([0]),), dg.ones(3))
    with dg.no_grad():  # outside grad mode the write is allowed, as in torch
        a[dg.tensor([1])] = 5.0
    assert a.detach().numpy()[1].tolist() == [5.0] * 3 and a.is_leaf


@pytest.mark.parametrize(
    "index,message",
    [
        ([[0, 1], [1, 2]], "non-tuple sequence"),
        ([0, None], "non-tuple sequence"),
        (np.array([1, 0], np.uint8), "torch.uint8 is now deprecated"),
    ],
)
def test_deprecated_forms_warn_like_torch(index, message):
    with pytest.warns(UserWarning, match=message):
        torch.zeros(2, 3)[index]
    with pytest.warns(UserWarning, match=message):
        dg.zeros(2, 3)[index]
