"""Bugs the random-program fuzzer (test_program_fuzz.py) found, each pinned against torch."""

import warnings

import numpy as np
import pytest

import distgraph as dg
from tests.autograd.program_menu import _VIEWS, _inplace_fns

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


def test_views_made_before_a_write_rebuild_their_graph_from_the_base():
    def fn(m, x, y):
        base = x * 1
        row, col, tail = base[0], base[:, 1], base[0][1:]  # made before the writes (tail: a view of a view)
        base.mul_(y)  # into the base
        col.mul_(3)  # through a sibling view
        return m.cat([row, col, tail, base.flatten()])

    _same(fn, X, Y)


@LIBS
def test_backward_from_a_view_made_before_a_write_into_its_base(m):
    x = m.tensor(X, requires_grad=True)
    base = x * 1
    row = base[1]
    base.mul_(2)
    row.sum().backward()
    assert x.grad.tolist() == [[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]


@LIBS
def test_a_view_of_a_base_written_with_a_grad_value_requires_grad(m):
    base = m.zeros(2, 3, dtype=m.float64)
    row = base[0]
    base[1] = m.tensor(Y, requires_grad=True) * 2
    assert row.requires_grad and not row.is_leaf


@LIBS
def test_diagonal_is_a_view(m):
    x = m.tensor(np.arange(24.0).reshape(2, 3, 4))
    x.diagonal(1, 0, -1).fill_(-1.0)
    assert x[0, 0, 1].item() == -1.0 and x[1, 1, 2].item() == -1.0 and x[0, 1, 2].item() == 6.0
    leaf = m.tensor(X, requires_grad=True)
    with pytest.raises(RuntimeError, match="view of a leaf Variable"):
        leaf.diagonal().mul_(2)


def test_a_write_through_a_diagonal_reaches_the_gradient_of_its_base():
    def fn(m, x, y):
        base = x * 1
        base.diagonal(-1, 1, 0).mul_(y[:1] * 3)
        return base * base.diagonal().sum()

    _same(fn, X, Y)


def test_fill_through_a_view_of_a_tensor_holding_nan_overwrites_it():
    def fn(m, x, y):
        base = x.log()  # nan where x < 0
        base[::2].fill_(0.5)
        base[1].copy_(y)
        return base

    _same(fn, X, Y)
    out = fn(dg, dg.tensor(X, requires_grad=True), dg.tensor(Y, requires_grad=True))
    assert out.tolist() == [[0.5, 0.5, 0.5], Y.tolist()]


def test_piecewise_constant_ops_give_zero_gradient_for_an_infinite_incoming_one():
    _same(lambda m, x, y: m.floor(x) * float("inf") + m.div(y, 0.7, rounding_mode="floor") * float("inf"), X, Y)


def test_maximum_and_minimum_pass_the_gradient_at_a_nan_to_both_inputs():
    _same(lambda m, x, y: m.maximum(x.log(), y) + m.minimum(y, x.log()), X, Y)


@LIBS
def test_an_inplace_op_refuses_an_operand_that_partly_overlaps_the_written_tensor(m):
    a = m.tensor(np.arange(6.0))
    for write in (
        lambda: a[1:].add_(a[:-1]),
        lambda: a[0].view(-1).sub_(a[0]),
        lambda: a.view(2, 3).T.copy_(a.view(3, 2)),
    ):
        with pytest.raises(RuntimeError, match="some elements of the input tensor and the written-to tensor"):
            write()
    a.add_(a)  # the same elements in the same layout
    assert a.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


@LIBS
def test_outputs_of_split_and_unbind_refuse_writes_and_use_after_their_memory_is_written(m):
    x = m.tensor(X, requires_grad=True)
    with pytest.raises(RuntimeError, match="output of a function that returns multiple views"):
        (x * 1).split([1, 1])[1].mul_(2)
    base = x * 1
    rows, cols = base.unbind(0), base.chunk(3, 1)
    views = (rows[0], cols[2][0])  # a view of one of them too
    base.add_(1)
    for view in views:
        with pytest.raises(RuntimeError, match="its base or another view of its base has been modified inplace"):
            view * 2


_EXPANDED_WRITES = [
    (view, op, grad) for view in _VIEWS for op in _inplace_fns(np.random.default_rng(0)) for grad in (False, True)
]


@pytest.mark.parametrize("view, op, grad", _EXPANDED_WRITES)
def test_writes_into_an_expanded_tensor_match_torch(view, op, grad):
    """fill_/zero_/masked_fill_/index_put_/tril_ and writes whose target has no aliases go through an
    expanded tensor (without grad: backward through such a write refuses, as torch's); others raise."""
    write = _inplace_fns(np.random.default_rng(0))[op]

    def run(m):
        x, o = m.tensor(X[:1], requires_grad=True), m.tensor(X[::-1].copy(), requires_grad=True)
        base = x * 1 if grad else m.tensor(X[:1])
        expanded = base.expand(2, 3)
        write(m, _VIEWS[view](expanded), o)
        out = [base.detach().numpy().copy(), expanded.detach().numpy().copy()]
        if grad:
            loss = (base * m.tensor([0.0, 1.0, 2.0])).sum() + (expanded * m.tensor(X)).sum()
            out += [None if g is None else g.numpy() for g in m.autograd.grad(loss, [x, o], allow_unused=True)]
        return out

    results = []
    for m in (dg, torch):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's deprecation of masked_fill_/index_put_ there
                results.append(run(m))
        except (RuntimeError, ValueError) as exc:  # torch's shape errors are RuntimeErrors
            results.append(str(exc))
    d, t = results
    if isinstance(t, str):  # as torch, and for the same reason where it is the aliasing
        assert isinstance(d, str) and ("memory location" in d) == ("memory location" in t), (d, t)
        return
    assert not isinstance(d, str), d
    for a, b in zip(d, t):
        assert (a is None) == (b is None)
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12)


