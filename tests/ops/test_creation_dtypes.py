"""Creation functions and dtypes (ops/creation.py, dtypes.py, Tensor conversions) against torch: the
dtype a constructor infers, torch's promotion rules for float/int/bool (tensor, 0-d tensor and Python
scalar tiers), and the interop a PyTorch user reaches for: .numpy/.item/.to/.detach/__array__/DLPack,
.float/.half/.type."""

import itertools

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import torch

NAMES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


def same_dtype(t_dg, t_th):
    return t_dg.dtype.name == str(t_th.dtype).removeprefix("torch.")


@pytest.mark.parametrize(
    "data",
    [1.5, 3, True, [1, 2], [1.0, 2], [True, False], [[1, 2.5], [3, 4]], [True, 2], [], [[]], np.float64(2.0)],
    ids=repr,
)
def test_tensor_infers_torch_dtype_and_shape(data):
    t, ref = dg.tensor(data), torch.tensor(data)
    assert same_dtype(t, ref) and tuple(t.shape) == tuple(ref.shape)
    np.testing.assert_array_equal(t.numpy(), ref.numpy())


@pytest.mark.parametrize("np_dtype", [np.float64, np.float32, np.float16, np.int32, np.int64, np.uint8, np.bool_])
def test_numpy_arrays_keep_their_dtype(np_dtype):
    a = np.arange(6).reshape(2, 3).astype(np_dtype)
    assert same_dtype(dg.tensor(a), torch.tensor(a)) and same_dtype(dg.from_numpy(a), torch.from_numpy(a))
    assert same_dtype(dg.as_tensor(a), torch.as_tensor(a))


def test_float32_is_the_default_and_can_be_changed():
    assert dg.tensor([1.0]).dtype == dg.float32 and dg.randn(2).dtype == dg.float32 and dg.zeros(1).dtype == dg.float32
    dg.set_default_dtype(dg.float64)
    try:
        assert dg.tensor([1.0]).dtype == dg.float64 and dg.ones(2).dtype == dg.float64
        assert (dg.tensor([1, 2]) * 0.5).dtype == dg.float64
    finally:
        dg.set_default_dtype(dg.float32)


@pytest.mark.parametrize(
    "name,call",
    [
        ("zeros", lambda m: m.zeros(2, 3)),
        ("zeros-tuple", lambda m: m.zeros((2, 0))),
        ("ones-int", lambda m: m.ones(3, dtype=m.int32)),
        ("full-float", lambda m: m.full((2, 2), 1.5)),
        ("full-int", lambda m: m.full((2,), 7)),
        ("full-bool", lambda m: m.full((2,), True)),
        ("arange-int", lambda m: m.arange(5)),
        ("arange-start-step", lambda m: m.arange(1, 10, 3)),
        ("arange-float", lambda m: m.arange(0, 1, 0.25)),
        ("arange-negative-step", lambda m: m.arange(5, 0, -2)),
        ("linspace", lambda m: m.linspace(0, 1, 5)),
        ("linspace-one", lambda m: m.linspace(2, 3, 1)),
        ("logspace", lambda m: m.logspace(0, 2, 3)),
        ("eye", lambda m: m.eye(3)),
        ("eye-rect", lambda m: m.eye(2, 4, dtype=m.float64)),
        ("zeros_like", lambda m: m.zeros_like(m.ones(2, 3, dtype=m.int64))),
        ("ones_like-dtype", lambda m: m.ones_like(m.ones(2), dtype=m.float64)),
        ("full_like", lambda m: m.full_like(m.ones(2, 2), 3.0)),
        ("empty-shape", lambda m: m.empty(2, 3).fill_(1.0)),
    ],
)
def test_creation_matches_torch(name, call):
    t, ref = call(dg), call(torch)
    assert same_dtype(t, ref) and tuple(t.shape) == tuple(ref.shape)
    np.testing.assert_allclose(t.numpy(), ref.numpy(), rtol=1e-6)


def test_random_creation_is_seeded_and_shaped_like_torch():
    dg.manual_seed(3)
    a = [dg.rand(2, 3), dg.randn(4), dg.randint(0, 5, (3, 3)), dg.randperm(6)]
    dg.manual_seed(3)
    b = [dg.rand(2, 3), dg.randn(4), dg.randint(0, 5, (3, 3)), dg.randperm(6)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert [t.dtype for t in a] == [dg.float32, dg.float32, dg.int64, dg.int64]
    assert 0 <= a[0].min().item() and a[0].max().item() < 1 and sorted(a[3].tolist()) == list(range(6))
    assert a[2].min().item() >= 0 and a[2].max().item() < 5
    assert dg.randn(2, 3, requires_grad=True).requires_grad and dg.rand(0, 2).shape == (0, 2)


@pytest.mark.parametrize("seed", [-3, -1, -(2**63), 2**63, 2**64 - 1, 3.7])
def test_manual_seed_takes_torch_seed_range_and_maps_negatives_into_uint64(seed):
    """A negative seed raised numpy's ValueError; torch maps it to seed + 2**64."""
    torch.manual_seed(seed)
    assert dg.manual_seed(seed).initial_seed() == torch.initial_seed() == dg.initial_seed()
    a = dg.rand(4).numpy()
    dg.manual_seed(int(seed) % 2**64)
    np.testing.assert_array_equal(dg.rand(4).numpy(), a)


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1])
def test_manual_seed_outside_torch_range_raises_input_range_error(seed):
    with pytest.raises(ValueError):
        torch.manual_seed(seed)
    with pytest.raises(dg.errors.InputRangeError, match=rf"manual_seed: .*got {seed}"):
        dg.manual_seed(seed)


