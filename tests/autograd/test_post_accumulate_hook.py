"""register_post_accumulate_grad_hook: a leaf's hook runs during backward, as soon as its .grad is final."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import AutogradError


def test_hooks_fire_in_backward_order_with_the_final_grad():
    dg.manual_seed(0)
    w1 = dg.randn(4, 4, requires_grad=True)
    w2 = dg.randn(4, 4, requires_grad=True)
    x = dg.randn(3, 4)
    seen = []

    def record(name):
        def hook(t):
            seen.append((name, t.grad.numpy().copy(), w1.grad is None))

        return hook

    h1 = w1.register_post_accumulate_grad_hook(record("w1"))
    w2.register_post_accumulate_grad_hook(record("w2"))
    ((x @ w1).tanh() @ w2).sum().backward()
    # w2's gradient is final first; when its hook runs, w1's has not been computed yet
    assert [s[0] for s in seen] == ["w2", "w1"] and seen[0][2] is True
    assert np.array_equal(seen[0][1], w2.grad.numpy()) and np.array_equal(seen[1][1], w1.grad.numpy())
    h1.remove()
    seen.clear()
    ((x @ w1).tanh() @ w2).sum().backward()
    assert [s[0] for s in seen] == ["w2"]


def test_a_leaf_used_twice_fires_once_with_the_sum():
    w = dg.tensor([1.0, 2.0], requires_grad=True)
    calls = []
    w.register_post_accumulate_grad_hook(lambda t: calls.append(t.grad.numpy().copy()))
    (w * 3 + w * w).sum().backward()
    assert len(calls) == 1 and np.allclose(calls[0], [3 + 2, 3 + 4])


def test_hooks_see_accumulation_across_backwards_and_not_in_autograd_grad():
    w = dg.tensor([1.0], requires_grad=True)
    calls = []
    w.register_post_accumulate_grad_hook(lambda t: calls.append(float(t.grad.item())))
    (w * 2).sum().backward()
    (w * 2).sum().backward()
    dg.autograd.grad((w * 5).sum(), [w])  # grad() accumulates nothing: no hook
    assert calls == [2.0, 4.0]


def test_non_leaf_is_refused():
    w = dg.tensor([1.0], requires_grad=True)
    with pytest.raises(AutogradError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)
