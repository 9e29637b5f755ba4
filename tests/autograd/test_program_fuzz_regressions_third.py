"""Bugs the random-program fuzzer (test_program_fuzz.py) found over seeds 1500..2999, each pinned
against torch with the parity helper."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")

X = np.random.default_rng(0).standard_normal((3, 4))


def _parity(fn, *arrays, **kw):
    return check(lambda *a: fn(dg, *a), lambda *a: fn(torch, *a), *arrays, **kw)


@pytest.mark.parametrize("grad", [True, False])
def test_contiguous_copy_is_row_major_so_a_reshape_of_it_is_a_view(grad):
    def fn(m, x):
        y = x.t().contiguous()
        y.reshape(-1).pow_(2)
        return y

    _parity(fn, X, grad=grad)


@pytest.mark.parametrize("grad", [True, False])
def test_clone_keeps_the_strides_so_a_reshape_of_it_copies(grad):
    def fn(m, x):
        y = x.t().clone()
        y.reshape(-1).mul_(2)
        return y

    _parity(fn, X, grad=grad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_remainder_keeps_the_sign_of_a_zero_as_fmod_gives_it(dtype):
    a = np.array([-1.0, 1.0, -2.0, 2.0, -0.0, 0.0, -3.0, 3.0])
    b = np.array([1.0, -1.0, 1.0, 2.0, 3.0, -3.0, -1.5, 1.5])
    _parity(lambda m, x, y: 1 / m.remainder(x, y), a, b, grad=False, dtype=dtype)
    _parity(lambda m, x, y: 1 / (x % 1.0), a, b, grad=False, dtype=dtype)


@pytest.mark.parametrize("op", ["remainder", "fmod"])
def test_a_write_into_the_dividend_keeps_backward_when_the_divisor_needs_no_grad(op):
    def fn(m, x):
        y = x * 1
        r = getattr(m, op)(y, 0.75)
        y.mul_(3)
        return r

    _parity(fn, X)
