"""Views and in-place writes where torch has special rules (ops/views.py, autograd/function.py), each
program run in distgraph and torch and compared: hooks and retain_grad across a view's graph being
rebuilt, and the writes torch refuses into views made in no_grad or inference mode or returned
together by one op (its CreationMeta)."""

import re

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")

X = np.arange(6.0).reshape(2, 3) - 2.5
W = np.array([1.0, 2.0, 3.0])


def _run(m, program):
    """`program(m, x, calls)` in library `m` on a leaf x; returns its result, the hooks' calls and x.grad."""
    x = m.tensor(X, requires_grad=True)
    calls = []
    out = program(m, x, calls)
    grad = None if x.grad is None else x.grad.tolist()
    return out, calls, grad


def _same(program):
    d, t = _run(dg, program), _run(torch, program)
    assert d[1] == t[1], f"hook calls {d[1]}, torch {t[1]}"
    assert d[2] == t[2], f"x.grad {d[2]}, torch {t[2]}"
    assert d[0] == t[0], f"result {d[0]}, torch {t[0]}"


def _hook(calls, name):
    return lambda g: calls.append((name, g.tolist()))


# ---- hooks on a view whose graph is rebuilt -------------------------------------------------------

_WRITES = {  # an in-place write into the memory of `base`, whose view `a = base[0]` holds a hook
    "through a sibling view": lambda base, a: base[:, 1].mul_(3),
    "through the view itself": lambda base, a: a.mul_(2),
    "into the base": lambda base, a: base.mul_(2),
    "by setitem on the view": lambda base, a: a.__setitem__(1, base[1, 0] * 4),
}


@pytest.mark.parametrize("write", list(_WRITES))
def test_a_hook_on_a_view_sees_only_what_reaches_its_old_graph_as_torch(write):
    """torch keeps a view's hooks on the graph it had when they were registered: after a write into its
    memory rebuilt the view's graph, a backward from the view's new value does not call them (even a
    write through the view itself sends the old value's gradient straight to the base); a result
    computed from the view before the write still calls them with that result's gradient."""

    def program(m, x, calls):
        base = x * 1
        a = base[0]
        a.register_hook(_hook(calls, "view"))
        early = a * 2
        _WRITES[write](base, a)
        (a * m.tensor(W)).sum().backward(retain_graph=True)
        calls.append("early")
        early.sum().backward()
        return base.tolist()

    _same(program)


@pytest.mark.parametrize("write", list(_WRITES))
def test_retain_grad_follows_a_view_to_its_rebuilt_graph_as_torch(write):
    """torch moves the retain_grad hook (no other) to a tensor's new graph: `.grad` is the gradient of
    the value the tensor holds at backward, even after its graph was rebuilt; a hook registered after
    retain_grad stays behind."""

    def program(m, x, calls):
        base = x * 1
        a = base[0]
        a.retain_grad()
        a.register_hook(lambda g: g * 10)
        _WRITES[write](base, a)
        (a * m.tensor(W)).sum().backward()
        return a.grad.tolist()

    _same(program)


def test_retain_grad_follows_a_tensor_written_in_place_and_a_base_written_through_a_view_as_torch():
    def program(m, x, calls):
        plain = x * 1
        plain.retain_grad()
        plain.mul_(2)
        base = x * 1
        base.retain_grad()
        base[1].mul_(3)
        (plain * 3 + base * 5).sum().backward()
        return [plain.grad.tolist(), base.grad.tolist()]

    _same(program)


def test_gradients_through_a_view_written_in_place_match_torch():
    def fn(m, x, y):
        base = x * 1
        a, b = base[0], base[:, 1:]
        a.mul_(y)
        b.add_(a[1:] * 2)  # a view of a view, read after its memory was written
        a.retain_grad()
        return a * base.sum() + b.sum()

    check(lambda x, y: fn(dg, x, y), lambda x, y: fn(torch, x, y), X, W)


# ---- writes into views torch marks with how they were made ---------------------------------------


def _no_grad_view(m, base):
    with m.no_grad():
        return base[0]


def _in_set_grad_disabled(m, base):
    m.set_grad_enabled(False)
    try:
        return base[0]
    finally:
        m.set_grad_enabled(True)


def _inference_view(m, base):
    with m.inference_mode():
        return base[0]


def _view_of_no_grad_view(m, base):
    return _no_grad_view(m, base)[1:]


def _no_grad_view_of_a_view(m, base):
    a = base[0]
    with m.no_grad():
        return a[1:]


def _split_in_no_grad(m, base):
    with m.no_grad():
        return base.split([1, 1])[1]


def _unbind_in_no_grad(m, base):
    with m.no_grad():
        return base.unbind(0)[0]


def _chunk(m, base):
    return base.chunk(3, 1)[2]


def _unbind_then_view(m, base):
    return base.unbind(0)[1][1:]


def _detached_view(m, base):
    return base.detach()[0]


def _no_grad_view_of_a_detached_base(m, base):
    d = base.detach()
    with m.no_grad():
        return d[0]


def _copying_reshape_in_no_grad(m, base):
    with m.no_grad():
        return base.t().reshape(6)  # a copy, not a view


_MAKERS = [
    _no_grad_view,
    _in_set_grad_disabled,
    _inference_view,
    _view_of_no_grad_view,
    _no_grad_view_of_a_view,
    _split_in_no_grad,
    _unbind_in_no_grad,
    _chunk,
    _unbind_then_view,
    _detached_view,
    _no_grad_view_of_a_detached_base,
    _copying_reshape_in_no_grad,
]

