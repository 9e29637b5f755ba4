"""Sequential's list operations against torch 2.x: keys after del/insert/pop, +, +=, *, *=, errors."""

from collections import OrderedDict

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn

torch = pytest.importorskip("torch")


def _layout(seq):
    """Member names, member types and state_dict keys: what must agree with torch."""
    return list(seq._modules), [type(m).__name__ for m in seq], list(seq.state_dict())


def _base(m):
    return m.Sequential(m.Linear(2, 3), m.ReLU(), m.Linear(3, 2))


def _named(m):
    return m.Sequential(OrderedDict(a=m.Linear(2, 2), b=m.Tanh(), c=m.Sigmoid()))


def _del(s):
    del s[1]
    return s


def _del_slice(s):
    del s[0:2]
    return s


def _iadd(s, m):
    s += m.Sequential(m.Tanh())
    return s


def _imul(s):
    s *= 3
    return s


@pytest.mark.parametrize(
    "build, op",
    [
        (_base, lambda s, m: _del(s)),
        (_base, lambda s, m: _del_slice(s)),
        (_named, lambda s, m: _del(s)),
        (_base, lambda s, m: s.insert(1, m.Tanh())),
        (_base, lambda s, m: s.insert(-1, m.Tanh())),
        (_base, lambda s, m: s.insert(3, m.Tanh())),
        (_base, lambda s, m: (s.pop(0), s)[1]),
        (_base, lambda s, m: s.extend(m.Sequential(m.Tanh(), m.ReLU()))),
        (_base, lambda s, m: s.append(m.Tanh())),
        (_base, lambda s, m: s + m.Sequential(m.Tanh())),
        (_base, _iadd),
        (_base, lambda s, m: s * 2),
        (_base, lambda s, m: 2 * s),
        (_base, lambda s, m: _imul(s)),
        (_base, lambda s, m: s[1:]),
    ],
    ids=[
        "del",
        "del-slice",
        "del-named",
        "insert",
        "insert-negative",
        "insert-end",
        "pop",
        "extend",
        "append",
        "add",
        "iadd",
        "mul",
        "rmul",
        "imul",
        "slice",
    ],
)
def test_sequential_list_operations_leave_the_keys_torch_leaves(build, op):
    assert _layout(op(build(nn), nn)) == _layout(op(build(torch.nn), torch.nn))


def test_sequential_times_n_shares_its_modules_and_runs_like_torch():
    t = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh()).double()
    d = nn.Sequential(nn.Linear(3, 3), nn.Tanh()).double()
    d.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    t2, d2 = t * 2, d * 2
    assert d2[0] is d2[2] and t2[0] is t2[2]
    x = np.random.default_rng(0).standard_normal((4, 3))
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    d2(xd).sum().backward()
    t2(xt).sum().backward()
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(d[0].weight.grad.numpy(), t[0].weight.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize(
    "op, err",
    [
        (lambda s, m: s * 0, ValueError),
        (lambda s, m: s * 1.5, TypeError),
        (lambda s, m: s + [m.ReLU()], ValueError),
        (lambda s, m: s.__iadd__([m.ReLU()]), ValueError),
        (lambda s, m: s.insert(4, m.ReLU()), IndexError),
        (lambda s, m: s.insert(-4, m.ReLU()), IndexError),
    ],
    ids=["mul-zero", "mul-float", "add-list", "iadd-list", "insert-past-end", "insert-before-start"],
)
def test_sequential_refuses_what_torch_refuses(op, err):
    with pytest.raises(err):
        op(_base(torch.nn), torch.nn)
    with pytest.raises(err):
        op(_base(nn), nn)
