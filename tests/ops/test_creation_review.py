"""Creation ops as torch infers and checks them: numpy scalars in a list give their own dtype (promoted with
the Python numbers beside them), a numpy int fills an int64 tensor, arange truncates its bounds for an integer
dtype, and bad ranges or sizes are errors naming the op (they were ZeroDivisionError, numpy's ValueError, or
an empty tensor)."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import InputRangeError

torch = pytest.importorskip("torch")

DATA = [
    [np.float64(0.1)],
    [np.int32(1)],
    [1.0, np.float32(2)],
    [np.float16(1), 2.0],
    [1, np.int32(2)],
    [np.int32(1), 2.5],
    [np.int64(1), np.float32(2)],
    [[np.float64(1)], [2.0]],
    [np.uint8(3), np.int8(-1)],
    [1, 2],
    [[1.5, 2.5]],
    (True, False),
]


@pytest.mark.parametrize("data", DATA, ids=repr)
def test_tensor_infers_the_dtype_of_numpy_scalars_in_a_list_as_torch(data):
    ours, theirs = dg.tensor(data), torch.tensor(data)
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-15, atol=1e-15)  # (ATen's vector lanes)


@pytest.mark.parametrize("fill", [np.int32(1), np.int64(-2), np.bool_(True), np.float64(0.5), 3, 2.5, True])
def test_full_takes_a_numpy_scalars_kind_as_a_python_numbers(fill):
    assert str(dg.full((2,), fill).dtype).split(".")[-1] == str(torch.full((2,), fill).dtype).split(".")[-1]


@pytest.mark.parametrize(
    "args",
    [(0.5, 3, 1.5), (10, 0, -3), (0, 0, 1), (-2.5, 2.5, 1.7), (-2.9, 3.1, 1.2), (0.2, 5.9, 1.9), (1, 10, 4),
     (-1.5, -7.25, -0.5), (0, 1, 0.1)],
    ids=repr,
)  # fmt: skip
@pytest.mark.parametrize("dtype", [None, "int64", "int32", "uint8", "float32", "float64"])
def test_arange_gives_torchs_values_and_truncates_bounds_for_integer_dtypes(args, dtype):
    if dtype == "uint8" and min(args[:2]) < 0:
        return
    try:
        theirs = torch.arange(*args, dtype=getattr(torch, dtype) if dtype else None)
    except (RuntimeError, ValueError) as e:  # a step that truncates to 0
        with pytest.raises(InputRangeError, match=str(e).split(":")[-1].strip()):
            dg.arange(*args, dtype=getattr(dg, dtype) if dtype else None)
        return
    ours = dg.arange(*args, dtype=getattr(dg, dtype) if dtype else None)
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-15, atol=1e-15)  # (ATen's vector lanes)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lib: lib.arange(0, 5, 0), "step must be nonzero"),
        (lambda lib: lib.arange(0.5, 3, 0.5, dtype=lib.int64), "step must be nonzero"),  # int64 truncates it to 0
        (lambda lib: lib.arange(10, 0), "upper bound and lower bound inconsistent with step sign"),
        (lambda lib: lib.arange(0, float("inf")), "unsupported range"),
        (lambda lib: lib.linspace(0, 1, -1), "number of steps must be non-negative"),
        (lambda lib: lib.eye(-1), "n must be greater or equal to 0, got -1"),
        (lambda lib: lib.eye(2, -1), "m must be greater or equal to 0, got -1"),
    ],
)
def test_bad_ranges_and_sizes_are_errors_naming_the_op_as_torch(call, message):
    with pytest.raises((RuntimeError, ValueError), match=message):
        call(torch)
    with pytest.raises(InputRangeError, match=message):
        call(dg)
