"""cumprod's backward against torch's cumprod_backward (float64), NaN, inf and zeros included.

torch takes one of three paths: no zero in the input, reversed_cumsum(out·g)/x (a NaN or inf spreads
over its whole slice); zeros and no graph of the backward, an O(n) masked formula (nothing after the
first zero, the product of the others at it); zeros under create_graph, the O(n^2) products of the
other factors. Each case compares values, the fast and the create_graph gradient, and the
second-order gradient."""

import numpy as np
import pytest

from tests.autograd.test_second_order_regressions import check_second_order
from tests.parity import check

torch = pytest.importorskip("torch")

NAN, INF = float("nan"), float("inf")
ROWS = {
    "nan, no zero": [1.5, NAN, -2.0, 0.5, 3.0],
    "inf, no zero": [1.5, -0.5, INF, 2.0, 0.25],
    "overflow, no zero": [1e200, 1e200, 1e-200, 3.0, -1.0],
    "one zero": [1.5, -2.0, 0.0, 0.5, 3.0],
    "zero first": [0.0, -2.0, 0.7, 0.5, 3.0],
    "zero last": [1.5, -2.0, 0.7, 0.5, 0.0],
    "two zeros": [2.0, 0.0, 3.0, -1.5, 0.0],
    "nan after a zero": [2.0, 0.0, 3.0, NAN, 0.0],
    "nan before a zero": [2.0, NAN, 3.0, 0.0, 1.5],
    "inf between zeros": [2.0, 0.0, INF, -1.5, 0.0],
    "inf before a zero": [INF, 2.0, 0.0, 1.5, -1.0],
}


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_cumprod_gradients_are_torchs_along_a_row(row):
    check_second_order(lambda m, x: m.cumprod(x, 0), np.array(row))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cumprod_gradients_are_torchs_when_only_some_slices_hold_a_zero_or_a_nan(dim):
    x = np.random.default_rng(3).standard_normal((4, 5))
    x[1, 2] = 0.0
    x[3, 0] = NAN
    x[2, 4] = INF
    check_second_order(lambda m, x: x.cumprod(dim), x)
    check(lambda x: x.cumprod(dim), lambda x: x.cumprod(dim), x)


def test_a_nan_in_cumprods_input_makes_its_whole_slice_of_the_gradient_nan():
    # seed 2549 of the program fuzzer: torch divides reversed_cumsum(out·g) by x, so the NaN element's own
    # gradient is NaN too (an exact product of the other factors left it finite)
    x = np.array([[0.3, NAN, -1.2], [0.5, 2.0, -0.7]])
    check(lambda x: (x.cumprod(1) * 2).sum(), lambda x: (x.cumprod(1) * 2).sum(), x)


@pytest.mark.parametrize("shape,dim", [((2, 3, 4), 1), ((1,), 0), ((3, 1), 1), ((), 0), ((0, 3), 0)])
def test_cumprod_gradients_are_torchs_for_any_shape(shape, dim):
    x = np.random.default_rng(4).standard_normal(shape)
    if x.size > 2:
        x.reshape(-1)[2] = 0.0
    check_second_order(lambda m, x: x.cumprod(dim), x)


def test_prods_double_backward_through_a_zero_is_torchs():
    # prod's zero path is torch's: exclusive cumprods from both ends, whose backward is cumprod's
    x = np.array([[2.0, 0.0, 3.0, -1.5], [0.5, 2.0, NAN, 0.0], [1.0, 0.0, 0.0, 2.0]])
    check_second_order(lambda m, x: x.prod(1), x)
    check_second_order(lambda m, x: x.prod(), x)