_INPLACE = {
    "mul_": lambda m, v, y: v.mul_(2),
    "mul_ by a grad value": lambda m, v, y: v.mul_(y.reshape(-1)[0]),
    "fill_": lambda m, v, y: v.fill_(1.5),
    "zero_": lambda m, v, y: v.zero_(),
    "copy_": lambda m, v, y: v.copy_(m.ones(v.shape, dtype=m.float64)),
    "setitem": lambda m, v, y: v.__setitem__(..., 4.0),
    "uniform_": lambda m, v, y: v.uniform_(),
}


def _refusal(message):
    """What a refusal says, in the terms torch's messages share: the mode the view was made in and
    whether it is the view itself that is written."""
    mode = re.search(r"created in (no_grad|inference) mode|returns multiple views", message)
    what = re.search(r"is being|its base or another view of its base has been", message)
    return (mode and mode.group(1) or "multiple", what and what.group(0)) if mode else message


def _outcome(m, make, base_grad, write, inside=False):
    """Make a view of a base (requiring grad or not), write into it (inside no_grad or not); the values,
    and the gradient of x where the base requires grad, or the refusal."""
    x = m.tensor(X, requires_grad=True)
    y = m.tensor(W, requires_grad=True)
    base = x * 1 if base_grad else m.tensor(X)
    view = make(m, base)
    try:
        if inside:
            with m.no_grad():
                _INPLACE[write](m, view, y)
        else:
            _INPLACE[write](m, view, y)
    except RuntimeError as exc:
        return _refusal(str(exc)), str(exc)
    out = [base.detach().tolist(), view.requires_grad, base.requires_grad]
    if write == "uniform_":
        out[0] = base.shape
    if base.requires_grad:
        try:
            base.sum().backward()
        except RuntimeError as exc:  # as torch: a write through one of several views returned together
            return _refusal(str(exc)), str(exc)
        out += [None if x.grad is None else x.grad.tolist(), None if y.grad is None else y.grad.tolist()]
    return out, None


@pytest.mark.parametrize("write", list(_INPLACE))
@pytest.mark.parametrize("base_grad", [True, False], ids=["base-requires-grad", "base-no-grad"])
@pytest.mark.parametrize("make", _MAKERS, ids=lambda f: f.__name__.strip("_"))
def test_a_write_into_a_view_is_refused_where_torch_refuses_it(make, base_grad, write):
    """torch refuses an in-place write recorded by autograd (grad mode on; the view's memory or the
    written value requires grad) into a view made in no_grad or inference mode (or a view of one), and
    into one of the views an op returned together (split, chunk, unbind); views of a detached tensor,
    and a reshape that copied, are free."""
    d, d_msg = _outcome(dg, make, base_grad, write)
    t, _ = _outcome(torch, make, base_grad, write)
    assert d == t
    if d_msg is not None:
        assert d_msg.startswith(("setitem", write.split()[0])), d_msg  # it names the op


@pytest.mark.parametrize("make", [_no_grad_view, _split_in_no_grad, _inference_view], ids=lambda f: f.__name__)
def test_a_write_into_a_view_made_in_no_grad_mode_is_free_inside_no_grad_as_torch(make):
    d, t = (_outcome(m, make, True, "mul_", inside=True)[0] for m in (dg, torch))
    assert d == t


@pytest.mark.parametrize("make", [_no_grad_view, _view_of_no_grad_view, _split_in_no_grad, _inference_view])
@pytest.mark.parametrize("where", ["base in grad mode", "base in no_grad", "sibling view"])
def test_a_view_made_in_no_grad_mode_is_refused_in_autograd_once_its_memory_was_written(make, where):
    """torch: after its base (or another view of it) was written, whatever the mode, such a view has no
    graph; it still requires grad, but an op on it raises."""

    def outcome(m):
        x = m.tensor(X, requires_grad=True)
        base = x * 1
        view = make(m, base)
        if where == "base in no_grad":
            with m.no_grad():
                base.add_(1)
        elif where == "sibling view":
            base[1].add_(1)
        else:
            base.add_(1)
        rg = view.requires_grad
        try:
            view * 2
        except RuntimeError as exc:
            return rg, _refusal(str(exc))
        return rg, None

    assert outcome(dg) == outcome(torch)


def _custom_function_outcomes(m):
    """Writes into the views a custom Function returns (of its input, of its own intermediate; one of
    two outputs or alone; recorded or not) and their use after their memory was written."""

    class Two(m.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a[0], a[1] * 2

        @staticmethod
        def backward(ctx, g, h):
            return m.zeros(2, 3, dtype=g.dtype)

    class One(m.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return (a * 2)[0]

        @staticmethod
        def backward(ctx, g):
            return m.zeros(2, 3, dtype=g.dtype)

    x = m.tensor(X, requires_grad=True)
    free = m.tensor(W, requires_grad=True)
    base = x * 1
    writes = [
        lambda: Two.apply(base)[0].mul_(2),
        lambda: Two.apply(base)[1].mul_(2),
        lambda: Two.apply(m.zeros(2, 3, dtype=m.float64))[0].mul_(2),
        lambda: Two.apply(m.zeros(2, 3, dtype=m.float64))[0].mul_(free),
        lambda: One.apply(base).mul_(2),
        lambda: One.apply(base)[1:].mul_(2),
    ]
    out = []
    for write in writes:
        try:
            write()
            out.append("ok")
        except RuntimeError as exc:
            out.append(re.sub(r"^\w+: |Output \d+ of \w+ ", "", str(exc)))
    view = Two.apply(base)[0]
    base.add_(1)
    try:
        view * 2
    except RuntimeError as exc:
        out.append(str(exc))
    return out


def test_a_view_a_custom_function_returns_is_refused_a_write_as_torch():
    """torch: writing into it would bypass the Function's backward."""
    assert _custom_function_outcomes(dg) == _custom_function_outcomes(torch)
