"""Integer and bool inputs the program fuzzer found handled unlike torch: values, dtypes and refusals."""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")

BASES = np.array([-3, -2, -1, 0, 1, 2, 3])


def _both(fn, *arrays):
    """fn on distgraph and on torch tensors made from `arrays`: (values, dtype name) of each."""
    out = []
    for m in (dg, torch):
        r = fn(m, *[m.tensor(a.copy()) for a in arrays])
        out.append((r.tolist(), str(r.dtype).split(".")[-1]))
    return out


@pytest.mark.parametrize("exponent", [-1, -2, -3])
def test_integer_tensor_to_negative_integer_tensor_powers_match_torch(exponent):
    d, t = _both(lambda m, a, b: a**b, BASES, np.full(7, exponent))
    assert d == t
    d, t = _both(lambda m, b: m.pow(-3, b), BASES)  # a scalar base, negative exponents among them
    assert d == t


@pytest.mark.parametrize("m", [dg, torch], ids=["distgraph", "torch"])
def test_integer_tensor_to_a_negative_python_int_is_refused(m):
    with pytest.raises(Exception, match="Integers to negative integer powers"):
        m.tensor([1, 2]) ** -1


@pytest.mark.parametrize("alpha", [2, 0, True])
def test_add_of_two_bool_tensors_with_alpha_stays_bool(alpha):
    a, b = np.array([True, False, True, False]), np.array([True, True, False, False])
    d, t = _both(lambda m, x, y: m.add(x, y, alpha=alpha), a, b)
    assert d == t


@pytest.mark.parametrize("m", [dg, torch], ids=["distgraph", "torch"])
@pytest.mark.parametrize(
    "call",
    [lambda m: m.round(m.tensor([1, 2]), decimals=1), lambda m: m.round(m.tensor([True])),
     lambda m: m.tensor([3]).round_(decimals=2), lambda m: m.relu(m.tensor([True, False])),
     lambda m: m.tensor([True]).relu_(), lambda m: m.nn.functional.relu(m.tensor([False]))],
    ids=["round_decimals_int", "round_bool", "round__int", "relu_bool", "relu__bool", "F.relu_bool"],
)  # fmt: skip
def test_round_with_decimals_on_integers_and_relu_on_bools_are_refused(m, call):
    with pytest.raises((TypeError, RuntimeError, NotImplementedError), match="not (implemented|supported)"):
        call(m)


def test_round_of_integers_without_decimals_and_relu_of_integers_still_work():
    for fn in (lambda m, a: m.round(a), lambda m, a: m.relu(a)):
        d, t = _both(fn, BASES)
        assert d == t
