"""A view made in no_grad (or inference) mode of a tensor that requires grad, against torch: it requires
grad through its base (torch's views derive requires_grad from their base) yet has no grad_fn and no
place for a gradient, so ops on it record a graph that reaches nothing; writes into it are refused."""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")
A = np.array([0.5, -1.0, 2.0])
VIEWS = {
    "slice": lambda t: t[0:2],
    "view": lambda t: t.view(3),
    "T": lambda t: t.reshape(1, 3).T,
    "unsqueeze": lambda t: t.unsqueeze(0),
}


def _outcome(fn):
    """fn()'s result, or 'raises' (so both libraries' refusals compare equal)."""
    try:
        return fn()
    except RuntimeError:
        return "raises"


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("make", VIEWS, ids=list(VIEWS))
def test_view_made_without_grad_mode_requires_grad_through_its_base_like_torch(make, mode):
    results = []
    for lib in (dg, torch):
        x = lib.tensor(A, requires_grad=True)
        with getattr(lib, mode)():
            v = VIEWS[make](x)
        y = v * 2
        flags = [v.requires_grad, v.grad_fn is None, v.is_leaf, y.requires_grad, y.grad_fn is None]
        y.sum().backward()  # reaches neither v nor x, and does not raise
        flags += [v.grad is None, x.grad is None, v.detach().requires_grad, v.detach().is_leaf]
        results.append(flags)
    assert results[0] == results[1] == [True, True, True, True, False, True, True, False, True]


def test_no_grad_view_gets_no_gradient_and_refuses_a_write_under_grad_mode_like_torch():
    results = []
    for lib in (dg, torch):
        x = lib.tensor(A, requires_grad=True)
        with lib.no_grad():
            v = x[0:2]
        row = [
            _outcome(lambda: lib.autograd.grad((v * 2).sum(), v)),  # unused: v has no place for a gradient
            _outcome(lambda: lib.autograd.grad((v * 2).sum(), x, allow_unused=True)[0]),
            _outcome(lambda: v.backward(lib.ones(2, dtype=lib.float64))),  # no grad_fn, no accumulator
            _outcome(lambda: v.mul_(2)),  # ambiguous: made in no_grad, written with grad
            _outcome(lambda: v.detach_()),
        ]
        with lib.no_grad():
            v.mul_(2)  # where both belong: allowed
        # the write moved the shared version: v has no graph to rebuild, so reading grad_fn raises
        row += [v.requires_grad, _outcome(lambda: v.grad_fn), x.detach().tolist()]
        results.append(row)
    assert results[0] == results[1]
    assert results[0][:5] == ["raises", None, "raises", "raises", "raises"]


def test_requires_grad_flag_of_a_no_grad_view_is_its_own_or_its_bases_like_torch():
    results = []
    for lib in (dg, torch):
        x = lib.tensor(A, requires_grad=True)
        with lib.no_grad():
            v, w = x[0:2], x[1:3]
        v.requires_grad_(False)  # allowed (a leaf), but the base still makes it require grad
        w.requires_grad_(True)  # its own flag: now it is a leaf that accumulates a gradient
        (w * 3).sum().backward()
        row = [v.requires_grad, w.grad.tolist(), x.grad]
        x.requires_grad_(False)
        row.append(v.requires_grad)  # derived, not frozen at creation
        a = lib.tensor(A)
        av = a[0:2]  # made with grad mode on, of a tensor not requiring grad yet
        a.requires_grad_(True)
        row += [av.requires_grad, av.grad_fn is None, _outcome(lambda: (av * 2).sum().backward()), a.grad]
        results.append(row)
    assert results[0] == results[1] == [True, [3.0, 3.0], None, False, True, True, None, None]