@pytest.mark.parametrize("a,b", list(itertools.product(NAMES, NAMES)))
def test_promotion_of_two_tensors_matches_torch(a, b):
    x = dg.ones(2, dtype=getattr(dg, a))
    y = dg.ones(2, dtype=getattr(dg, b))
    ref = torch.ones(2, dtype=getattr(torch, a)) + torch.ones(2, dtype=getattr(torch, b))
    assert same_dtype(x + y, ref)
    assert dg.promote_types(x.dtype, y.dtype).name == str(torch.promote_types(getattr(torch, a), getattr(torch, b)))[6:]


@pytest.mark.parametrize("a", NAMES)
@pytest.mark.parametrize("other", [2, 2.5, True, "0d-int64", "0d-float64", "0d-bool"])
@pytest.mark.parametrize("op", ["add", "mul", "div", "sub"])
def test_promotion_with_scalars_and_zero_dim_tensors_matches_torch(a, other, op):
    if op == "sub" and (a == "bool" or other in (True, "0d-bool")):
        pytest.skip("torch refuses subtraction of bools")

    def operand(m):
        if isinstance(other, str):
            kind = other.split("-")[1]
            return m.tensor(1 if kind != "bool" else True, dtype=getattr(m, kind))
        return other

    x = dg.ones(3, dtype=getattr(dg, a))
    t = torch.ones(3, dtype=getattr(torch, a))
    other_th = operand(torch)
    out, ref = getattr(dg, op)(x, operand(dg)), getattr(torch, op)(t, other_th)
    assert same_dtype(out, ref), f"{a} {op} {other}: distgraph {out.dtype}, torch {ref.dtype}"
    np.testing.assert_allclose(out.numpy().astype(np.float64), ref.numpy().astype(np.float64), rtol=1e-3)
    rev, rev_ref = getattr(dg, op)(operand(dg), x), getattr(torch, op)(other_th, t)
    assert same_dtype(rev, rev_ref)


def test_integer_division_and_float_functions_give_the_default_float():
    i = dg.tensor([1, 2, 3])
    assert (i / 2).dtype == dg.float32 and dg.exp(i).dtype == dg.float32 and dg.sqrt(i).dtype == dg.float32
    assert (i // 2).dtype == dg.int64 and (i // 2).tolist() == [0, 1, 1]
    assert (dg.tensor([True]) + dg.tensor([True])).dtype == dg.bool_


def test_numpy_item_tolist():
    x = dg.tensor([[1.5, 2.0]])
    a = x.numpy()
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    a[0, 0] = 9.0  # shares memory with the tensor, as torch's .numpy()
    assert x[0, 0].item() == 9.0
    assert isinstance(dg.tensor(3).item(), int) and isinstance(dg.tensor(True).item(), bool)
    assert isinstance(dg.tensor([2.5]).item(), float) and x.tolist() == [[9.0, 2.0]]
    with pytest.raises(RuntimeError, match="numpy"):
        dg.ones(2, requires_grad=True).numpy()
    with pytest.raises(RuntimeError, match="2 elements"):
        dg.ones(2).item()


def test_detach_shares_memory_and_drops_grad():
    x = dg.ones(3, requires_grad=True)
    y = (x * 2).detach()
    assert not y.requires_grad and y.grad_fn is None
    z = x.detach()
    z.zero_()  # torch: detach shares storage
    assert x.sum().item() == 0.0


def test_array_protocol_and_copies():
    x = dg.tensor([1.0, 2.0])
    assert np.asarray(x).dtype == np.float32 and np.asarray(x, dtype=np.float64).dtype == np.float64
    c = np.array(x, copy=True)
    c[0] = 5.0
    assert x[0].item() == 1.0  # an explicit copy is a copy
    assert np.add(x, 1).tolist() == [2.0, 3.0]


def test_dlpack_roundtrips_with_numpy_and_torch():
    x = dg.arange(6).reshape(2, 3)
    a = np.from_dlpack(x)
    assert a.shape == (2, 3) and np.shares_memory(a, x.numpy())
    t = torch.from_dlpack(x)
    assert t.tolist() == x.tolist() and t.dtype == torch.int64
    back = dg.from_dlpack(torch.arange(4.0, dtype=torch.float64))
    assert back.dtype == dg.float64 and back.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert dg.from_dlpack(np.ones(2, np.float32)).dtype == dg.float32


def test_to_float_half_type_like_torch():
    x = dg.tensor([1.25, 2.5], dtype=dg.float64)
    t = torch.tensor([1.25, 2.5], dtype=torch.float64)
    for conv in ["float", "half", "double", "long", "int", "bool"]:
        assert same_dtype(getattr(x, conv)(), getattr(t, conv)())
    assert x.to(dg.float32).dtype == dg.float32 and x.to("cpu") is x and x.to(dtype=dg.float64) is x
    assert x.to("cpu", dg.int32).dtype == dg.int32 and x.to(dg.ones(1, dtype=dg.float16)).dtype == dg.float16
    assert x.type() == "distgraph.DoubleTensor" and t.type() == "torch.DoubleTensor"
    assert x.type(dg.float16).dtype == dg.float16 and x.type("torch.FloatTensor").dtype == dg.float32
    assert dg.ones(1, dtype=dg.int64).type() == "distgraph.LongTensor"


def test_casts_carry_gradients_back_in_the_input_dtype():
    x = dg.tensor([1.5, -2.0], dtype=dg.float64, requires_grad=True)
    xt = torch.tensor([1.5, -2.0], dtype=torch.float64, requires_grad=True)
    (x.float() * x.half().float()).sum().backward()
    (xt.float() * xt.half().float()).sum().backward()
    assert x.grad.dtype == dg.float64
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())
    assert not x.long().requires_grad
