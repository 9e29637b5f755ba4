"""0-d inputs to dim-taking ops, against torch float64: where torch reads a 0-d tensor as one element
along dim 0/-1 (topk, kthvalue, index_select, movedim), values, indices and gradients match; where torch
refuses (narrow, split, chunk, unbind, repeat_interleave with a dim, k out of range), distgraph raises
its own error naming the op, not a bare numpy IndexError/ZeroDivisionError."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import errors
from tests.parity import check, torch

X = np.array(3.0)
ACCEPTED = {
    "topk-k1": lambda m, x: m.topk(x, 1, 0),
    "topk-k0": lambda m, x: m.topk(x, 0, -1),
    "topk-smallest": lambda m, x: m.topk(x, 1, largest=False),
    "kthvalue": lambda m, x: m.kthvalue(x, 1, 0),
    "kthvalue-keepdim": lambda m, x: m.kthvalue(x, 1, -1, True),
    "index_select": lambda m, x: m.index_select(x, 0, m.tensor([0])),
    "index_select-0d-index": lambda m, x: m.index_select(x, -1, m.tensor(0)),
    "movedim": lambda m, x: m.movedim(x, 0, -1),
    "movedim-lists": lambda m, x: m.movedim(x, [0], [0]),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_zero_dim_input_matches_torch(name):
    fn = ACCEPTED[name]
    check(lambda x: fn(dg, x), lambda x: fn(torch, x), X)


REFUSED = {
    "topk-k2": (lambda x: dg.topk(x, 2), errors.IndexOutOfRangeError),
    "kthvalue-k2": (lambda x: dg.kthvalue(x, 2), errors.IndexOutOfRangeError),
    "kthvalue-k0": (lambda x: dg.kthvalue(x, 0), errors.IndexOutOfRangeError),
    "index_select-index-1": (lambda x: dg.index_select(x, 0, dg.tensor([1])), errors.IndexOutOfRangeError),
    "index_select-two-values": (lambda x: dg.index_select(x, 0, dg.tensor([0, 0])), errors.ShapeError),
    "index_select-float-index": (lambda x: dg.index_select(x, 0, dg.tensor([0.0])), errors.DTypeError),
    "topk-dim1": (lambda x: dg.topk(x, 1, 1), errors.ShapeError),
    "movedim-dim1": (lambda x: dg.movedim(x, 0, 1), errors.ShapeError),
    "narrow": (lambda x: dg.narrow(x, 0, 0, 1), errors.ShapeError),
    "split": (lambda x: dg.split(x, 1, 0), errors.ShapeError),
    "chunk": (lambda x: dg.chunk(x, 1, 0), errors.ShapeError),
    "unbind": (lambda x: dg.unbind(x, 0), errors.ShapeError),
    "repeat_interleave-dim": (lambda x: dg.repeat_interleave(x, 2, 0), errors.ShapeError),
}


@pytest.mark.parametrize("name", REFUSED)
def test_zero_dim_input_torch_refuses_raises_distgraph_error(name):
    fn, err = REFUSED[name]
    op = name.split("-")[0]
    with pytest.raises(err, match=op):
        fn(dg.tensor(3.0))


@pytest.mark.parametrize("k", [0, -1, 4])
def test_kthvalue_k_out_of_range_raises_like_torch(k):
    """k=0 and k<0 used to pick from the end (narrow's negative start): a wrong value, not an error."""
    with pytest.raises(RuntimeError):
        torch.kthvalue(torch.tensor([1.0, 5.0, 2.0]), k)
    with pytest.raises(errors.IndexOutOfRangeError, match=rf"kthvalue\(\): selected number k \({k}\)"):
        dg.kthvalue(dg.tensor([1.0, 5.0, 2.0]), k)


def test_movedim_out_of_range_dim_raises_instead_of_wrapping():
    with pytest.raises(IndexError):
        torch.movedim(torch.zeros(2, 3), 5, 0)
    with pytest.raises(errors.ShapeError, match="movedim"):
        dg.movedim(dg.zeros(2, 3), 5, 0)
