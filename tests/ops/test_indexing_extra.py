"""ops/indexing_extra.py against torch float64: index_add/copy/fill/reduce, scatter_reduce (every reduce, with
and without self), masked_scatter, take/put, select, narrow_copy, the *_scatter ops, their in-place forms and
the Tensor methods of ops that were functions only; forward, gradients, gradcheck, double backward where
torch has one; integer dtypes; and the errors for bad indices naming the op, the dim and its size."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import DTypeError, IndexOutOfRangeError, ShapeError
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity
from tests.parity import check

torch = pytest.importorskip("torch")

T = Table()
I2 = np.array([2, 0, 2])  # a duplicate: gradients add up
SIDX = np.array([[0, 2, 0, 1], [1, 1, 1, 1], [2, 0, 0, 0]])


def t(m, a, dtype=None):
    return m.tensor(a) if dtype is None else m.tensor(a, dtype=dtype)


T.op("index_add", lambda m, a, b: a.index_add(0, t(m, I2), b), (3, 4), (3, 4))
T.op("index_add-cubed", lambda m, a, b: a.index_add(0, t(m, I2), b) ** 3, (3, 4), (3, 4), double=True)
T.op("index_add-alpha-dim1", lambda m, a, b: m.index_add(a, 1, t(m, [3, 3]), b, alpha=-1.5), (3, 4), (3, 2))
T.op("index_copy", lambda m, a, b: a.index_copy(1, t(m, [3, 0]), b), (3, 4), (3, 2))
T.op("index_copy-0d", lambda m, a, b: m.index_copy(a, 0, t(m, [0]), b), (), ())
T.op("index_fill", lambda m, a: a.index_fill(1, t(m, [1, -1, 1]), -2.0), (3, 4))
T.op("index_fill-tensor-value", lambda m, a, v: m.index_fill(a, 0, t(m, [2, 2, 0]), v), (3, 4), ())
for _r in ("prod", "mean", "amax", "amin"):
    for _s in (True, False):
        T.op(
            f"index_reduce-{_r}-self{_s}",
            lambda m, a, b, r=_r, s=_s: a.index_reduce(0, t(m, I2), b, r, include_self=s),
            (3, 4),
            (3, 4),
        )
for _r in ("sum", "prod", "mean", "amax", "amin"):
    for _s in (True, False):
        T.op(
            f"scatter_reduce-{_r}-self{_s}",
            lambda m, a, b, r=_r, s=_s: a.scatter_reduce(1, t(m, SIDX), b, r, include_self=s),
            (3, 4),
            (3, 4),  # a larger src: torch's own backward refuses its gradient's shape
            double=_r == "prod",
        )
T.op(
    "scatter_reduce-mean-cubed",
    lambda m, a, b: a.scatter_reduce(1, t(m, SIDX), b, "mean") ** 3,
    (3, 4),
    (3, 4),
    double=True,
)
T.op("scatter_reduce-dim0-fn", lambda m, a, b: m.scatter_reduce(a, 0, t(m, SIDX[:2, :3]), b, "prod"), (3, 4), (2, 3))
T.op("masked_scatter", lambda m, a, b: a.masked_scatter(a > 0, b), (3, 4), (13,))
T.op("masked_scatter-broadcast", lambda m, a, b: m.masked_scatter(a, t(m, [[True], [False]]), b), (4,), (2, 4))
T.op("take", lambda m, a: a.take(t(m, [[0, -1], [5, 5]])), (3, 4))
T.op("put", lambda m, a, b: a.put(t(m, [0, -1, 5]), b), (3, 4), (3,))
T.op("put-accumulate", lambda m, a, b: m.put(a, t(m, [[5, 5], [1, 0]]), b, accumulate=True), (3, 4), (2, 2))
T.op("select", lambda m, a: a.select(1, -2) * 3, (3, 4))
T.op("select-fn", lambda m, a: m.select(a, 0, 2), (3, 4))
T.op("narrow_copy", lambda m, a: a.narrow_copy(1, 1, 2), (3, 4))
T.op("slice_scatter", lambda m, a, b: m.slice_scatter(a, b, 1, 0, None, 2), (3, 4), (3, 2))
T.op("slice_scatter-method", lambda m, a, b: a.slice_scatter(b, start=1), (3, 4), (2, 4))
T.op("select_scatter", lambda m, a, b: a.select_scatter(b, 0, -1), (3, 4), (4,))
T.op("diagonal_scatter", lambda m, a, b: m.diagonal_scatter(a, b, 1), (3, 4), (3,))
T.op("diagonal_scatter-dims", lambda m, a, b: a.diagonal_scatter(b, -1, 2, 0), (3, 2, 4), (2, 3))
T.op("where-method", lambda m, a, b: a.where(a > b, b), (3, 4), (4,))
T.op("fliplr-method", lambda m, a: a.fliplr(), (3, 4))
T.op("flipud-method", lambda m, a: a.flipud(), (3, 4))
T.op("addmm-method", lambda m, a, b, c: a.addmm(b, c, beta=0.5, alpha=2), (4,), (3, 2), (2, 4))
T.op("argwhere-method", lambda m, a: (a > 0).argwhere(), (3, 4), grad=False)
T.op("bincount-method", lambda m, a: t(m, [1, 4, 1]).bincount(minlength=6), (1,), grad=False)


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


@pytest.mark.parametrize("reduce", ["prod", "amax"])
def test_scatter_reduce_ties_and_zeros_match_torch(reduce):
    """prod with a zero (one, or two at one position) and amax with ties: torch's gradient formulas."""
    a = np.array([[0.0, 2.0, 3.0], [1.0, 5.0, 5.0]])
    b = np.array([[0.0, 0.0, 3.0, 2.0], [5.0, 5.0, 0.0, 1.0]])
    idx = np.array([[1, 1, 0, 2], [2, 2, 1, 0]])
    for s in (True, False):
        check(
            lambda x, y: x.scatter_reduce(1, dg.tensor(idx), y, reduce, include_self=s),
            lambda x, y: x.scatter_reduce(1, torch.tensor(idx), y, reduce, include_self=s),
            a,
            b,
        )


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, x: x.index_add(0, t(m, [0, 0]), x.new_tensor([[1, 2], [3, 4]]), alpha=2),
        lambda m, x: x.index_copy(1, t(m, [1]), x.new_tensor([[7], [8]])),
        lambda m, x: x.index_fill(1, t(m, [0]), 2.7),
        lambda m, x: x.index_reduce(0, t(m, [1, 1]), x.new_tensor([[4, -7], [3, 5]]), "mean"),
        lambda m, x: x.index_reduce(0, t(m, [1, 1]), x.new_tensor([[4, -7], [3, 5]]), "mean", include_self=False),
        lambda m, x: x.scatter_reduce(0, t(m, [[1, 1]]), x.new_tensor([[4, -7]]), "mean"),
        lambda m, x: x.scatter_reduce(1, t(m, [[1, 1]]), x.new_tensor([[4, -7]]), "amin", include_self=False),
        lambda m, x: x.scatter_reduce(1, t(m, [[0, 0]]), x.new_tensor([[4, -7]]), "prod"),
        lambda m, x: x.masked_scatter(x > 2, x.new_tensor([9, 8, 7])),
        lambda m, x: x.put(t(m, [3]), x.new_tensor([0]), accumulate=True),
        lambda m, x: x.take(t(m, [3, 0])),
        lambda m, x: m.diagonal_scatter(x, x.new_tensor([0, 0])),
        lambda m, x: (x > 2).scatter_reduce(1, t(m, [[0, 0]]), t(m, [[True, False]]), "amax", include_self=False),
    ],
)
def test_integer_and_bool_dtypes_match_torch(fn):
    a = np.array([[1, 2], [3, 4]])
    for dt in (np.int64, np.int32):
        out, ref = fn(dg, dg.tensor(a.astype(dt))), fn(torch, torch.tensor(a.astype(dt)))
        assert str(out.dtype).split(".")[-1] == str(ref.dtype).split(".")[-1]
        np.testing.assert_array_equal(out.numpy(), ref.numpy())


