"""torch's top-level names fill, resolve_neg/resolve_conj, constant_pad_nd, nonzero_static, empty_permuted,
norm_except_dim, igamma/igammac (functions, methods, in-place forms), Size, and get/set_default_device:
against torch in float64 (forward and gradient), finite differences, and torch's errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.backend import cuda_is_available
from distgraph.errors import DeviceError, InputRangeError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
rng = np.random.default_rng(3)


def test_fill_matches_torch_values_dtype_and_gradients():
    x, v = rng.standard_normal((3, 4)), np.array(1.5)
    check(lambda a, b: dg.fill(a, b), lambda a, b: torch.fill(a, b), x, v)  # zero to input, the sum to value
    check(lambda a: dg.fill(a, -2.5), lambda a: torch.fill(a, -2.5), x)
    ints = np.arange(-3, 3)
    for value in (2.7, -2.7, True):
        out = dg.fill(dg.tensor(ints), value)
        assert out.dtype == dg.int64 and out.tolist() == torch.fill(torch.tensor(ints), value).tolist()
    x0 = dg.tensor(x)
    dg.fill(x0, 0.0)
    assert np.array_equal(x0.numpy(), x)  # out of place


def test_fill_refuses_a_value_tensor_with_dims_as_torch():
    with pytest.raises(ShapeError, match="fill only supports 0-dimension value tensor but got tensor with 1"):
        dg.fill(dg.ones(3), dg.ones(2))


def test_resolve_neg_and_conj_return_their_input():
    x = dg.tensor(rng.standard_normal(3), requires_grad=True)
    for fn in (dg.resolve_neg, dg.resolve_conj, dg.Tensor.resolve_neg, dg.Tensor.resolve_conj):
        assert fn(x) is x


@pytest.mark.parametrize("pad,value", [([1, 2], 0), ([1, 1, 0, 2], 3.5), ([-1, 2, 1, -1], -1.0), ((), 0)])
def test_constant_pad_nd_matches_torch(pad, value):
    check(lambda a: dg.constant_pad_nd(a, pad, value), lambda a: torch.constant_pad_nd(a, pad, value),
          rng.standard_normal((3, 4)))  # fmt: skip


def test_constant_pad_nd_odd_pad_is_torchs_error():
    with pytest.raises(ShapeError, match="Length of pad must be even but instead it equals 3"):
        dg.constant_pad_nd(dg.ones(2, 2), [1, 1, 1])


@pytest.mark.parametrize("size,fill", [(4, -1), (1, 9), (0, -1), (6, 7)])
@pytest.mark.parametrize("shape", [(2, 3), (5,), ()])
def test_nonzero_static_matches_torch(shape, size, fill):
    a = (rng.standard_normal(shape) > 0).astype(np.float64) * 2.0
    ours = dg.nonzero_static(dg.tensor(a), size=size, fill_value=fill)
    theirs = torch.nonzero_static(torch.tensor(a), size=size, fill_value=fill)
    assert ours.dtype == dg.int64 and tuple(ours.shape) == tuple(theirs.shape)
    assert ours.tolist() == theirs.tolist()


def test_nonzero_static_refuses_bad_sizes_as_torch():
    with pytest.raises(InputRangeError, match="'size' must be an non-negative integer"):
        dg.nonzero_static(dg.ones(3), size=-1)
    with pytest.raises(TypeError, match="argument 'size' must be int, not float"):
        dg.nonzero_static(dg.ones(3), size=2.0)


@pytest.mark.parametrize("size,layout", [((2, 3, 4), (0, 2, 1)), ((2, 3, 4, 5), (0, 2, 3, 1)), ((3,), (0,)), ((), ())])
def test_empty_permuted_has_torchs_shape_and_strides(size, layout):
    ours = dg.empty_permuted(size, layout, dtype=dg.float64)
    theirs = torch.empty_permuted(size, layout, dtype=torch.float64)
    assert tuple(ours.shape) == tuple(theirs.shape) and ours.stride() == theirs.stride()
    assert ours.dtype == dg.float64 and dg.empty_permuted(size, layout).dtype == dg.get_default_dtype()
    assert dg.empty_permuted(size, layout, requires_grad=True).requires_grad


def test_empty_permuted_errors_are_torchs():
    with pytest.raises(ShapeError, match="len\\(size\\) = 3 is not equal to len\\(physical_layout\\) = 2"):
        dg.empty_permuted((2, 3, 4), (0, 2))
    with pytest.raises(ShapeError, match="Duplicate dim not allowed"):
        dg.empty_permuted((2, 3, 4), (0, 2, 2))


@pytest.mark.parametrize("p,dim", [(2, 0), (2, 1), (2, -1), (3, 2), (1, -2), (2, -3)])
def test_norm_except_dim_matches_torch_and_finite_differences(p, dim):
    w = rng.standard_normal((3, 4, 5))
    check(lambda a: dg.norm_except_dim(a, p, dim), lambda a: torch.norm_except_dim(a, p, dim), w)
    assert dg.autograd.gradcheck(lambda a: dg.norm_except_dim(a, p, dim), (dg.tensor(w, requires_grad=True),))


def test_norm_except_dim_out_of_range_dim_is_torchs_error():
    with pytest.raises(IndexError, match="Dimension out of range \\(expected to be in range of \\[-3, 2\\], but got 3"):
        dg.norm_except_dim(dg.ones(2, 2, 2), 2, 3)


def _igamma_inputs():
    return rng.uniform(0.5, 3.0, (3, 4)), rng.uniform(0.2, 4.0, (3, 4))


@pytest.mark.parametrize("name,special", [("igamma", "gammainc"), ("igammac", "gammaincc")])
def test_igamma_and_igammac_are_the_special_functions(name, special):
    a, x = _igamma_inputs()
    assert getattr(dg, name) is getattr(dg.special, special)
    # torch has no gradient for the first argument (it raises); the second's is compared
    check(lambda s, t: getattr(dg, name)(s.detach(), t), lambda s, t: getattr(torch, name)(s.detach(), t), a, x)
    check(lambda s, t: getattr(s.detach(), name)(t), lambda s, t: getattr(s.detach(), name)(t), a, x)
    assert dg.autograd.gradcheck(lambda t: getattr(dg, name)(dg.tensor(a), t), (dg.tensor(x, requires_grad=True),))


@pytest.mark.parametrize("name", ["igamma", "igammac"])
def test_igamma_in_place_forms_match_torch(name):
    a, x = _igamma_inputs()
    ours, theirs = dg.tensor(a), torch.tensor(a)
    assert getattr(ours, name + "_")(dg.tensor(x)) is ours
    getattr(theirs, name + "_")(torch.tensor(x))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


def test_size_is_torchs_tuple():
    x = dg.zeros(2, 3)
    s = x.size()
    assert isinstance(s, dg.Size) and isinstance(s, tuple) and s == (2, 3) == x.shape and hash(s) == hash((2, 3))
    assert repr(s) == repr(torch.zeros(2, 3).size()) == "torch.Size([2, 3])" and repr(dg.Size()) == "torch.Size([])"
    assert s.numel() == 6 and dg.Size([]).numel() == 1
    assert isinstance(s[1:], dg.Size) and s[1:] == (3,) and s[0] == 2 and isinstance(s + (4,), dg.Size)
    assert x.size(1) == 3 and dg.zeros(s).shape == (2, 3)
    # .shape too, as torch's: print(x.shape) reads torch.Size([2, 3]), x.shape[1:].numel() works
    assert isinstance(x.shape, dg.Size) and repr(x.shape) == repr(torch.zeros(2, 3).shape)
    assert x.shape[1:].numel() == 3 and x.shape[-1] == 3 and type(x.shape[-1]) is int
    for got, want in (((1,) + x.shape, (1,) + torch.zeros(2, 3).shape), (x.shape * 2, torch.Size([2, 3]) * 2)):
        assert isinstance(got, dg.Size) and repr(got) == repr(want)
    assert isinstance(dg.broadcast_shapes((3, 1), (4,)), dg.Size) and dg.Size([dg.tensor(3), np.int64(2)]) == (3, 2)
    with pytest.raises(TypeError, match=r"torch.Size\(\) takes an iterable of 'int' \(item 0 is 'float'\)"):
        dg.Size([1.5])


@pytest.mark.parametrize("fmt", [None, "torch"])
def test_a_size_saved_loads_as_a_size(tmp_path, fmt):
    path = tmp_path / "shape.pt"
    dg.save({"s": dg.zeros(2, 3).shape, "t": (2, 3)}, path, **({"format": fmt} if fmt else {}))
    back = dg.load(path)
    assert type(back["s"]) is dg.Size and back["s"] == (2, 3) and type(back["t"]) is tuple
    if fmt:
        assert type(torch.load(path, weights_only=True)["s"]) is torch.Size
    torch.save({"s": torch.zeros(4).shape}, tmp_path / "theirs.pt")
    assert type(dg.load(tmp_path / "theirs.pt")["s"]) is dg.Size


@pytest.fixture
def restore_default_device():
    yield
    dg.set_default_device(None)


def test_default_device_is_where_factories_create(restore_default_device):
    assert dg.get_default_device() is dg.device("cpu") and str(dg.get_default_device()) == "cpu"
    dg.set_default_device("cpu")
    for t in (dg.zeros(2), dg.ones(2), dg.rand(2), dg.arange(3), dg.tensor([1.0]), dg.eye(2), dg.hann_window(4)):
        assert t.device is dg.device("cpu")
    dg.set_default_device(None)
    assert dg.get_default_device() is dg.device("cpu")


@pytest.mark.skipif(cuda_is_available(), reason="a GPU is present")
def test_set_default_device_cuda_without_a_gpu_is_a_clear_error(restore_default_device):
    with pytest.raises(DeviceError, match="cuda device was requested"):
        dg.set_default_device("cuda")
    assert dg.get_default_device() is dg.device("cpu") and dg.zeros(1).device is dg.device("cpu")
    with pytest.raises(DeviceError, match="unknown device 'meta'"):
        dg.set_default_device("meta")