@LIBS
def test_a_write_into_a_factor_whose_partner_needs_no_grad_keeps_backward_working(m):
    x = m.tensor(X, requires_grad=True) * 1
    y, z = x * 2, x / 4  # need 2 and 4, not x, for x's gradient
    x.add_(x, alpha=2)  # add_ with alpha multiplies x by 2 before the write
    (y + z).sum().backward()
    w = m.tensor(X, requires_grad=True) * 1
    u = w * m.tensor(Y, requires_grad=True)
    w.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        u.sum().backward()


def test_rounding_divisions_have_a_zero_gradient_where_the_divisor_is_zero():
    _same(lambda m, x, y: m.div(x, y * 0, rounding_mode="trunc") + m.div(x, y * 0, rounding_mode="floor"), X, Y)


@LIBS
def test_advanced_indexing_and_contiguous_give_contiguous_copies(m):
    x = m.tensor(X, requires_grad=True)
    picked = x[:, m.tensor([2, 0])]
    assert picked.view(-1).shape == (4,)  # a view needs the contiguous layout torch gives
    t = x.t().contiguous()
    t.mul_(2)  # a copy, not a view of the leaf
    assert t.grad_fn is not None and x.grad is None


@LIBS
def test_an_unbind_output_of_a_base_written_with_a_grad_value_requires_grad(m):
    base = m.zeros(2, 3, dtype=m.float64)
    rows = base.unbind(0)
    base[1:] = m.tensor(Y, requires_grad=True) * 2
    assert rows[0].requires_grad


@LIBS
def test_zero_dim_tensors_in_mT_and_take_along_dim(m):
    x = m.tensor(1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates mT of a 0-d tensor (the identity)
        assert x.mT.item() == 1.5
    with pytest.raises(IndexError, match="no dimensions"):
        m.take_along_dim(x, m.tensor(0), dim=0)


def test_clamp_by_tensors_is_nan_where_the_lower_bound_is_nan():
    lo = np.array([np.nan, 0.0, -5.0])
    _same(lambda m, x, y: m.clamp(x, min=m.tensor(lo), max=y * 0), X, Y)
    out = dg.clamp(dg.tensor(X), min=dg.tensor(lo), max=dg.zeros(3, dtype=dg.float64))
    assert np.isnan(out.numpy()[:, 0]).all()


def test_clamp_gives_zero_gradient_where_clamped_even_for_a_nan_incoming_one():
    _same(lambda m, x, y: m.clamp(x, -1, 1) * float("inf") + y, X, Y)  # weight 0 * inf: NaN at x = -2.5


@LIBS
def test_a_write_through_a_view_gives_the_old_value_a_zero_gradient_even_for_a_nan_incoming_one(m):
    # the base's graph after the write is where(written, new, old) (torch's CopySlices zeroes the
    # written region), not old * (1 - written) + new, whose old term turned a NaN gradient into NaN
    x = m.tensor([[0.1, 2.0, float("nan")], [1.0, 3.0, 0.2]], requires_grad=True)
    b = x * 1
    b[0].clamp_(-0.5, 0.5)
    (g,) = m.autograd.grad(b.logsumexp((0, 1)), x)  # the logsumexp of a NaN: a NaN gradient everywhere
    assert g[0, 1].item() == 0.0 and np.isnan(g[0, 0].item()) and np.isnan(g[1].numpy()).all()


@pytest.mark.parametrize("dim", [None, 0, 1])
def test_prod_gradient_without_zeros_is_torchs_g_times_prod_over_x(dim):
    # so NaN through a NaN or an inf/inf slice, and its double backward differentiates that formula
    x = np.array([[1.5, np.nan, 2.0], [3.0, -0.5, np.inf], [0.5, 2.0, -1.0]])

    def fn(m, a, b):
        p = a.prod() if dim is None else a.prod(dim)
        (g,) = m.autograd.grad((p * m.arange(p.numel(), dtype=m.float64).reshape(p.shape)).sum(), a, create_graph=True)
        return g * b.sum()

    _same(fn, x, Y)


@pytest.mark.parametrize("equation", ["ij,kj->ik", "ij,k->i"])
def test_einsum_sums_a_letter_only_one_operand_has_before_multiplying(equation):
    # torch sums b over j first (j has size 1 in x, or only b has it), so backward reads that sum:
    # a later write into b does not stop it, and float64 x meets float32 b in a product (fuzz seed 919)
    b0 = np.arange(12.0).reshape(3, 4).astype(np.float32)

    def fn(m, x, y):
        b = m.tensor(b0 if "kj" in equation else b0[0])
        out = m.einsum(equation, x, b) * y[0]
        b.zero_()
        return out

    _same(fn, np.array([[1.5], [-2.0], [0.5]]), Y)
