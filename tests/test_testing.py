"""distgraph.testing.assert_close against torch.testing.assert_close: the same verdict and the same
message (mismatch count, greatest differences and where, the failing item) for the same inputs; and
distgraph.utils.data as torch.utils.data's import path to distgraph.data."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.testing import assert_close

torch = pytest.importorskip("torch")

CASES = [
    (lambda m: m.tensor([1.0, 2.0, 3.0], dtype=m.float64), lambda m: m.tensor([1.0, 2.1, 3.0], dtype=m.float64), {}),
    (lambda m: m.tensor([[1.0, 2.0], [3.0, np.nan]]), lambda m: m.tensor([[1.0, 2.5], [3.5, np.nan]]), {}),
    (lambda m: m.tensor([1.0, np.nan]), lambda m: m.tensor([1.5, np.nan]), dict(equal_nan=True)),
    (lambda m: m.tensor([1.0, 2.0]), lambda m: m.tensor([1.0, 2.00001]), {}),  # float32's default rtol 1.3e-6
    (lambda m: m.tensor([1.0, 2.0], dtype=m.float64), lambda m: m.tensor([1.0, 2.000001], dtype=m.float64), {}),
    (lambda m: m.tensor([1.0, 2.0], dtype=m.float16), lambda m: m.tensor([1.0, 2.001], dtype=m.float16), {}),
    (lambda m: m.tensor([0.0, 1.0]), lambda m: m.tensor([1.0, 1.0]), {}),
    (lambda m: m.tensor([1, 2, 3]), lambda m: m.tensor([1, 2, 4]), {}),
    (lambda m: m.tensor([True, False]), lambda m: m.tensor([True, True]), {}),
    (lambda m: m.tensor(1.5, dtype=m.float64), lambda m: m.tensor(1.6, dtype=m.float64), {}),
    (lambda m: m.tensor([1.0, 2.0]), lambda m: m.tensor([1.0, 2.0], dtype=m.float64), {}),
    (lambda m: m.tensor([1.0, 2.0]), lambda m: m.tensor([1.0, 2.001], dtype=m.float64), dict(check_dtype=False)),
    (lambda m: m.tensor([1.0, 2.0]), lambda m: m.tensor([1.0, 2.1]), dict(rtol=1e-3)),
    (lambda m: m.tensor([1.0, 2.0]), lambda m: m.tensor([1.0, 2.1]), dict(rtol=0.1, atol=0.0)),
    (lambda m: m.tensor([1.0, 2.0]), lambda m: m.tensor([1.0, 2.1]), dict(rtol=0.0, atol=0.0)),
    (lambda m: [m.tensor([1.0]), {"a": m.tensor([0.0])}], lambda m: [m.tensor([1.0]), {"a": m.tensor([1.0])}], {}),
    (lambda m: {"a": 1}, lambda m: {"b": 1}, {}),
    (lambda m: [1, 2], lambda m: [1, 2, 3], {}),
    (lambda m: 1.0, lambda m: 1.1, {}),
    (lambda m: 1, lambda m: 1.0, {}),
    (lambda m: 1, lambda m: 1.0, dict(check_dtype=False)),
    (lambda m: None, lambda m: 1, {}),
    (lambda m: True, lambda m: False, {}),
    (lambda m: np.array([1.0, 2.0]), lambda m: np.array([1.0, 3.0]), {}),
    (lambda m: m.tensor([1.0, 2.0]), lambda m: m.tensor([1.0, 2.1]), dict(msg="custom")),
    (lambda m: m.tensor([1.0, 2.0]), lambda m: m.tensor([1.0, 2.1]), dict(msg=lambda s: s + " (edited)")),
]


def _verdict(fn, lib, actual, expected, kwargs):
    try:
        fn(actual(lib), expected(lib), **kwargs)
    except Exception as e:
        return type(e), str(e).replace("torch.", "").replace("distgraph.", "")
    return None


@pytest.mark.parametrize("actual, expected, kwargs", CASES)
def test_assert_close_says_what_torch_says(actual, expected, kwargs):
    assert _verdict(assert_close, dg, actual, expected, kwargs) == _verdict(
        torch.testing.assert_close, torch, actual, expected, kwargs
    )


def test_assert_close_names_shapes_types_and_tolerance_pairs():
    with pytest.raises(AssertionError, match=r"The values for attribute 'shape' do not match: \(2,\) != \(3,\)\."):
        assert_close(dg.ones(2), dg.ones(3))
    with pytest.raises(TypeError, match="No comparison pair was able to handle inputs of type"):
        assert_close(dg.ones(1), 1.0)
    with pytest.raises(ValueError, match="Both 'rtol' and 'atol' must be either specified or omitted, but got no atol"):
        assert_close(dg.ones(1), dg.ones(1), rtol=0.1)
    assert_close(dg.ones(2, requires_grad=True), dg.ones(2))  # compares values, whatever the graph


def test_utils_data_is_distgraph_data():
    import distgraph.utils.data.sampler as sampler
    from distgraph.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset, random_split

    import distgraph.data as data

    assert (DataLoader, Dataset, DistributedSampler, TensorDataset, random_split) == (
        data.DataLoader, data.Dataset, data.DistributedSampler, data.TensorDataset, data.random_split,
    )  # fmt: skip
    assert sampler is data.sampler and dg.utils.data is data
