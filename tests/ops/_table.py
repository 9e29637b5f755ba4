"""The op-table machinery shared by tests/ops/test_*.py (tinygrad's helper_test_op, table form).

A row is one op: an id, a function `fn(m, *inputs)` written once for both libraries (`m` is the
module, `dg` or `torch`), the input shapes and their domain. Each table file parametrizes three
tests over its rows: parity with torch float64 (forward + input gradients, rtol 1e-7, on the `device`
fixture), central-difference gradcheck, and — for the rows marked so — double backward vs torch.
"""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")

ANY, POS, UNIT, GT1, NONZERO = "any", "pos", "unit", "gt1", "nonzero"


class Table:
    """Collects rows; `rows()` / `gradcheck_rows()` / `double_rows()` feed pytest.mark.parametrize."""

    def __init__(self):
        self._rows = []

    def op(self, name, fn, *shapes, domain=ANY, grad=True, gradcheck=True, double=False, rtol=1e-7):
        self._rows.append((name, fn, shapes, domain, grad, gradcheck, double, rtol))

    def rows(self):
        return [pytest.param(r, id=r[0]) for r in self._rows]

    def gradcheck_rows(self):
        return [pytest.param(r, id=r[0]) for r in self._rows if r[4] and r[5] and not _has_empty(r[2])]

    def double_rows(self):
        return [pytest.param(r, id=r[0]) for r in self._rows if r[6]]


def _has_empty(shapes):
    return any(0 in s for s in shapes)


def inputs(shapes, domain, seed=0):
    """Random float64 arrays of `shapes` inside the op's domain (away from kinks and poles)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        a = np.asarray(rng.standard_normal(s))
        if domain == POS:
            a = np.abs(a) + 0.5
        elif domain == UNIT:
            a = np.tanh(a) * 0.9
        elif domain == GT1:
            a = np.abs(a) + 1.5
        elif domain == NONZERO:
            a = np.sign(a) * (np.abs(a) + 0.3)
        out.append(np.asarray(a))
    return out


def run_parity(row, device):
    _, fn, shapes, domain, grad, _, _, rtol = row
    check(lambda *a: fn(dg, *a), lambda *a: fn(torch, *a), *inputs(shapes, domain), grad=grad, rtol=rtol, device=device)


def run_gradcheck(row):
    _, fn, shapes, domain, *_ = row
    xs = [dg.tensor(a, requires_grad=True) for a in inputs(shapes, domain, seed=1)]
    assert dg.autograd.gradcheck(lambda *a: fn(dg, *a), xs)


def run_double_backward(row):
    """grad of sum(fn) with create_graph, then the gradient of sum(g*g) — both against torch."""
    _, fn, shapes, domain, *_ = row
    arrays = inputs(shapes, domain, seed=2)
    xs = [dg.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    gs = dg.autograd.grad(fn(dg, *xs).sum(), xs, create_graph=True)
    gts = torch.autograd.grad(fn(torch, *ts).sum(), ts, create_graph=True)
    for g, gt in zip(gs, gts):
        np.testing.assert_allclose(g.detach().numpy(), gt.detach().numpy(), rtol=1e-7, atol=1e-12)
    sum(((g * g).sum() for g in gs), dg.tensor(0.0, dtype=dg.float64)).backward()
    sum((gt * gt).sum() for gt in gts).backward()
    for x, t in zip(xs, ts):
        if t.grad is None:
            assert x.grad is None or not np.any(x.grad.numpy())
        else:
            np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-7, atol=1e-12)
