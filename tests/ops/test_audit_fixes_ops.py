"""Regressions from the torch-parity audit of the ops: in-place augmented assignments, full's tensor fill,
as_strided's storage offset on a view, the *_like layouts and dtypes, the size= keyword, repeat_interleave's
one-argument form, tensor dims, gather's sparse_grad, is_cpu and uint8 any/all. Each compares with torch."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import AutogradError

torch = pytest.importorskip("torch")

AUGMENTED = ["//=", "%=", "**=", "&=", "|=", "^="]


def _augment(x, op, other):
    scope = {"x": x, "other": other}
    exec(f"x {op} other", scope)
    return scope["x"]


def _both(fn):
    return fn(torch), fn(dg)


@pytest.mark.parametrize("op", AUGMENTED)
@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
def test_augmented_assignment_writes_through_a_view_and_keeps_dtype(op, dtype):
    if dtype == "bool" and op in ("//=", "%="):
        pytest.skip("torch has no bool floor_divide/remainder")

    def run(lib):
        base = (lib.arange(6).reshape(2, 3) + 1).to(getattr(lib, dtype))
        row = base[1]
        out = _augment(row, op, True if dtype == "bool" else 2)
        return out is row, str(out.dtype).split(".")[1], base.tolist()

    assert run(dg) == run(torch)


@pytest.mark.parametrize("op", ["%=", "**="])
def test_augmented_assignment_gradient_reaches_through_an_alias(op):
    def run(lib):
        x = lib.tensor([1.5, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        y = x * 1
        z = y
        y = _augment(y, op, 2)
        (z * z).sum().backward()
        return y is z, x.grad.tolist()

    (t_same, t_grad), (d_same, d_grad) = _both(run)
    assert d_same and t_same
    np.testing.assert_allclose(d_grad, t_grad)


@pytest.mark.parametrize("op", ["//=", "%=", "**="])
def test_augmented_assignment_refuses_a_leaf_that_requires_grad(op):
    with pytest.raises(RuntimeError, match="leaf Variable"):
        _augment(torch.tensor([1.5, 2.0], dtype=torch.float64, requires_grad=True), op, 2)
    with pytest.raises(AutogradError, match="leaf Variable"):
        _augment(dg.tensor([1.5, 2.0], dtype=dg.float64, requires_grad=True), op, 2)


@pytest.mark.parametrize("op", ["//=", "%=", "**="])
def test_augmented_assignment_refuses_an_int_tensor_taking_a_float(op):
    with pytest.raises(RuntimeError):
        _augment(torch.tensor([1, 2]), op, 2.5)
    with pytest.raises(TypeError, match="can't be cast"):
        _augment(dg.tensor([1, 2]), op, 2.5)


def test_matmul_assignment_rebinds_as_torch():
    def run(lib):
        a = lib.ones(2, 2)
        before = a
        a @= lib.eye(2) * 2
        return a is before, before.tolist(), a.tolist()

    assert run(dg) == run(torch)


@pytest.mark.parametrize("dtype", ["int64", "int8", "uint8", "bool", "float64"])
def test_full_takes_a_0d_tensor_fill_as_its_number(dtype):
    def run(lib):
        out = lib.full((2,), lib.tensor(1, dtype=getattr(lib, dtype)))
        return str(out.dtype).split(".")[1], out.tolist()

    assert run(dg) == run(torch)


def test_as_strided_counts_storage_offset_from_the_storage_start():
    def run(lib):
        a = lib.arange(10.0)
        out = a[2:5].as_strided((2, 2), (1, 2), 3)
        out[0, 0] = -5
        first = a[1:].as_strided((2,), (2,), 0)
        return out.tolist(), first.tolist(), a.tolist(), lib.as_strided(a[2:], (3,), (2,)).tolist()

    assert run(dg) == run(torch)


def test_as_strided_gradient_of_a_view_with_an_offset():
    def run(lib):
        a = lib.arange(10.0, dtype=lib.float64).requires_grad_()
        out = a[2:].as_strided((2, 2), (1, 1), 3)
        (out * lib.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=lib.float64)).sum().backward()
        return a.grad.tolist()

    assert run(dg) == run(torch)


def test_as_strided_refuses_to_differentiate_outside_the_view():
    a = dg.arange(10.0, dtype=dg.float64).requires_grad_()
    with pytest.raises(AutogradError, match="outside the input view"):
        a[2:].as_strided((2,), (1,), 0)


LAYOUTS = {
    "transpose": lambda lib: lib.zeros(3, 4).t(),
    "permute": lambda lib: lib.zeros(2, 3, 4, 5).permute(0, 2, 3, 1),
    "strided": lambda lib: lib.zeros(4, 6)[:, ::2].t(),
    "expanded": lambda lib: lib.zeros(3, 1).expand(3, 4),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["zeros_like", "ones_like", "empty_like", "rand_like", "randn_like", "full_like"])
def test_like_functions_preserve_the_input_layout(name, layout):
    def run(lib, **kw):
        args = (LAYOUTS[layout](lib), 2.0) if name == "full_like" else (LAYOUTS[layout](lib),)
        out = getattr(lib, name)(*args, **kw)
        return out.stride(), out.is_contiguous()

    assert run(dg) == run(torch)
    assert run(dg, memory_format=dg.contiguous_format) == run(torch, memory_format=torch.contiguous_format)


def test_like_functions_keep_requires_grad_and_channels_last():
    out = dg.zeros_like(dg.zeros(3, 4).t(), requires_grad=True)
    assert out.requires_grad and out.stride() == (1, 4)
    x = torch.zeros(2, 3, 4, 5)
    want = torch.zeros_like(x, memory_format=torch.channels_last).stride()
    assert dg.zeros_like(dg.zeros(2, 3, 4, 5), memory_format=dg.channels_last).stride() == want


@pytest.mark.parametrize("name", ["rand_like", "randn_like"])
@pytest.mark.parametrize("dtype", ["int64", "uint8", "bool"])
def test_random_like_refuses_an_integer_tensor(name, dtype):
    with pytest.raises(NotImplementedError):
        getattr(torch, name)(torch.zeros(2, dtype=getattr(torch, dtype)))
    with pytest.raises(TypeError, match=f"{name}: draws floating point numbers, not {dtype}"):
        getattr(dg, name)(dg.zeros(2, dtype=getattr(dg, dtype)))
    assert getattr(dg, name)(dg.zeros(2, dtype=getattr(dg, dtype)), dtype=dg.float64).dtype == dg.float64


SIZED = {
    "zeros": lambda lib: lib.zeros(size=(2, 3)),
    "ones": lambda lib: lib.ones(size=(2, 3), dtype=lib.int64),
    "empty": lambda lib: lib.empty(size=[2]),
    "rand": lambda lib: lib.rand(size=(2, 3)),
    "randn": lambda lib: lib.randn(size=(2, 3)),
    "full": lambda lib: lib.full(size=(2, 3), fill_value=7),
    "new_zeros": lambda lib: lib.zeros(2, dtype=lib.int32).new_zeros(size=(2, 3)),
    "new_ones": lambda lib: lib.zeros(2).new_ones(size=(1,)),
    "new_empty": lambda lib: lib.zeros(2).new_empty(size=(2, 3)),
    "new_full": lambda lib: lib.zeros(2).new_full(size=(2, 3), fill_value=3),
}


@pytest.mark.parametrize("name", SIZED)
def test_size_keyword(name):
    def run(lib):
        out = SIZED[name](lib)
        return tuple(out.shape), str(out.dtype).split(".")[1]

    assert run(dg) == run(torch)


def test_repeat_interleave_counts_alone_and_output_size():
    def run(lib):
        counts = lib.tensor([1, 2, 0])
        return (
            lib.repeat_interleave(counts).tolist(),
            lib.repeat_interleave(lib.tensor([2, 1]), output_size=3).tolist(),
            lib.tensor([1, 2, 3]).repeat_interleave(2, output_size=6).tolist(),
        )

    assert run(dg) == run(torch)
    with pytest.raises(ValueError, match="Invalid output_size, expected 6 but got 5"):
        dg.repeat_interleave(dg.tensor([1, 2, 3]), 2, output_size=5)


def test_a_0d_integer_tensor_as_dim_and_tensordot_dims():
    def run(lib):
        x = lib.arange(6.0).reshape(2, 3)
        a, b = lib.ones(2, 3), lib.ones(3, 4)
        return (
            x.sum(lib.tensor(1)).tolist(),
            x.cumsum(lib.tensor(-1)).tolist(),
            lib.tensordot(a, b, dims=lib.tensor(1)).tolist(),
            lib.tensordot(a, b, dims=lib.tensor([[1], [0]])).tolist(),
        )

    assert run(dg) == run(torch)


def test_gather_sparse_grad_keyword_and_is_cpu():
    def run(lib):
        x = lib.arange(6.0).reshape(2, 3)
        index = lib.tensor([[2], [0]])
        return lib.gather(x, 1, index, sparse_grad=False).tolist(), x.gather(1, index).tolist(), x.is_cpu

    assert run(dg) == run(torch)
    with pytest.raises(NotImplementedError, match="sparse_grad"):
        dg.gather(dg.ones(2), 0, dg.tensor([0]), sparse_grad=True)


@pytest.mark.parametrize("name", ["any", "all"])
def test_any_all_of_uint8_stay_uint8(name):
    def run(lib):
        x = lib.tensor([[1, 0], [2, 3]], dtype=lib.uint8)
        outs = (getattr(x, name)(), getattr(x, name)(0), getattr(lib, name)(x, dim=1))
        return [(str(o.dtype).split(".")[1], o.tolist()) for o in outs]

    assert run(dg) == run(torch)
