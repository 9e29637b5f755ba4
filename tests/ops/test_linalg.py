"""Matrix products and softmax (ops/linalg.py) against torch float64: matmul in every rank combination
with batch broadcasting and size-0 dims, mm/bmm/dot/mv/outer/addmm, einsum including repeated
subscripts (diagonals, traces), summed-away letters, implicit output and '...'; softmax and
log_softmax; gradcheck; double backward."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.ops import linalg
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity

torch = pytest.importorskip("torch")

T = Table()
for name, sa, sb in [
    ("2d@2d", (3, 4), (4, 2)),
    ("1d@1d", (4,), (4,)),
    ("1d@2d", (4,), (4, 2)),
    ("2d@1d", (3, 4), (4,)),
    ("3d@1d", (2, 3, 4), (4,)),
    ("1d@3d", (4,), (2, 4, 3)),
    ("batched", (2, 3, 4), (2, 4, 5)),
    ("batch-broadcast", (2, 1, 3, 4), (5, 4, 2)),
    ("batch-size1", (1, 3, 4), (6, 4, 2)),
    ("2d@batched", (3, 4), (2, 4, 5)),
    ("size0-inner", (3, 0), (0, 2)),
    ("size0-rows", (0, 4), (4, 2)),
    ("size0-batch", (0, 3, 4), (4, 2)),
    ("size1-everywhere", (1, 1), (1, 1)),
]:
    T.op("matmul-" + name, lambda m, a, b: a @ b, sa, sb, double=name in ("2d@2d", "batch-broadcast", "1d@1d"))
T.op("matmul-fn", lambda m, a, b: m.matmul(a, b), (2, 3), (3, 2))
T.op("matmul-self-square", lambda m, a: m.sigmoid(a @ a.T), (3, 4), double=True)
T.op("mm", lambda m, a, b: m.mm(a, b), (3, 4), (4, 5))
T.op("bmm", lambda m, a, b: m.bmm(a, b), (2, 3, 4), (2, 4, 5))
T.op("dot", lambda m, a, b: m.dot(a, b), (5,), (5,))
T.op("mv", lambda m, a, b: m.mv(a, b), (3, 5), (5,))
T.op("outer", lambda m, a, b: m.outer(a, b), (3,), (4,))
T.op("addmm", lambda m, c, a, b: m.addmm(c, a, b, beta=0.5, alpha=2.0), (4,), (3, 2), (2, 4))
T.op("linear", lambda m, x, w, b: m.nn.functional.linear(x, w, b), (2, 5, 3), (4, 3), (4,))
for eq, shapes in [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij->ji", [(3, 4)]),
    ("ij->i", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij,ij->", [(3, 4), (3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij,jk", [(3, 4), (4, 2)]),  # implicit output: letters seen once, sorted
    ("ii->", [(4, 4)]),  # trace
    ("ii->i", [(4, 4)]),  # diagonal
    ("ii", [(4, 4)]),  # implicit trace
    ("bii,bj->bij", [(2, 3, 3), (2, 4)]),
    ("iij->j", [(3, 3, 2)]),
    ("ii,i->i", [(3, 3), (3,)]),
    ("iji->j", [(3, 2, 3)]),
    ("ijk,jl,kl->il", [(2, 3, 4), (3, 5), (4, 5)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("i...->...", [(3, 2, 4)]),
    ("...ij,jk", [(2, 1, 3, 4), (4, 5)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),  # batch dims broadcast
    ("ij,j->i", [(3, 4), (1,)]),  # a size-1 dim broadcasts
    ("b i j , b j -> b i", [(2, 3, 4), (2, 4)]),
    ("ij,jk->ik", [(3, 0), (0, 2)]),
]:
    double = eq in ("bij,bjk->bik", "ii,i->i", "ijk,jl,kl->il")
    T.op(f"einsum[{eq}]{shapes}", lambda m, *xs, e=eq: m.einsum(e, *xs) * m.einsum(e, *xs), *shapes, double=double)
T.op("einsum-list-operands", lambda m, a, b: m.einsum("ij,jk->ik", [a, b]), (3, 4), (4, 2))
for fname in ["softmax", "log_softmax"]:
    for dim, shape in [(1, (3, 5)), (-1, (2, 3, 4)), (0, (3, 5)), (0, (1, 4)), (1, (3, 0)), (0, (7,))]:
        T.op(f"{fname}-dim{dim}-{shape}", lambda m, a, f=fname, d=dim: getattr(m, f)(a, d), shape, double=dim == 1)
    T.op(fname + "-large", lambda m, a, f=fname: getattr(m, f)(a * 1000, -1), (3, 4))
    T.op(fname + "-method", lambda m, a, f=fname: getattr(a, f)(0), (3, 4))
    T.op(fname + "-functional", lambda m, a, f=fname: getattr(m.nn.functional, f)(a, dim=1), (3, 4))
T.op("softmax-masked-inf", lambda m, a: m.softmax(a.masked_fill(a > 1.0, float("-inf")), 1), (3, 4))


def _safe_softmax(m, a, dim):
    """torch._safe_softmax / distgraph's safe_softmax, on `a` with row 1 and one entry of row 2 set to -inf."""
    mask = np.zeros(a.shape, bool)
    mask[..., 1, :] = True
    mask[..., 2, 0] = True
    a = a.masked_fill(m.tensor(mask, device=a.device), float("-inf"))
    return m._safe_softmax(a, dim) if m is torch else linalg.safe_softmax(a, dim)


T.op("safe_softmax-fully-masked-row", lambda m, a: _safe_softmax(m, a, -1), (3, 4), double=True)
T.op("safe_softmax-batched", lambda m, a: _safe_softmax(m, a, 2), (2, 3, 5), double=True)
T.op(
    "safe_softmax-unmasked-equals-softmax",
    lambda m, a: m._safe_softmax(a, 0) if m is torch else linalg.safe_softmax(a, 0),
    (3, 4),
)


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


def test_matmul_of_ints_stays_int_and_mixed_dtypes_are_refused_like_torch():
    i = dg.tensor([[1, 2], [3, 4]])
    assert (i @ i).dtype == dg.int64 and (i @ i).tolist() == [[7, 10], [15, 22]]
    f = dg.ones(2, 2, dtype=dg.float64)
    with pytest.raises(RuntimeError, match="expected m1 and m2 to have the same dtype, but got: float != double"):
        dg.ones(2, 2) @ f


def test_matmul_and_einsum_errors_name_the_op_and_shapes():
    with pytest.raises(dg.errors.ShapeError, match=r"matmul.*3x4 and 3x4"):
        dg.ones(3, 4) @ dg.ones(3, 4)
    with pytest.raises(ValueError, match="matmul"):
        dg.ones(2, 3, 4) @ dg.ones(3, 4, 5)  # batch dims 2 and 3 do not broadcast
    with pytest.raises(dg.errors.ShapeError, match="einsum.*'ij'.*\\(3,\\)"):
        dg.einsum("ij->i", dg.ones(3))
    with pytest.raises(ValueError, match="einsum"):
        dg.einsum("ij,jk->ik", dg.ones(3, 4), dg.ones(5, 2))
    with pytest.raises(dg.errors.ShapeError, match="einsum"):
        dg.einsum("ii->i", dg.ones(3, 4))
