"""Second-order gradients the random-program fuzzer (test_program_fuzz.py) found diverging from torch.

Each case takes the gradient of a weighted sum of fn's output with create_graph=True, then the
gradient of (that gradient · v), in distgraph and torch (float64), and compares both, NaN and inf
included: torch's backward formulas decide where a second-order gradient is NaN, so ours follow them.
"""

import warnings

import numpy as np
import pytest

import distgraph as dg
from tests.parity import _np, to_torch

torch = pytest.importorskip("torch")


def _first_and_second(m, fn, tensors):
    rng = np.random.default_rng(0)
    inputs = [x for x in tensors if x.requires_grad]
    out = fn(m, *tensors)
    w = m.tensor(rng.standard_normal(tuple(out.shape)))
    loss = (out * w).sum()
    fast = m.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)  # distgraph's array rules
    grads = m.autograd.grad(loss, inputs, create_graph=True, allow_unused=True)
    total = sum((g * m.tensor(rng.standard_normal(tuple(g.shape)))).sum() for g in grads if g is not None)
    seconds = m.autograd.grad(total, inputs, allow_unused=True) if total.requires_grad else [None] * len(inputs)
    return out, fast, grads, seconds


def check_second_order(fn, *arrays, grad=None):
    """fn(m, *tensors) in both libraries: values, gradients and second-order gradients agree (dtype,
    requires_grad, NaN and inf included).
    `grad`: which arrays require grad (all by default)."""
    grad = grad or [True] * len(arrays)
    dg_in = [dg.tensor(a, requires_grad=r) for a, r in zip(arrays, grad)]
    th_in = [to_torch(x) for x in dg_in]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg_res = _first_and_second(dg, fn, dg_in)
        th_res = _first_and_second(torch, fn, th_in)
    for what, d, t in zip(("value", "gradient", "gradient (create_graph)", "second-order gradient"), dg_res, th_res):
        for k, (dk, tk) in enumerate(zip(*[v if isinstance(v, list | tuple) else [v] for v in (d, t)])):
            assert (dk is None) == (tk is None), f"{what} {k}: distgraph {dk}, torch {tk}"
            if tk is not None:
                assert dk.dtype.name == str(tk.dtype).split(".")[-1], f"{what} {k}: dtype"
                assert dk.requires_grad == tk.requires_grad, f"{what} {k}: requires_grad"
                np.testing.assert_allclose(_np(dk), _np(tk), rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=what)


# ---- pow: torch's formulas, masks after g is multiplied in, log(a) itself at a zero base ----------
def test_pow_second_order_at_a_zero_base_is_torchs():
    a = np.array([[0.0, -0.0, 0.0, 2.0]] * 2)
    b = np.array([[0.5, -0.3, 1.2, 0.0]])
    check_second_order(lambda m, a, b: a**b, a, b, grad=[False, True])
    check_second_order(lambda m, a, b: a**b, a, b)


def test_pow_gradient_is_zero_at_a_zero_exponent_even_where_the_incoming_gradient_is_nan():
    a, b = np.array([0.0, 1.5, -2.0]), np.array([0.0, 0.0, 2.0])
    check_second_order(lambda m, a, b: (a**b) * m.tensor([float("nan"), float("inf"), 1.0]), a, b)


# ---- var without degrees of freedom over every dim: torch's gradient is a constant ------------------
@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [((), {"correction": 1}), ((), {"dim": 0}), ((1,), {"keepdim": True}), ((1, 2), {"correction": 2})],
)
def test_var_over_every_dim_without_degrees_of_freedom_adds_nothing_to_second_order(shape, kwargs):
    x = np.arange(1.0, 1.0 + np.prod(shape, dtype=int)).reshape(shape) * 1.5
    check_second_order(lambda m, x: x.var(**kwargs) + x * x, x)


# ---- fmod / remainder: the divisor's rule uses div with a rounding mode (zero gradient, no 0 / 0) ------
@pytest.mark.parametrize("name", ["fmod", "remainder"])
def test_fmod_and_remainder_by_zero_keep_second_order_finite(name):
    x, f = np.array([[0.5, -1.5, 2.0]]), np.array([[1.25, -0.5, 3.0]])
    check_second_order(lambda m, x, f: getattr(m, name)(f, x * 0), x, f, grad=[True, False])
    check_second_order(lambda m, x, f: getattr(m, name)(f, x) * x, x, f)


# ---- div: the divisor's rule is torch's -g·((a / b) / b), which has no b·b to overflow -----------------
def test_div_gradient_of_a_huge_divisor_does_not_overflow():
    a, b = np.array([1.5e308, -1e308, 3.0]), np.array([1e155, 2e154, -0.5])  # b·b is inf
    check_second_order(lambda m, a, b: a / b, a, b)


# ---- piecewise-constant ops: torch's zeros_like(grad) is a constant, so nothing flows back through it ------
@pytest.mark.parametrize("name", ["floor", "round", "trunc_div"])
def test_a_zero_gradient_passes_nothing_to_second_order(name):
    step = {
        "floor": lambda m, x: x.floor(),
        "round": lambda m, x: x.round(),
        "trunc_div": lambda m, x: m.div(m.tensor([3, -2, 1, 2]), x, rounding_mode="trunc"),
    }[name]
    x = np.array([-1.5, 0.75, -0.4, 2.5])  # a negative base: log(x) in pow's exponent rule is NaN
    check_second_order(lambda m, x: x ** step(m, x), x)
