"""torch's top-level range, cond, while_loop, is_neg/is_distributed, unsafe_split_with_sizes, to_dlpack,
set_default_tensor_type, set_flush_denormal, the deterministic debug mode and warn-always switches, and the
Tensor predicates is_pinned/is_shared/is_set_to: against torch 2.13 in float64 (values, gradients, finite
differences) and torch's errors."""

import warnings

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import DTypeError, InputRangeError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
rng = np.random.default_rng(8)


@pytest.mark.parametrize(
    "args,kwargs",
    [((1, 4), {}), ((0, 1, 0.3), {}), ((3, 1, -1), {"dtype": "int64"}), ((0, 0), {}), ((-1.5, 2.5, 0.5), {}),
     ((0, 1, 0.25), {"dtype": "float64"})],
)  # fmt: skip
def test_range_is_torchs_end_inclusive_arange_with_its_warning(args, kwargs):
    with pytest.warns(UserWarning, match="torch.range is deprecated"):
        ours = dg.range(*args, **{k: getattr(dg, v) for k, v in kwargs.items()})
    with pytest.warns(UserWarning, match="torch.range is deprecated"):
        theirs = torch.range(*args, **{k: getattr(torch, v) for k, v in kwargs.items()})
    assert ours.dtype.name == str(theirs.dtype).removeprefix("torch.")
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "args,message",
    [((0, 1, 0), "step must be nonzero"), ((0, -1, 1), "upper bound and lower bound inconsistent with step sign"),
     ((0, float("inf")), "unsupported range: 0 -> inf")],
)  # fmt: skip
def test_range_refuses_what_torch_refuses(args, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match=message):
            torch.range(*args)
        with pytest.raises(InputRangeError, match=message):
            dg.range(*args)


def test_range_requires_grad():
    with pytest.warns(UserWarning):
        assert dg.range(0, 2, requires_grad=True).requires_grad


@pytest.mark.parametrize("pred", [True, False, "positive", "negative"])
def test_cond_runs_the_branch_torch_runs_with_its_gradient(pred):
    a = np.abs(rng.standard_normal(3)) + 0.5

    def run(lib, x, y):
        p = pred if isinstance(pred, bool) else (x.sum() > 0 if pred == "positive" else x.sum() < 0)
        return lib.cond(p, lambda u, v: (u * v).sin(), lambda u, v: u.exp() - v, (x, y))

    check(lambda x, y: run(dg, x, y), lambda x, y: run(torch, x, y), a, a[::-1].copy())
    x = dg.tensor(a, requires_grad=True)
    assert dg.autograd.gradcheck(
        lambda t: dg.cond(pred != "negative", lambda u: u.sin(), lambda u: u.cos(), (t,)), (x,)
    )


def test_cond_unpacks_a_tuple_of_operands_and_takes_a_list_as_torch():
    x = dg.tensor([1.0, 2.0])
    assert dg.cond(True, lambda a: a + 1, lambda a: a, [x]).tolist() == [2.0, 3.0]
    tx = torch.tensor([1.0, 2.0])
    assert torch.cond(True, lambda a: a + 1, lambda a: a, [tx]).tolist() == [2.0, 3.0]


def test_cond_refuses_a_predicate_of_several_elements_as_torch():
    message = "Expected pred to be bool or single-element tensor, but got"
    with pytest.raises(RuntimeError, match=message):
        torch.cond(torch.tensor([True, False]), lambda a: a, lambda a: a, (torch.ones(1),))
    with pytest.raises(ShapeError, match=message):
        dg.cond(dg.tensor([True, False]), lambda a: a, lambda a: a, (dg.ones(1),))
    with pytest.raises(TypeError, match="Expect true_fn to be callable"):
        dg.cond(True, 3, lambda a: a, (dg.ones(1),))


def test_while_loop_carries_values_and_gradients_as_torch():
    a = rng.standard_normal(3)

    def run(lib, x):
        return lib.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, (v * 1.5).sin()), (lib.tensor(0), x))[1]

    check(lambda x: run(dg, x), lambda x: run(torch, x), a)
    assert dg.autograd.gradcheck(lambda x: run(dg, x), (dg.tensor(a, requires_grad=True),))
    i, v = dg.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 2), [dg.tensor(0), dg.ones(2)])
    assert i.item() == 3 and v.tolist() == [8.0, 8.0]


def test_while_loop_refuses_a_body_returning_another_count():
    with pytest.raises(ShapeError, match="Expected body_fn_output and carried_inputs to have same number of outputs"):
        dg.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1,), (dg.tensor(0), dg.ones(2)))


def test_is_neg_is_distributed_is_pinned_is_shared_are_false_as_for_torchs_dense_tensors():
    x, tx = dg.ones(2), torch.ones(2)
    for name in ("is_neg", "is_distributed"):
        assert getattr(dg, name)(x) is getattr(torch, name)(tx) is False
    for name in ("is_neg", "is_pinned", "is_shared", "is_distributed"):
        assert getattr(x, name)() is getattr(tx, name)() is False


def test_is_set_to_is_same_memory_read_the_same_way_as_torch():
    x, tx = dg.arange(6.0).reshape(2, 3), torch.arange(6.0).reshape(2, 3)
    for view in (
        lambda t: t,
        lambda t: t[:],
        lambda t: t.t(),
        lambda t: t.clone(),
        lambda t: t[1],
        lambda t: t.view(6),
    ):
        assert x.is_set_to(view(x)) == tx.is_set_to(view(tx))
    assert dg.empty(0).is_set_to(dg.empty(0)) == torch.empty(0).is_set_to(torch.empty(0))


