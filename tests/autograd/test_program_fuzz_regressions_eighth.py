"""Bugs the random-program fuzzer found in the ops of the API round (test_program_fuzz_new_ops.py, second hunt),
each pinned against torch (float64, values and gradients; second-order where the bug was there)."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")

X = np.array([[0.3, -0.5, 0.1], [0.7, -0.2, 0.05]])
SPD = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])


def _second_order(m, fn, *arrays):
    """grad of (grad of fn's weighted sum · v) w.r.t. the inputs, as arrays."""
    xs = [m.tensor(a, requires_grad=True) for a in arrays]
    out = fn(m, *xs)
    w = m.tensor(np.linspace(-1.0, 1.5, out.numel()).reshape(tuple(out.shape)))
    gs = m.autograd.grad((out * w).sum(), xs, create_graph=True)
    s = sum((g * m.tensor(np.linspace(0.5, -2.0, g.numel()).reshape(tuple(g.shape)))).sum() for g in gs)
    return [np.asarray(g.detach().numpy() if m is torch else g.detach().array) for g in m.autograd.grad(s, xs)]


# ---- logit's second order away from 0 and 1 (seed 270) --------------------------------------------------------
def test_logit_second_order_is_finite_inside_the_unit_interval():
    """logit's differentiable rule wrote its edge case as where(x ∈ {0, 1}, g·inf, g / (x(1 - x))): the
    g·inf branch, unselected, still sent g's own gradient 0·inf = NaN, so every second-order gradient through
    logit (here times a scatter_reduce prod, as the fuzzer's seed 270) came out NaN."""

    def fn(m, x, y):
        return x.scatter_reduce(0, m.tensor([[2], [2], [0]]), x * m.logit(y.sigmoid()).mean(), "prod")

    x, y = np.array([[1.4], [-1.2], [-1.3]]), X
    for got, want in zip(_second_order(dg, fn, x, y), _second_order(torch, fn, x, y)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_logit_gradient_at_the_edges_stays_infinite():
    x = np.array([0.0, 1.0, 0.25])
    check(lambda t: dg.logit(t) * 1.0, lambda t: torch.logit(t) * 1.0, x)


# ---- LAPACK results are column-major as torch's (seeds 512, 2591, 470, 1821, 2865) --------------------------------
@pytest.mark.parametrize(
    "fn",
    [
        lambda m, a: m.linalg.solve(a, a[:, :2] * 1.0),
        lambda m, a: m.linalg.inv(a),
        lambda m, a: a.inverse(),
        lambda m, a: m.linalg.cholesky(a),
        lambda m, a: m.cholesky(a, upper=True),
        lambda m, a: m.linalg.solve(a.expand(2, 3, 3), a.expand(2, 3, 3) * 2.0),
        lambda m, a: m.matrix_power(a, -1),
    ],
)
def test_lapack_results_have_torch_s_layout(fn):
    """torch's solve, inverse and cholesky return each matrix column-major (strides (1, n)), as LAPACK leaves
    it: view(-1) of one refuses and reshape(-1) copies, so a write through that reshape does not reach the
    result. distgraph's were row-major: its view succeeded and its reshape's write changed the result."""
    d, t = fn(dg, dg.tensor(SPD)), fn(torch, torch.tensor(SPD))
    assert (d.stride(), d.is_contiguous()) == (t.stride(), t.is_contiguous())
    for m, r in ((dg, d), (torch, t)):
        with pytest.raises(Exception, match="view"):
            r.view(-1)
    before = np.asarray(d.array).copy()
    d.reshape(-1).fill_(2.0)
    np.testing.assert_array_equal(np.asarray(d.array), before)


def test_solve_values_and_gradients_unchanged_by_the_layout():
    check(lambda a, b: dg.linalg.solve(a @ a.mT + dg.eye(3, dtype=a.dtype), b), lambda a, b: torch.linalg.solve(
        a @ a.mT + torch.eye(3, dtype=a.dtype), b), SPD, X.T.copy())  # fmt: skip
    check(lambda a: dg.cholesky(a @ a.mT, upper=True), lambda a: torch.cholesky(a @ a.mT, upper=True), SPD)


# ---- scans return contiguous results whatever their input's layout (seed 1136) ------------------------------------
@pytest.mark.parametrize("name", ["cumsum", "cumprod", "logcumsumexp", "cummax", "cummin"])
def test_scans_of_a_transposed_input_are_contiguous(name):
    """numpy's accumulate keeps its input's layout (a transposed input gives a transposed result); torch's
    scans return row-major, so reshape(-1) of the result is a view there and a write through it reaches
    the result. distgraph's reshape copied and the write was lost (logcumsumexp of rot90's output)."""
    for m in (dg, torch):
        x = m.tensor(X).T
        r = getattr(m, name)(x, 1)
        r = r[0] if isinstance(r, tuple) else r
        assert r.is_contiguous(), m.__name__
        r.reshape(-1).fill_(2.0)
        assert float(r.sum()) == 2.0 * r.numel()
    check(lambda a: dg.logcumsumexp(a.T, 1), lambda a: torch.logcumsumexp(a.T, 1), X)
    check(lambda a: dg.cummax(a.T, 1)[0], lambda a: torch.cummax(a.T, 1)[0], X)


# ---- index_copy into a 0-d tensor takes a source of shape (1,) (seeds 238, 3225, 3250) --------------------------
def test_index_copy_of_a_0d_self_takes_a_source_of_shape_1():
    def fn(m, x, s):
        return m.index_copy(x * 1.0, 0, m.tensor([0]), s * 2.0)

    check(lambda x, s: fn(dg, x, s), lambda x, s: fn(torch, x, s), np.array(1.5), np.array([0.25]))
    for m in (dg, torch):
        x = m.tensor(1.5)
        x.index_copy_(0, m.tensor([0]), m.tensor([3.0]))
        assert float(x) == 3.0
        with pytest.raises(Exception, match="shape"):
            m.tensor(1.5).index_add_(0, m.tensor([0]), m.tensor([3.0]))
