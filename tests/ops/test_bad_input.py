"""Bad input raises a distgraph error that is also the matching builtin and names op and shapes."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import errors


def test_shape_mismatch_names_op_and_shapes():
    with pytest.raises(errors.ShapeError) as info:
        dg.ones(2, 3) + dg.ones(4)
    assert isinstance(info.value, ValueError) and "(2, 3)" in str(info.value) and "(4,)" in str(info.value)
    with pytest.raises(ValueError, match="matmul"):
        dg.ones(2, 3) @ dg.ones(2, 3)


def test_bad_dim_names_the_op():
    with pytest.raises((errors.ShapeError, errors.IndexOutOfRangeError)) as info:
        dg.ones(2, 3).sum(5)
    assert "sum" in str(info.value) and isinstance(info.value, ValueError | IndexError)


def test_dtype_errors_are_type_errors_naming_the_dtypes():
    with pytest.raises(
        errors.DTypeError, match="only floating point tensors can require gradients, got distgraph.int64"
    ):
        dg.tensor([1, 2]).requires_grad_(True)
    with pytest.raises(TypeError, match="masked_fill only supports boolean masks, but got mask with dtype float32"):
        dg.ones(2).masked_fill(dg.ones(2), 0)


def test_index_out_of_range_is_an_index_error_naming_sizes():
    with pytest.raises(IndexError) as info:
        dg.ones(3, 4)[5]
    assert isinstance(info.value, errors.DistgraphError) and "5" in str(info.value)
    with pytest.raises(IndexError):
        dg.gather(dg.ones(3, 4), 1, dg.tensor(np.array([[7]])))


def test_device_errors_say_what_is_missing():
    if dg.cuda_is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(errors.DeviceError) as info:
        dg.ones(2, device="cuda")
    msg = str(info.value).lower()
    assert isinstance(info.value, RuntimeError) and ("cupy" in msg or "gpu" in msg)