@pytest.mark.parametrize("sizes,dim", [([2, 4], 0), ([1, 1, 1], 1), ([6, 0], 0)])
def test_unsafe_split_with_sizes_matches_torch(sizes, dim):
    a = rng.standard_normal((6, 3))
    check(
        lambda x: dg.unsafe_split_with_sizes(x, sizes, dim), lambda x: torch.unsafe_split_with_sizes(x, sizes, dim), a
    )
    check(lambda x: x.unsafe_split_with_sizes(sizes, dim), lambda x: x.unsafe_split_with_sizes(sizes, dim), a)


def test_nonzero_static_as_a_method_matches_torch():
    a = np.array([[0.0, 1.0], [2.0, 0.0]])
    assert dg.tensor(a).nonzero_static(size=3).tolist() == torch.tensor(a).nonzero_static(size=3).tolist()


def test_to_dlpack_round_trips_through_distgraph_and_torch_sharing_memory():
    x = dg.arange(4.0)
    y = dg.from_dlpack(dg.to_dlpack(x))
    y[0] = 7.0
    t = torch.from_dlpack(dg.to_dlpack(x))
    t[1] = 5.0
    assert x.tolist() == [7.0, 5.0, 2.0, 3.0]
    back = dg.from_dlpack(torch.utils.dlpack.to_dlpack(torch.arange(3)))  # torch's (unversioned) capsule
    assert back.dtype == dg.int64 and back.tolist() == [0, 1, 2]


@pytest.fixture
def default_dtype():
    before, before_torch = dg.get_default_dtype(), torch.get_default_dtype()
    yield
    dg.set_default_dtype(before)
    torch.set_default_dtype(before_torch)


@pytest.mark.parametrize("name", ["torch.DoubleTensor", "torch.FloatTensor", "torch.HalfTensor"])
def test_set_default_tensor_type_sets_the_default_dtype_as_torch(name, default_dtype):
    with pytest.warns(UserWarning, match="set_default_tensor_type\\(\\) is deprecated"):
        dg.set_default_tensor_type(name)
    if name != "torch.HalfTensor":  # (torch refuses half as a CPU default type)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (torch warns once per process)
            torch.set_default_tensor_type(name)
        assert dg.get_default_dtype().name == str(torch.get_default_dtype()).removeprefix("torch.")
    assert dg.tensor([1.5]).dtype.name == {"torch.DoubleTensor": "float64", "torch.FloatTensor": "float32",
                                           "torch.HalfTensor": "float16"}[name]  # fmt: skip


@pytest.mark.parametrize("t", ["torch.IntTensor", torch.LongTensor, torch.float64, 3])
def test_set_default_tensor_type_refuses_non_float_types_as_torch(t, default_dtype):
    warnings.simplefilter("ignore")
    with pytest.raises(TypeError, match="only floating-point types are supported as the default type"):
        torch.set_default_tensor_type(t)
    with pytest.raises(DTypeError, match="only floating-point types are supported as the default type"):
        dg.set_default_tensor_type(t)


def test_set_flush_denormal_reports_it_cannot():
    assert dg.set_flush_denormal(True) is False and dg.set_flush_denormal(False) is False


@pytest.fixture
def deterministic_state():
    yield
    dg.use_deterministic_algorithms(False)
    torch.use_deterministic_algorithms(False)
    dg.set_warn_always(False)
    torch.set_warn_always(False)


@pytest.mark.parametrize("mode", [0, 1, 2, "default", "warn", "error", True])
def test_deterministic_debug_mode_is_use_deterministic_algorithms_as_torch(mode, deterministic_state):
    dg.set_deterministic_debug_mode(mode)
    torch.set_deterministic_debug_mode(mode)
    assert dg.get_deterministic_debug_mode() == torch.get_deterministic_debug_mode()
    assert dg.are_deterministic_algorithms_enabled() == torch.are_deterministic_algorithms_enabled()
    assert dg.is_deterministic_algorithms_warn_only_enabled() == torch.is_deterministic_algorithms_warn_only_enabled()
    dg.use_deterministic_algorithms(True, warn_only=True)
    torch.use_deterministic_algorithms(True, warn_only=True)
    assert dg.get_deterministic_debug_mode() == torch.get_deterministic_debug_mode() == 1


@pytest.mark.parametrize(
    "mode,error,message",
    [("x", InputRangeError, "expected one of `default`, `warn`, `error`, but got x"),
     (3, InputRangeError, "expected 0, 1, or 2, but got 3"), (-1, InputRangeError, "expected 0, 1, or 2, but got -1"),
     (1.0, TypeError, "debug_mode must be str or int, but got <class 'float'>")],
)  # fmt: skip
def test_deterministic_debug_mode_refuses_what_torch_refuses(mode, error, message, deterministic_state):
    with pytest.raises(RuntimeError if error is InputRangeError else error, match=message):
        torch.set_deterministic_debug_mode(mode)
    with pytest.raises(error, match=message):
        dg.set_deterministic_debug_mode(mode)


def test_warn_always_is_kept_and_read_back_as_torch(deterministic_state):
    assert dg.is_warn_always_enabled() is torch.is_warn_always_enabled() is False
    dg.set_warn_always(True)
    torch.set_warn_always(True)
    assert dg.is_warn_always_enabled() is torch.is_warn_always_enabled() is True
    with pytest.raises(RuntimeError, match="setWarnOnlyOnce expects a bool, but got int"):
        torch.set_warn_always(1)
    with pytest.raises(TypeError, match="setWarnOnlyOnce expects a bool, but got int"):
        dg.set_warn_always(1)
