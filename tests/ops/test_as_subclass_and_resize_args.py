"""Tensor.as_subclass (an alias of another Tensor class, in the graph) and the size arguments resize_ and
resize take, against torch 2.13: values, gradients, shared memory and versions, and torch's errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import ShapeError

torch = pytest.importorskip("torch")
rng = np.random.default_rng(5)


class Mine(dg.Tensor):
    pass


class TorchMine(torch.Tensor):
    pass


def test_as_subclass_is_an_alias_of_that_class_in_the_graph():
    a = rng.standard_normal(4)
    x, tx = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, ty = x * 2, tx * 2
    z, tz = y.as_subclass(Mine), ty.as_subclass(TorchMine)
    assert type(z) is Mine and z.requires_grad and not z.is_leaf and z._version == y._version
    seed = rng.standard_normal(4)
    (z.exp() * dg.tensor(seed)).sum().backward()
    (tz.exp() * torch.tensor(seed)).sum().backward()
    np.testing.assert_allclose(z.detach().numpy(), tz.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    assert dg.autograd.gradcheck(lambda t: (t * 3).as_subclass(Mine).sin(), (dg.tensor(a, requires_grad=True),))
    leaf = dg.tensor(a, requires_grad=True).as_subclass(Mine)  # of a leaf: torch's alias is no leaf either
    assert (
        leaf.requires_grad
        and not leaf.is_leaf
        and not torch.tensor(a, requires_grad=True).as_subclass(TorchMine).is_leaf
    )


def test_as_subclass_shares_memory_and_version_both_ways():
    w, tw = dg.zeros(3, dtype=dg.float64), torch.zeros(3, dtype=torch.float64)
    v, tv = w.as_subclass(Mine), tw.as_subclass(TorchMine)
    v[0], tv[0] = 5.0, 5.0
    w.add_(1), tw.add_(1)
    assert w.tolist() == tw.tolist() == [6.0, 1.0, 1.0] and v.tolist() == tv.tolist()
    assert (w._version, v._version) == (tw._version, tv._version) == (2, 2)


def test_a_write_through_the_subclass_alias_reaches_the_source_graph():
    a = rng.standard_normal(4)
    grads = []
    for lib, cls in ((dg, Mine), (torch, TorchMine)):
        x = lib.tensor(a, requires_grad=True)
        y = x * 2
        y.as_subclass(cls).mul_(y.detach() + 1)  # the write reaches y's graph, as torch's CopySlices
        y.sin().sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(*grads, rtol=1e-12)


def test_as_subclass_in_no_grad_mode_requires_grad_as_torch():
    x, tx = dg.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    with dg.no_grad():
        z = x.as_subclass(Mine)
    with torch.no_grad():
        tz = tx.as_subclass(TorchMine)
    assert (z.requires_grad, z.is_leaf, z.grad_fn) == (tz.requires_grad, tz.is_leaf, tz.grad_fn) == (True, True, None)


def test_as_subclass_of_tensor_is_a_plain_alias():
    x = dg.tensor(rng.standard_normal(3), requires_grad=True)
    y = x.as_subclass(dg.Tensor)
    assert isinstance(y, dg.Tensor) and not isinstance(y, Mine) and y is not x and not y.is_leaf
    z = x.as_subclass(Mine).as_subclass(dg.Tensor)
    assert not isinstance(z, Mine) and np.shares_memory(z.detach().numpy(), x.detach().numpy())


@pytest.mark.parametrize(
    "cls,message",
    [
        (int, "Creating a Tensor subclass from a class that does not inherit from Tensor is not possible"),
        (3, r"cls must be a type \(got int\)"),
    ],
)
def test_as_subclass_refuses_what_torch_refuses(cls, message):
    with pytest.raises(TypeError, match=message):
        torch.zeros(2).as_subclass(cls)
    with pytest.raises(TypeError, match=message):
        dg.zeros(2).as_subclass(cls)


def _zero_dim(lib, args):
    """`args` with "two" read as a 0-d integer tensor of `lib` (torch takes one as a size)."""
    swap = lambda n: lib.tensor(2) if n == "two" else n  # noqa: E731
    return tuple(tuple(map(swap, a)) if isinstance(a, tuple) else swap(a) for a in args)


@pytest.mark.parametrize(
    "args", [((2, 3),), ([2, 3],), (2, 3), ((),), ((np.int64(2), 3),), (np.int64(3), 2), ("two", 3), (("two", 3),)]
)
def test_resize_in_place_takes_the_sizes_torch_takes(args):
    x, tx = dg.arange(6.0), torch.arange(6.0)
    assert x.resize_(*_zero_dim(dg, args)) is x and x.shape == tuple(tx.resize_(*_zero_dim(torch, args)).shape)
    assert dg.arange(6.0).resize_(size=(3, 2)).shape == tuple(torch.arange(6.0).resize_(size=(3, 2)).shape)


RESIZE_REFUSALS = [
    (((2,), 3), {}, TypeError, r"resize_\(\) takes 1 positional argument but 2 were given"),
    (((2, 3), 4), {}, TypeError, r"resize_\(\) takes 1 positional argument but 2 were given"),
    ((2.0, 3), {}, TypeError, r"resize_\(\) takes 1 positional argument but 2 were given"),
    (
        (2, (3,)),
        {},
        TypeError,
        'failed to unpack the object at pos 2 with error "type must be tuple of ints,but got tuple',
    ),
    (
        ((2, 3.0),),
        {},
        TypeError,
        'failed to unpack the object at pos 2 with error "type must be tuple of ints,but got float',
    ),
    (
        (2, 3, None),
        {},
        TypeError,
        'failed to unpack the object at pos 3 with error "type must be tuple of ints,but got None',
    ),
    (((2.0, 3),), {}, TypeError, r"\(position 1\) must be tuple of ints, but found element of type float at pos 0"),
    ((), {}, TypeError, r"resize_\(\) missing 1 required positional arguments: \"size\""),
    ((None,), {}, TypeError, r"argument 'size' \(position 1\) must be tuple of ints, not NoneType"),
    (("ab",), {}, TypeError, r"argument 'size' \(position 1\) must be tuple of ints, not str"),
    ((True,), {}, TypeError, r"argument 'size' \(position 1\) must be tuple of ints, not bool"),
    ((np.array([2, 3]),), {}, TypeError, r"argument 'size' \(position 1\) must be tuple of ints, not numpy.ndarray"),
    ((), {"size": 2}, TypeError, r"argument 'size' must be tuple of ints, not int"),
    ((2,), {"size": (3,)}, TypeError, r"resize_\(\) got multiple values for argument 'size'"),
    (((2, -3),), {}, (RuntimeError, ShapeError), "numel: integer multiplication overflow"),
]


@pytest.mark.parametrize("args,kwargs,error,message", RESIZE_REFUSALS)
def test_resize_in_place_refuses_what_torch_refuses(args, kwargs, error, message):
    torch_error = error[0] if isinstance(error, tuple) else error
    with pytest.raises(torch_error, match=message):
        torch.arange(6.0).resize_(*args, **kwargs)
    with pytest.raises(error[-1] if isinstance(error, tuple) else error, match=message):
        dg.arange(6.0).resize_(*args, **kwargs)


def test_resize_as_in_place_wants_a_tensor_template():
    message = r"resize_as_\(\): argument 'the_template' \(position 1\) must be Tensor, not tuple"
    with pytest.raises(TypeError, match=message):
        torch.zeros(6).resize_as_((2, 3))
    with pytest.raises(TypeError, match=message):
        dg.zeros(6).resize_as_((2, 3))


@pytest.mark.parametrize("sizes", [((2, 3),), ([2, 3],), ((6,),), ((2,), 3), (dg.Size([2, 3]),), (), (2, -3)])
def test_out_of_place_resize_refuses_a_sequence_as_torch(sizes):
    """torch's Resize multiplies its *sizes: a tuple gives no element count, so only resize(2, 3) passes."""
    theirs = tuple(torch.Size(s) if isinstance(s, dg.Size) else s for s in sizes)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError) as expected:
        torch.arange(6.0).resize(*theirs)
    text = str(expected.value).split(" (")[0].replace("torch.Size", "Size")
    with pytest.warns(UserWarning), pytest.raises(ShapeError, match="requested resize to") as got:
        dg.arange(6.0).resize(*sizes)
    assert str(got.value).split(" (")[0].replace("torch.Size", "Size") == text
    assert "autograd's resize can only change the shape of a given tensor" in str(got.value)


def test_out_of_place_resize_refuses_float_sizes_as_torch():
    with (
        pytest.warns(UserWarning),
        pytest.raises(TypeError, match=r"received an invalid combination of arguments - got \(float, int\)"),
    ):
        torch.arange(6.0).resize(2.0, 3)
    with (
        pytest.warns(UserWarning),
        pytest.raises(TypeError, match=r"received an invalid combination of arguments - got \(float, int\)"),
    ):
        dg.arange(6.0).resize(2.0, 3)


def test_out_of_place_resize_of_ints_matches_torch_with_gradient():
    a = rng.standard_normal((2, 3))
    x, tx = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    with pytest.warns(UserWarning, match="non-inplace resize is deprecated"):
        y = x.t().resize(3, dg.tensor(2))
    with pytest.warns(UserWarning):
        ty = tx.t().resize(3, torch.tensor(2))
    np.testing.assert_array_equal(y.detach().numpy(), ty.detach().numpy())
    seed = rng.standard_normal((3, 2))
    (y * dg.tensor(seed)).sum().backward()
    (ty * torch.tensor(seed)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
