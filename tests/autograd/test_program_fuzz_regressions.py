"""Bugs the random-program fuzzer (test_program_fuzz.py) found, each pinned against torch."""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")

LIBS = pytest.mark.parametrize("m", [dg, torch], ids=["distgraph", "torch"])


def _grads(m, x, y, fn):
    x = m.tensor(x, requires_grad=True)
    y = m.tensor(y, requires_grad=True)
    out = fn(m, x, y)
    w = m.tensor(np.arange(out.numel(), dtype=np.float64).reshape(tuple(out.shape)))
    gx, gy = m.autograd.grad((out * w).sum(), (x, y), allow_unused=True)
    return [None if g is None else np.asarray(g.detach().numpy()) for g in (gx, gy)]


def _same(fn, x, y):
    for d, t in zip(_grads(dg, x, y, fn), _grads(torch, x, y, fn)):
        assert (d is None) == (t is None)
        if t is not None:
            np.testing.assert_allclose(d, t, rtol=1e-12, atol=1e-12)


X, Y = np.arange(6.0).reshape(2, 3) - 2.5, np.array([1.0, -2.0, 0.5])


def test_predicate_methods_bind_self():
    t = dg.tensor([1.0, float("nan"), float("inf")])
    assert t.isnan().tolist() == [False, True, False]
    assert t.isinf().tolist() == [False, False, True]
    assert t.isfinite().tolist() == [True, False, False]
    assert t.logical_not().tolist() == [False, False, False]


@LIBS
def test_add_and_sub_scale_a_number_by_alpha(m):
    assert m.add(m.tensor([1, 2]), 2, alpha=3).tolist() == [7, 8]
    assert m.sub(m.tensor([1.0, 2.0]), 0.5, alpha=2).tolist() == [0.0, 1.0]


def test_fill_with_a_grad_requiring_value_records_it():
    _same(lambda m, x, y: m.zeros(2, 3, dtype=m.float64).fill_(y.sum()) * x, X, Y)


def test_fill_refuses_a_value_with_dims():
    with pytest.raises(ValueError, match="0-dimension"):
        dg.zeros(3).fill_(dg.ones(1))


def test_setitem_drops_leading_size_one_dims_of_a_grad_requiring_value():
    def fn(m, x, y):
        base = x * 1
        base[0] = y.reshape(1, 3) * 2
        return base

    _same(fn, X, Y)


def test_masked_select_broadcasts_input_and_mask_together():
    mask = np.array([[True, False, True], [False, False, True]])
    _same(lambda m, x, y: m.cat([y.masked_select(m.tensor(mask)), x.masked_select(m.tensor(mask[0]))]), X, Y)


@LIBS
def test_writing_into_a_topk_index_before_backward_raises(m):
    x = m.tensor(X, requires_grad=True)
    values, indices = (x * 1).topk(2)
    indices.zero_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        values.sum().backward()


def test_writing_into_an_index_tensor_after_indexing_keeps_the_gradient():
    x = dg.tensor(X, requires_grad=True)
    idx = dg.tensor([1, 1, 0])
    out = (x * 1)[idx]
    idx.zero_()
    out.sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]


@LIBS
def test_floor_division_of_floats_requires_grad_with_a_zero_gradient(m):
    x = m.tensor(X, requires_grad=True)
    y = m.div(x, 0.7, rounding_mode="floor")
    assert y.requires_grad
    assert m.autograd.grad((y * x).sum(), x)[0].tolist() == y.detach().tolist()


@LIBS
def test_flatten_checks_dims_of_a_0d_tensor(m):
    with pytest.raises((IndexError, ValueError), match="range"):
        m.tensor(2.0).flatten(0, 1)


def test_second_write_through_a_view_reaches_the_base_gradient():
    def fn(m, x, y):
        base = x * 1
        v = base[0]
        v.mul_(2)
        v.add_(y)
        return base

    _same(fn, X, Y)


def test_write_through_a_view_of_a_base_without_grad_makes_the_base_require_grad():
    def fn(m, x, y):
        base = m.zeros(2, 3, dtype=m.float64)
        base.t()[1:].add_(y[:2, None] * x[:, :1].T)
        assert base.requires_grad
        return base

    _same(fn, X, Y)


def test_inplace_clamp_with_a_grad_requiring_bound_is_recorded():
    _same(lambda m, x, y: m.zeros(2, 3, dtype=m.float64).clamp_(min=y * x), X, Y)
