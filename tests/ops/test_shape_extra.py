"""ops/shape_extra.py against torch float64: ravel, tensor_split (sections, indices, tensors), h/v/dsplit,
split_with_sizes, rot90, diag_embed, diagflat, sum_to_size, the aliases, and the memory layout answers
(is_contiguous, stride, storage_offset, dim_order) for contiguous tensors and views; errors name the op."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import DTypeError, ShapeError
from tests.ops._table import Table, run_gradcheck, run_parity

torch = pytest.importorskip("torch")

T = Table()
T.op("ravel", lambda m, a: a.ravel(), (2, 3, 4))
T.op("ravel-transposed", lambda m, a: m.ravel(a.transpose(0, 2)), (2, 3, 4))
T.op("tensor_split-sections", lambda m, a: a.tensor_split(3, dim=2), (2, 3, 4))
T.op("tensor_split-more-sections-than-size", lambda m, a: m.tensor_split(a, 5, 1), (2, 3, 4), gradcheck=False)
T.op("tensor_split-indices", lambda m, a: a.tensor_split([1, 5], 2), (2, 3, 4), gradcheck=False)
T.op("tensor_split-negative-indices", lambda m, a: a.tensor_split((-3, -1), -1), (2, 3, 4))
T.op("tensor_split-tensor-sections", lambda m, a: a.tensor_split(m.tensor(2), 1), (2, 3, 4))
T.op("tensor_split-tensor-indices", lambda m, a: a.tensor_split(m.tensor([2, 1]), 1), (2, 3, 4), gradcheck=False)
T.op("hsplit", lambda m, a: a.hsplit(3), (2, 3, 4))
T.op("hsplit-1d", lambda m, a: m.hsplit(a, [1, 3]), (5,))
T.op("vsplit", lambda m, a: a.vsplit([1]), (2, 3, 4))
T.op("dsplit", lambda m, a: m.dsplit(a, 2), (2, 3, 4))
T.op("split_with_sizes", lambda m, a: a.split_with_sizes([1, 3], -1), (2, 3, 4))
T.op("unsafe_split", lambda m, a: a.unsafe_split(2, 1), (2, 3, 4))
T.op("unsafe_chunk", lambda m, a: a.unsafe_chunk(2, 2), (2, 3, 4))
T.op("moveaxis", lambda m, a: m.moveaxis(a, 0, 2).moveaxis(1, 0), (2, 3, 4))
for _k in (-1, 0, 1, 2, 3, 6):
    T.op(f"rot90-k{_k}", lambda m, a, k=_k: m.rot90(a, k, [0, 2]), (2, 3, 4))
T.op("rot90-method-default", lambda m, a: a.rot90(), (2, 3))
T.op("rot90-negative-dims", lambda m, a: a.rot90(1, (-1, -3)), (2, 3, 4))
T.op("diag_embed", lambda m, a: m.diag_embed(a), (2, 3))
T.op("diag_embed-offset-dims", lambda m, a: a.diag_embed(1, 0, 2), (2, 3))
T.op("diag_embed-reversed-dims", lambda m, a: a.diag_embed(-2, 2, 0), (2, 3))
T.op("diagflat", lambda m, a: m.diagflat(a, -1), (2, 2))
T.op("diagflat-method", lambda m, a: a.diagflat(2), (3,))
T.op("sum_to_size", lambda m, a: a.sum_to_size(3, 1), (2, 3, 4))
T.op("sum_to_size-same", lambda m, a: a.sum_to_size((2, 3)) * 2, (2, 3))
T.op("sum_to_size-fewer-dims", lambda m, a: a.sum_to_size(4), (2, 3, 4))


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


def test_tensor_split_pieces_are_views():
    x = dg.zeros(2, 6)
    a, b = x.tensor_split(2, dim=1)
    b[0, 0] = 5.0
    assert x[0, 3].item() == 5.0


VIEWS = [
    lambda a: a,
    lambda a: a.transpose(0, 2),
    lambda a: a.permute(2, 0, 1),
    lambda a: a[:, 1],
    lambda a: a[1:, ::2, 1:],
    lambda a: a[1, 2, 3],
    lambda a: a.expand(5, 2, 3, 4)[2],
]


@pytest.mark.parametrize("view", VIEWS)
def test_memory_layout_matches_torch(view):
    a = np.arange(24.0).reshape(2, 3, 4)
    d, t = view(dg.tensor(a)), view(torch.tensor(a))
    assert d.stride() == t.stride()
    assert d.is_contiguous() == t.is_contiguous()
    assert d.storage_offset() == t.storage_offset()
    assert d.dim_order() == t.dim_order()
    for k in range(d.ndim):
        assert d.stride(k) == t.stride(k) and d.stride(k - d.ndim) == t.stride(k - t.ndim)


def test_aliases_and_new_empty():
    x = dg.ones(2, 3, dtype=dg.float64)
    assert x.nelement() == 6 and x.ndimension() == 2
    e = x.new_empty((4,))
    assert e.shape == (4,) and e.dtype == dg.float64
    assert x.new_empty(2, 2, dtype=dg.int64).dtype == dg.int64


@pytest.mark.parametrize(
    "call, err, words",
    [
        (lambda x: x.tensor_split(0), ShapeError, ["tensor_split", "larger than 0", "0"]),
        (lambda x: x.tensor_split(2.0), DTypeError, ["tensor_split", "float"]),
        (lambda x: x.tensor_split(dg.tensor([[1]])), DTypeError, ["tensor_split", "(1, 1)"]),
        (lambda x: x.hsplit(2), ShapeError, ["hsplit", "dimension 1", "size of the dimension 3", "2"]),
        (lambda x: x.vsplit(3), ShapeError, ["vsplit", "dimension 0", "3"]),
        (lambda x: x[0, 0].vsplit(2), ShapeError, ["vsplit", "at least 2", "1 dimensions"]),
        (lambda x: x.rot90(1, [0, 0]), ShapeError, ["rot90", "different", "dim0 = 0"]),
        (lambda x: x.rot90(1, [0]), ShapeError, ["rot90", "== 2", "1"]),
        (lambda x: x.rot90(1, [0, 3]), ShapeError, ["rot90", "3"]),
        (lambda x: x.diag_embed(0, 1, 1), ShapeError, ["diag_embed", "identical"]),
        (lambda x: x.sum_to_size(2, 2), ShapeError, ["sum_to_size", "[2, 2]", "[2, 3, 4]"]),
        (lambda x: x.sum_to_size(1, 1, 2, 3, 4), ShapeError, ["sum_to_size", "not expandable"]),
        (lambda x: x.stride(3), ShapeError, ["stride", "3"]),
        (lambda x: x.split_with_sizes([1, 2]), ShapeError, ["split", "[1, 2]"]),
    ],
)
def test_bad_input_names_op_and_what_is_wrong(call, err, words):
    x = dg.ones(2, 3, 4)
    with pytest.raises(err) as info:
        call(x)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
