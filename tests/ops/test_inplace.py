"""In-place variants (ops/methods.py): values and gradients against torch when applied to non-leaf
tensors and to views of them, the leaf/dtype/shape refusals torch makes, and version counters that
catch an in-place change of a tensor backward still needs."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import POS, UNIT, Table, run_gradcheck, run_parity, torch

T = Table()
for name, args, domain in [
    ("add_", (0.5,), None),
    ("sub_", (0.5,), None),
    ("mul_", (3.0,), None),
    ("div_", (4.0,), None),
    ("pow_", (2,), None),
    ("neg_", (), None),
    ("exp_", (), None),
    ("log_", (), POS),
    ("sqrt_", (), POS),
    ("rsqrt_", (), POS),
    ("abs_", (), None),
    ("sin_", (), None),
    ("cos_", (), None),
    ("tan_", (), UNIT),
    ("tanh_", (), None),
    ("sigmoid_", (), None),
    ("relu_", (), None),
    ("clamp_", (-0.3, 0.4), None),
    ("clip_", (None, 0.2), None),
    ("reciprocal_", (), POS),
    ("square_", (), None),
    ("log1p_", (), POS),
    ("expm1_", (), None),
    ("atan_", (), None),
    ("asin_", (), UNIT),
    ("erf_", (), None),
    ("fmod_", (0.7,), None),
    ("tril_", (), None),
    ("triu_", (1,), None),
]:
    T.op(name, lambda m, a, n=name, args=args: getattr(a * 1, n)(*args) * a, (3, 3), domain=domain or "any")
T.op("add_-tensor-alpha", lambda m, a, b: (a * 1).add_(b, alpha=2.0) * a, (3, 4), (4,))
T.op("mul_-tensor", lambda m, a, b: (a * 1).mul_(b) * b, (3, 4), (3, 1))
T.op("div_-tensor", lambda m, a, b: (a * 1).div_(b), (3, 4), (4,), domain=POS)
T.op("maximum_", lambda m, a, b: (a * 1).maximum_(b) if m is dg else torch.maximum(a * 1, b), (3, 4), (4,))
T.op("masked_fill_", lambda m, a: (a * 1).masked_fill_(a > 0, 0.5) * a, (3, 4))
T.op("scatter_add_", lambda m, a, b: (a * 1).scatter_add_(1, m.tensor(np.array([[0], [3], [0]])), b), (3, 4), (3, 1))
T.op("chain-of-inplace", lambda m, a: (a * 1).mul_(2).add_(a).neg_().sin_(), (3, 4))
T.op("lerp_", lambda m, a, b: (a * 1).lerp_(b, 0.25) * a, (3, 4), (4,))
T.op("iadd-imul-operators", lambda m, a, b: _iops(a * 1, b), (3, 4), (4,))
T.op("copy_", lambda m, a, b: (a * 1).copy_(b) * a, (3, 4), (4,))
T.op("zero_-then-add", lambda m, a, b: (a * 1).zero_() + b * a, (3, 4), (3, 4), gradcheck=False)
T.op("fill_", lambda m, a: (a * 1).fill_(2.0) * a, (3, 4))
# in-place writes through views reach the base, and so does the gradient (torch's CopySlices)
T.op("view-row-mul_", lambda m, a: _on_view(a, lambda c: c[0].mul_(2)), (3, 4))
T.op("view-slice-exp_", lambda m, a: _on_view(a, lambda c: c[:, 1:3].exp_()), (3, 4))
T.op("view-transpose-add_", lambda m, a, b: _on_view(a, lambda c: c.T.add_(b)), (3, 4), (3,))
T.op("view-reshape-sigmoid_", lambda m, a: _on_view(a, lambda c: c.reshape(2, 6).sigmoid_()), (3, 4))
T.op("view-of-view-neg_", lambda m, a: _on_view(a, lambda c: c[1:].reshape(8)[::3].neg_()), (3, 4))
T.op("setitem-on-view", lambda m, a, b: _on_view(a, lambda c: c[1].__setitem__(slice(0, 2), b * 2)), (3, 4), (2,))


def _iops(c, b):
    c += b
    c *= b
    c -= 1.5
    c /= 2.0
    return c


def _on_view(a, write):
    c = a * 1
    write(c)
    return c * a  # c's new value and a itself: both paths must be right


@pytest.mark.parametrize("row", T.rows())
def test_inplace_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_inplace_gradcheck(row):
    run_gradcheck(row)


def test_inplace_returns_self_and_writes_through_views():
    x = dg.zeros(2, 3)
    assert x.add_(1) is x and x[0].mul_(5) is not None
    assert x.tolist() == [[5.0, 5.0, 5.0], [1.0, 1.0, 1.0]]
    x.T[2].fill_(-1)
    assert x[:, 2].tolist() == [-1.0, -1.0]


def test_inplace_on_leaf_requiring_grad_raises_like_torch():
    w = dg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w.add_(1)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w[0] = 2.0
    with dg.no_grad():  # an optimizer step: allowed, and the version moves
        before = w._version
        w.sub_(0.5)
        w[1] = 0.0
    assert w.tolist() == [0.5, 0.0, 0.5] and w._version == before + 2 and w.requires_grad


def test_inplace_dtype_and_shape_refusals_match_torch():
    i = dg.tensor([1, 2])
    with pytest.raises(TypeError, match="add_.*float32.*int64"):
        i.add_(1.5)
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2]).add_(1.5)
    i.add_(True)  # bool into int64: allowed
    assert i.tolist() == [2, 3]
    with pytest.raises(ValueError, match=r"mul_.*\(3,\).*\(2, 3\)"):
        dg.ones(3).mul_(dg.ones(2, 3))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda a: a.add_(1),
        lambda a: a[0].mul_(2),  # through a view: the base's version moves too
        lambda a: a.T.zero_(),
        lambda a: a.__setitem__(1, 5.0),
        lambda a: a.reshape(-1)[2:].fill_(0),
    ],
    ids=["add_", "view-mul_", "transpose-zero_", "setitem", "reshape-slice-fill_"],
)
def test_version_counter_catches_inplace_change_of_saved_tensor(mutate):
    x = dg.randn(3, 4, requires_grad=True)
    a = x * 1
    y = (a.exp() * a).sum()  # saves a (mul) and exp's output
    with dg.no_grad():
        mutate(a)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_inplace_on_saved_output_is_caught():
    x = dg.randn(4, requires_grad=True)
    e = x.exp()  # exp's backward reads its output
    e.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        e.sum().backward()


def test_inplace_on_expanded_view_is_refused_like_torch():
    a = dg.randn(3, 1, requires_grad=True) * 1
    with pytest.raises(RuntimeError, match="single memory location"):
        a.expand(3, 4).add_(1)


# 0-d results: numpy hands back immutable scalars for 0-d arithmetic, and x[i] of a 1-D array copies
# the element out; torch's 0-d tensors are writable, and an element is a view of its base
T0 = Table()
T0.op("0d-mul_-of-sum", lambda m, a: a.sum().mul_(2) * a, (3,))
T0.op("0d-iadd", lambda m, a, b: _iadd_0d(a.sum() * 1, b), (3,), ())
T0.op("0d-sub_-tensor", lambda m, a: (a * a).sub_(a), ())
T0.op("0d-setitem", lambda m, a, b: _setitem_0d(a * 1, b), (), ())
T0.op("element-view-mul_", lambda m, a: _on_view(a, lambda c: c[1].mul_(3)), (3,))
T0.op("element-view-2d-add_", lambda m, a: _on_view(a, lambda c: c[1, 2].add_(4)), (2, 3))


def _iadd_0d(s, b):
    s += b
    return s


def _setitem_0d(c, b):
    c[()] = b * 2
    return c


@pytest.mark.parametrize("row", T0.rows())
def test_inplace_on_0d_tensors_matches_torch(row, device):
    run_parity(row, device)


def test_element_of_a_tensor_is_a_writable_view_like_torch():
    x = dg.tensor([1.0, 2.0, 3.0])
    e = x[1]
    e.add_(10)
    assert x.tolist() == [1.0, 12.0, 3.0] and e.item() == 12.0
    m = dg.zeros(2, 3)
    m[1][2] = 5.0
    assert m.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 5.0]]


def test_gradients_of_0d_tensors_are_writable():
    x = dg.tensor(np.array(2.0), requires_grad=True)
    (g,) = dg.autograd.grad(x.exp(), x)
    g.add_(1)
    y = x * 1
    y.retain_grad()
    (y * y).backward()
    y.grad.mul_(2)
    assert np.isclose(g.item(), np.exp(2.0) + 1) and y.grad.item() == 8.0
