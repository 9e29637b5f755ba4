"""Tensor.new, resize/resize_as, data_ptr, to_dense, share_memory_, pin_memory, hardshrink, prelu: torch's results
(float64, forward and gradient), warnings and errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import DTypeError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
rng = np.random.default_rng(5)


def test_new_reads_its_arguments_as_torchs_legacy_constructor():
    x, tx = dg.ones(2, 2, dtype=dg.float64), torch.ones(2, 2, dtype=torch.float64)
    for args in ((), (2, 3), (0,)):
        ours, theirs = x.new(*args), tx.new(*args)
        assert tuple(ours.shape) == tuple(theirs.shape) and ours.dtype == dg.float64
    assert tuple(x.new(dg.Size([2, 3])).shape) == (2, 3)
    for data in ([1, 2], (2, 3), [[1.5, 2.5]]):  # a tuple is data, as torch reads it
        ours, theirs = x.new(data), tx.new(data)
        assert ours.dtype == dg.float64 and ours.tolist() == theirs.tolist()
    assert dg.ones(2, dtype=dg.int32).new([1.7]).dtype == dg.int32


def test_new_of_a_tensor_is_an_alias_of_the_same_dtype():
    x, t = dg.ones(2, dtype=dg.float64), dg.arange(3, dtype=dg.float64)
    y = x.new(t)
    assert y is not t and y.data_ptr() == t.data_ptr() and not y.requires_grad
    y.array[0] = 5
    assert t.tolist()[0] == 5
    with pytest.raises(DTypeError, match="new: expected a tensor of dtype float64, got int64"):
        x.new(dg.arange(3))


@pytest.mark.parametrize("sizes", [(4,), (1, 4), (2, 1, 2)])
def test_resize_matches_torch_with_its_warning(sizes):
    def torch_resize(a):
        with pytest.warns(UserWarning, match="non-inplace resize is deprecated"):
            return a.resize(*sizes)

    def ours(a):
        with pytest.warns(UserWarning, match="non-inplace resize is deprecated"):
            return a.resize(*sizes)

    check(ours, torch_resize, rng.standard_normal((2, 2)))


def test_resize_as_matches_torch_and_refuses_another_element_count():
    other = np.zeros((1, 4))

    def run(a, b):
        with pytest.warns(UserWarning, match="non-inplace resize_as is deprecated"):
            return a.resize_as(b)

    check(run, run, rng.standard_normal((2, 2)), other)
    with pytest.warns(UserWarning), pytest.raises(ShapeError, match="requested resize to 3 \\(3 elements in total\\)"):
        dg.ones(2, 2).resize(3)


def test_data_ptr_is_the_memory_address_with_torchs_offsets():
    x, tx = dg.zeros(3, 4, dtype=dg.float64), torch.zeros(3, 4, dtype=torch.float64)
    assert x.data_ptr() == x.array.ctypes.data
    for view in (lambda a: a[1], lambda a: a[:, 2], lambda a: a.t(), lambda a: a[2, 1:]):
        assert view(x).data_ptr() - x.data_ptr() == view(tx).data_ptr() - tx.data_ptr()
    assert dg.empty(0).data_ptr() == torch.empty(0).data_ptr() == 0


def test_to_dense_and_share_memory_return_the_tensor():
    x = dg.tensor(rng.standard_normal(3), requires_grad=True)
    assert x.to_dense() is x and x.share_memory_() is x and x.to_dense(dg.float64) is x
    assert x.to_dense(dg.float32).dtype == dg.float32 == dg.float32


def test_pin_memory_refuses_as_torch_without_a_gpu_and_copies_with_one():
    x = dg.tensor(rng.standard_normal(3), requires_grad=True)
    if not dg.cuda_is_available():
        with pytest.raises(RuntimeError, match="Cannot access accelerator device when none is available") as mine:
            x.pin_memory()
        if not torch.cuda.is_available():
            with pytest.raises(RuntimeError) as theirs:
                torch.zeros(3).pin_memory()
            assert str(mine.value) == f"pin_memory: {theirs.value}"
        return
    pinned = x.pin_memory()
    assert pinned is not x and not pinned.is_pinned()
    np.testing.assert_array_equal(pinned.detach().numpy(), x.detach().numpy())
    pinned.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(3))


@pytest.mark.parametrize("lambd", [0.5, 0.1, 1.2])
def test_hardshrink_method_matches_torch(lambd):
    check(lambda a: a.hardshrink(lambd), lambda a: a.hardshrink(lambd), rng.standard_normal((3, 4)))
    check(lambda a: a.hardshrink(), lambda a: a.hardshrink(), rng.standard_normal(5))


@pytest.mark.parametrize("shape,slopes", [((2, 3, 4), 3), ((2, 3), 1), ((5,), 1), ((), 1)])
def test_prelu_method_matches_torch_and_finite_differences(shape, slopes):
    x, w = rng.standard_normal(shape), rng.uniform(0.05, 0.5, slopes)
    check(lambda a, b: a.prelu(b), lambda a, b: a.prelu(b), x, w)
    tensors = (dg.tensor(x + 0.01, requires_grad=True), dg.tensor(w, requires_grad=True))
    assert dg.autograd.gradcheck(lambda a, b: a.prelu(b), tensors)
    assert dg.Tensor.prelu is dg.nn.functional.prelu


def test_prelu_slope_count_mismatch_names_the_op():
    with pytest.raises(ShapeError, match="prelu: mismatch of parameter numbers and input channel size"):
        dg.ones(2, 3).prelu(dg.ones(2))