@pytest.mark.parametrize(
    "name, args",
    [
        ("index_add_", (1, [3, 0], "src32")),
        ("index_copy_", (1, [3, 0], "src32")),
        ("index_fill_", (1, [3, 0], -1.0)),
        ("index_reduce_", (1, [3, 0], "src32", "amax")),
        ("scatter_reduce_", (1, [[0, 3], [1, 1], [2, 2]], "src32", "prod")),
        ("masked_scatter_", ("mask", "src12")),
        ("put_", ([0, 11, 11], "src3", True)),
        ("addmm_", ("m34x", "m4")),
    ],
)
def test_inplace_forms_match_torch_and_reach_views(name, args):
    """The `_` form writes into the tensor (a view of a leaf's clone here: the base sees it), and the
    gradient flows through the write into the leaf and the source, as torch's."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 4))
    extra = {
        "src32": rng.standard_normal((3, 2)),
        "src12": rng.standard_normal(12),
        "src3": rng.standard_normal(3),
        "m34x": rng.standard_normal((3, 3)),
        "m4": rng.standard_normal((3, 4)),
    }

    def run(m):
        leaf = m.tensor(base, requires_grad=True)
        srcs = {k: m.tensor(v, requires_grad=True) for k, v in extra.items()}
        conv = [
            srcs[a]
            if isinstance(a, str) and a in srcs
            else (leaf > 0)
            if a == "mask"
            else m.tensor(a)
            if isinstance(a, list)
            else a
            for a in args
        ]
        y = leaf.clone() * 1
        v = y[:, :]
        out = getattr(v, name)(*conv)
        assert out is v
        (y * m.tensor(np.arange(12.0).reshape(3, 4))).sum().backward()
        return y, leaf.grad, [s.grad for s in srcs.values()]

    y, gl, gs = run(dg)
    ty, tgl, tgs = run(torch)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gl.numpy(), tgl.numpy(), rtol=1e-12)
    for g, tg in zip(gs, tgs):
        assert (g is None) == (tg is None)
        if g is not None:
            np.testing.assert_allclose(g.numpy(), tg.numpy(), rtol=1e-12)


def test_inplace_on_leaf_requiring_grad_is_refused():
    x = dg.zeros(3, dtype=dg.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="index_add_.*leaf"):
        x.index_add_(0, dg.tensor([0]), dg.ones(1, dtype=dg.float64))


@pytest.mark.parametrize(
    "call, err, words",
    [
        (
            lambda x: x.index_add(1, dg.tensor([4]), dg.ones(3, 1)),
            IndexOutOfRangeError,
            ["index_add", "4", "dimension 1", "size 4"],
        ),
        (lambda x: x.index_add(0, dg.tensor([-1]), dg.ones(1, 4)), IndexOutOfRangeError, ["index_add", "-1", "size 3"]),
        (lambda x: x.index_copy(0, dg.tensor([0, 1]), dg.ones(3, 4)), ShapeError, ["index_copy", "(3, 4)", "(2)"]),
        (
            lambda x: x.index_add(0, dg.tensor([0]), dg.ones(1, 4, dtype=dg.float64)),
            DTypeError,
            ["index_add", "float64"],
        ),
        (lambda x: x.index_add(0, dg.tensor([0.0]), dg.ones(1, 4)), DTypeError, ["index_add", "int32/int64"]),
        (lambda x: x.index_fill(0, dg.tensor([[0]]), 1.0), IndexOutOfRangeError, ["index_fill", "vector"]),
        (lambda x: x.index_fill(0, dg.tensor([0]), dg.ones(2)), ShapeError, ["index_fill", "0-dimensional"]),
        (lambda x: x.index_fill(2, dg.tensor([0]), 1.0), ShapeError, ["index_fill", "2"]),
        (lambda x: x.index_reduce(0, dg.tensor([0]), dg.ones(1, 4), "sum"), ShapeError, ["index_reduce", "sum"]),
        (
            lambda x: x.scatter_reduce(0, dg.tensor([[3]]), dg.ones(1, 1), "sum"),
            IndexOutOfRangeError,
            ["scatter_reduce", "3", "dimension 0", "size 3"],
        ),
        (
            lambda x: x.scatter_reduce(0, dg.tensor([[-1]]), dg.ones(1, 1), "sum"),
            IndexOutOfRangeError,
            ["scatter_reduce", "-1"],
        ),
        (
            lambda x: x.scatter_reduce(0, dg.tensor([[0, 1]]), dg.ones(1, 1), "sum"),
            ShapeError,
            ["scatter_reduce", "(1, 2)", "(1, 1)"],
        ),
        (lambda x: x.scatter_reduce(0, dg.tensor([[0]]), dg.ones(1, 1), "max"), ShapeError, ["scatter_reduce", "amax"]),
        (lambda x: x.masked_scatter(x > 0, dg.ones(2)), ShapeError, ["masked_scatter", "2 elements", "12"]),
        (lambda x: x.masked_scatter(dg.ones(3, 4), dg.ones(12)), DTypeError, ["masked_scatter", "boolean"]),
        (lambda x: x.take(dg.tensor([12])), IndexOutOfRangeError, ["take", "12", "12 elements"]),
        (lambda x: x.put(dg.tensor([-13]), dg.ones(1)), IndexOutOfRangeError, ["put", "-13"]),
        (lambda x: x.put(dg.tensor([0, 1]), dg.ones(3)), ShapeError, ["put", "same number"]),
        (lambda x: x.select(1, 4), IndexOutOfRangeError, ["select", "index 4", "[3, 4]", "dimension 1"]),
        (
            lambda x: dg.slice_scatter(x, dg.ones(3, 1), 1, 0, None, 2),
            ShapeError,
            ["slice_scatter", "[3, 1]", "[3, 2]"],
        ),
        (lambda x: dg.select_scatter(x, dg.ones(3), 0, 0), ShapeError, ["select_scatter", "[3]", "[4]"]),
        (lambda x: dg.diagonal_scatter(x, dg.ones(2)), ShapeError, ["diagonal_scatter", "[2]", "[3]"]),
    ],
)
def test_bad_input_names_op_and_what_is_wrong(call, err, words):
    x = dg.ones(3, 4)
    with pytest.raises(err) as info:
        call(x)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_bincount_checks_and_keeps_weights_dtype():
    np.testing.assert_array_equal(dg.tensor([1, 1, 3]).bincount().numpy(), [0, 2, 0, 1])
    w = dg.tensor([0.5, 1.0, 2.0], dtype=dg.float32)
    out, ref = (
        dg.bincount(dg.tensor([1, 1, 3]), w),
        torch.bincount(torch.tensor([1, 1, 3]), torch.tensor([0.5, 1.0, 2.0])),
    )
    assert out.dtype == dg.float32 and ref.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref.numpy())
    assert dg.bincount(dg.tensor([1]), dg.tensor([2])).dtype == dg.float64  # int weights: double, as torch
    assert dg.bincount(dg.tensor([], dtype=dg.int64)).shape == (0,)
    for bad, err in (([-1, 2], ShapeError), ([[1]], ShapeError), ([1.0], DTypeError)):
        with pytest.raises(err, match="bincount"):
            dg.bincount(dg.tensor(bad))
    with pytest.raises(ShapeError, match="bincount.*weights"):
        dg.bincount(dg.tensor([1, 2]), dg.tensor([1.0, 2.0, 3.0]))


def test_random_methods_sample_from_the_tensor():
    dg.manual_seed(0)
    p = dg.tensor([0.0, 1.0, 0.0])
    assert p.multinomial(2, replacement=True).tolist() == [1, 1]
    assert dg.tensor([0.0, 1.0]).bernoulli().tolist() == [0.0, 1.0]
