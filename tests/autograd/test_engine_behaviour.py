"""The engine's contract: retain_graph, higher order, hooks, grad modes, version counters, anomaly
detection, custom Functions, deep chains, freeing saved arrays — each against torch's behaviour."""

import gc
import weakref

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import AutogradError

torch = pytest.importorskip("torch")


def test_second_backward_through_freed_graph_raises_like_torch():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()  # retained: works, accumulates
    np.testing.assert_allclose(x.grad.numpy(), 2 * (np.exp([1, 2]) * (1 + np.array([1, 2]))), rtol=1e-6)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_third_order_gradient_matches_torch():
    a = np.array([0.3, -1.2, 2.0])
    x, xt = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    f, ft = (x.sin() * x**3).sum(), (xt.sin() * xt**3).sum()
    (g1,) = dg.autograd.grad(f, [x], create_graph=True)
    (g1t,) = torch.autograd.grad(ft, [xt], create_graph=True)
    (g2,) = dg.autograd.grad(g1.sum(), [x], create_graph=True)
    (g2t,) = torch.autograd.grad(g1t.sum(), [xt], create_graph=True)
    (g3,) = dg.autograd.grad(g2.sum(), [x])
    (g3t,) = torch.autograd.grad(g2t.sum(), [xt])
    np.testing.assert_allclose(g3.numpy(), g3t.numpy(), rtol=1e-10)


def test_hooks_see_and_replace_gradients():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy().copy()))
    y = x * 3
    handle = y.register_hook(lambda g: g * 10)
    y.sum().backward()
    assert np.array_equal(seen[0], [30.0, 30.0]) and np.array_equal(x.grad.numpy(), [30.0, 30.0])
    handle.remove()


def test_no_grad_and_enable_grad_as_context_and_decorator():
    x = dg.tensor([1.0], requires_grad=True)
    with dg.no_grad():
        assert not (x * 2).requires_grad
        with dg.enable_grad():
            assert (x * 2).requires_grad

    @dg.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad and (x * 2).requires_grad


def test_in_place_change_of_saved_tensor_raises_instead_of_wrong_gradient():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    a = x * 1
    y = (a * a).sum()  # saves a
    with dg.no_grad():
        a.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_detect_anomaly_names_the_op_and_the_forward_line():
    x = dg.tensor([0.0, 1.0], requires_grad=True)
    with dg.autograd.detect_anomaly():
        y = x.sqrt().sum()  # d sqrt/dx at 0 is inf
        with pytest.raises(AutogradError) as info:
            y.backward()
    msg = str(info.value)
    assert "sqrt" in msg.lower() and "test_engine_behaviour.py" in msg


def test_custom_function_with_ctx_matches_torch_and_gradcheck():
    class Cube(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x * x

    a = np.array([0.5, -1.5, 2.0])
    x = dg.tensor(a, requires_grad=True)
    Cube.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * a**2)
    assert dg.autograd.gradcheck(Cube.apply, [dg.tensor(a, requires_grad=True)])


def test_ten_thousand_op_chain_has_no_recursion_limit():
    x = dg.tensor([0.5], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001**10_000], rtol=1e-3)


def test_saved_arrays_are_freed_after_backward():
    x = dg.tensor(np.ones(1000), requires_grad=True)
    mid = x.exp()
    ref = weakref.ref(mid)
    y = (mid * 2).sum()
    del mid
    gc.collect()
    assert ref() is not None  # kept alive by the graph, which backward needs
    y.backward()
    gc.collect()
    assert ref() is None  # backward released it


def test_backward_of_non_scalar_without_gradient_is_a_clear_error():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        (x * 2).backward()
