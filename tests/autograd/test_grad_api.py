"""Hooks, retain_grad, autograd.grad and backward(inputs=...) where they meet, each against torch:
which gradient a hooked non-leaf reports, and in which order retain_grad sees the hooks."""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")
A = np.array([0.3, -1.2, 2.0])


def test_retain_grad_sees_the_gradient_after_hooks_registered_later_like_torch():
    results = []
    for lib in (dg, torch):
        x = lib.tensor(A, requires_grad=True)
        y = x * 2
        y.retain_grad()
        y.register_hook(lambda g: g * 10)
        (y * y).sum().backward()
        results.append((x.grad.tolist(), y.grad.tolist(), y.retains_grad))
    assert results[0] == results[1]


def test_autograd_grad_reports_a_hooked_non_leaf_before_its_hook_like_torch():
    results = []
    for lib in (dg, torch):
        x = lib.tensor(A, requires_grad=True)
        y = x * 2
        y.register_hook(lambda g: g * 100)
        gy, gx = lib.autograd.grad((y * 3).sum(), [y, x])
        results.append((gy.tolist(), gx.tolist()))
    assert results[0] == results[1]


def test_backward_inputs_on_a_retained_hooked_non_leaf_is_not_counted_twice():
    results = []
    for lib in (dg, torch):
        x = lib.tensor(A, requires_grad=True)
        y = x * 2
        y.retain_grad()
        y.register_hook(lambda g: g * 100)
        (y * 3).sum().backward(inputs=[y, x])
        results.append((y.grad.tolist(), x.grad.tolist()))
    assert results[0] == results[1]


def test_grad_mode_decorators_cover_set_grad_enabled_bare_no_grad_and_generators_like_torch():
    results = []
    for lib in (dg, torch):
        x = lib.tensor(A, requires_grad=True)

        @lib.set_grad_enabled(False)
        def off(t):
            return t * 2

        @lib.no_grad
        def bare(t):
            return t * 2

        @lib.no_grad()
        def steps(t):
            yield t * 2
            yield t * 3

        after_decorating = lib.is_grad_enabled()
        flags = [off(x).requires_grad, bare(x).requires_grad]
        for y in steps(x):
            flags += [y.requires_grad, lib.is_grad_enabled()]  # the caller's mode between steps
        results.append((after_decorating, flags))
    assert results[0] == results[1] == (True, [False, False, False, True, False, True])


def test_grad_takes_only_inputs_and_materialize_grads_and_backward_checks_inputs_like_torch():
    for lib in (dg, torch):
        x, unused = lib.tensor(A, requires_grad=True), lib.tensor(A, requires_grad=True)
        gx, gu = lib.autograd.grad((x * 2).sum(), [x, unused], only_inputs=True, materialize_grads=True)
        assert gx.tolist() == [2.0, 2.0, 2.0] and gu.tolist() == [0.0, 0.0, 0.0]
        with pytest.raises(RuntimeError, match="cannot be empty"):
            (x * 2).sum().backward(inputs=[])
        with pytest.raises(RuntimeError, match="requires_grad=False|does not require grad"):
            (x * 2).sum().backward(inputs=[lib.tensor(A)])


def test_in_place_change_through_data_is_not_versioned_like_torch():
    results = []
    for lib in (dg, torch):
        x = lib.tensor(A, requires_grad=True)
        y = x * 1
        z = y * y  # saves y
        y.data.add_(1)
        z.sum().backward()  # torch: no error, the gradient uses the changed value
        results.append((y._version, x.grad.tolist()))
    assert results[0] == results[1]
