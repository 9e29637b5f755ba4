"""torch's `out=` keyword (ops/out_arg.py, ops/torch_keywords.py): values, dtypes, resizing, views, tuples, creation functions and the
refusals, against torch 2.13 where it is installed (float64), and the list of functions that take it."""

import inspect
import warnings

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import DTypeError
from distgraph.ops.keyword_names import OUT

rng = np.random.default_rng(0)
X = rng.standard_normal((3, 4))
Y = rng.standard_normal((3, 4))
SQUARE = rng.standard_normal((4, 4)) + 4 * np.eye(4)

# (namespace, name, args as numpy arrays or values, kwargs, out dtypes: one name, or a tuple for a tuple of outs)
CALLS = [
    ("", "add", (X, Y), {"alpha": 2}, "float64"),
    ("", "mul", (X, 3.0), {}, "float64"),
    ("", "sum", (X, 0), {}, "float64"),
    ("", "mean", (X, 1), {"keepdim": True}, "float64"),
    ("", "cumsum", (X, 1), {}, "float64"),
    ("", "clamp", (X,), {"min": -0.5, "max": 0.5}, "float64"),
    ("", "where", (X > 0, X, Y), {}, "float64"),
    ("", "matmul", (X, Y.T), {}, "float64"),
    ("", "cat", ([X, Y], 0), {}, "float64"),
    ("", "stack", ([X, Y],), {}, "float64"),
    ("", "argmax", (X, 1), {}, "int64"),
    ("", "max", (X, 0), {}, ("float64", "int64")),
    ("", "sort", (X, 1), {}, ("float64", "int64")),
    ("", "topk", (X, 2), {}, ("float64", "int64")),
    ("", "cummax", (X, 1), {}, ("float64", "int64")),
    ("", "eq", (X, X), {}, "bool"),
    ("", "hardshrink", (X,), {}, "float64"),  # one of torch's functional forms distgraph imports on first use
    ("linalg", "norm", (X,), {}, "float64"),
    ("linalg", "inv", (SQUARE,), {}, "float64"),
    ("linalg", "qr", (SQUARE,), {}, ("float64", "float64")),
    ("linalg", "slogdet", (SQUARE,), {}, ("float64", "float64")),
    ("special", "expit", (X,), {}, "float64"),
    ("special", "logsumexp", (X, 1), {}, "float64"),
]


def _space(lib, ns):
    return getattr(lib, ns) if ns else lib


def _dtype(lib, name):
    return getattr(lib, name)


def _args(lib, args):
    def conv(a):
        if isinstance(a, np.ndarray):
            return lib.tensor(a) if lib is dg else __import__("torch").tensor(a)
        if isinstance(a, list):
            return [conv(v) for v in a]
        return a

    return [conv(a) for a in args]


def _outs(lib, dtypes, shape=(0,)):
    if isinstance(dtypes, tuple):
        return tuple(lib.empty(shape, dtype=_dtype(lib, d)) for d in dtypes)
    return lib.empty(shape, dtype=_dtype(lib, dtypes))


def _arrays(result):
    if isinstance(result, tuple):
        return [r.numpy() for r in result]
    return [result.numpy()]


@pytest.mark.parametrize(("ns", "name", "args", "kwargs", "dtypes"), CALLS, ids=[f"{c[0]}.{c[1]}" for c in CALLS])
def test_out_holds_the_result_and_is_returned(ns, name, args, kwargs, dtypes):
    fn = getattr(_space(dg, ns), name)
    out = _outs(dg, dtypes)
    got = fn(*_args(dg, args), **kwargs, out=out)
    want = fn(*_args(dg, args), **kwargs)
    if isinstance(out, tuple):
        assert type(got) is type(want) and all(g is o for g, o in zip(got, out))
    else:
        assert got is out
    for g, w in zip(_arrays(got), _arrays(want)):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize(("ns", "name", "args", "kwargs", "dtypes"), CALLS, ids=[f"{c[0]}.{c[1]}" for c in CALLS])
def test_out_matches_torch(ns, name, args, kwargs, dtypes):
    torch = pytest.importorskip("torch")
    mine = getattr(_space(dg, ns), name)(*_args(dg, args), **kwargs, out=_outs(dg, dtypes))
    theirs = getattr(_space(torch, ns), name)(*_args(torch, args), **kwargs, out=_outs(torch, dtypes))
    for m, t in zip(_arrays(mine), _arrays(theirs)):
        assert m.shape == t.shape and m.dtype == t.dtype
        np.testing.assert_allclose(m, t, rtol=1e-12, atol=1e-12)


def test_every_listed_function_takes_out_and_none_had_its_own():
    for space, names in ((dg, OUT[""]), (dg.linalg, OUT["linalg"]), (dg.special, OUT["special"])):
        for name in names:
            fn = getattr(space, name)
            assert hasattr(fn, "__wrapped__"), name
            try:
                params = inspect.signature(fn.__wrapped__).parameters
            except (TypeError, ValueError):
                continue
            assert "out" not in params, f"{name} has an `out` of its own, which the wrapper would shadow"
    assert len(OUT[""]) > 200 and len(OUT["linalg"]) > 30 and len(OUT["special"]) > 50


def test_the_list_names_torch_functions_that_take_out():
    torch = pytest.importorskip("torch")
    for space, names in ((torch, OUT[""]), (torch.linalg, OUT["linalg"]), (torch.special, OUT["special"])):
        assert all(hasattr(space, n) for n in names)
    x = torch.rand(3)
    for name in ("add", "exp", "cumsum"):  # a sample; tools/gen_keyword_names.py checks them all
        assert name in OUT[""]
        getattr(torch, name)(x, *((x,) if name == "add" else (0,) if name == "cumsum" else ()), out=torch.empty(3))
    assert "relu" not in OUT[""] and "clone" not in OUT[""]  # torch's bindings refuse out there
    with pytest.raises(TypeError):
        dg.relu(dg.rand(3), out=dg.empty(3))


def _torch_warning(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message).split(" (Triggered internally")[0] for w in caught]


def test_a_filled_out_of_another_shape_is_resized_with_torchs_warning():
    out = dg.ones(5, dtype=dg.float64)
    with pytest.warns(UserWarning, match=r"resized since it had shape \[5\].*required output shape \[3, 4\]") as w:
        dg.add(dg.tensor(X), dg.tensor(Y), out=out)
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(out.numpy(), X + Y)
    torch = pytest.importorskip("torch")
    theirs = _torch_warning(lambda: torch.add(torch.tensor(X), torch.tensor(Y), out=torch.ones(5, dtype=torch.float64)))
    assert [str(m.message) for m in w] == theirs


def test_an_empty_out_is_resized_silently():
    out = dg.empty(0, dtype=dg.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dg.exp(dg.tensor(X), out=out)
    np.testing.assert_allclose(out.numpy(), np.exp(X), rtol=1e-15)


def test_the_result_is_cast_where_torch_casts_and_refused_where_it_does_not():
    ints = dg.tensor([1, 2, 3])
    out = dg.empty(3, dtype=dg.float32)
    dg.add(ints, 1, out=out)
    assert out.dtype == dg.float32 and out.tolist() == [2.0, 3.0, 4.0]
    for target in (dg.long, dg.bool_):
        with pytest.raises(DTypeError) as err:
            dg.add(dg.tensor(X), 1, out=dg.empty(3, 4, dtype=target))
        torch = pytest.importorskip("torch")
        with pytest.raises(RuntimeError) as theirs:
            torch.add(torch.tensor(X), 1, out=torch.empty(3, 4, dtype=getattr(torch, str(target).split(".")[-1])))
        assert str(err.value) == f"add(): {theirs.value}"


def test_autograd_is_refused_with_torchs_message_and_no_grad_allows_it():
    x = dg.tensor(X, requires_grad=True)
    leaf_out = dg.empty(3, 4, dtype=dg.float64, requires_grad=True)
    for call in (lambda: dg.mul(x, 2, out=dg.empty(3, 4)), lambda: dg.mul(dg.tensor(X), 2, out=leaf_out)):
        with pytest.raises(RuntimeError, match=r"^mul\(\): functions with out=\.\.\. arguments don't support"):
            call()
    with dg.no_grad():
        dg.mul(x, 2, out=leaf_out)
    np.testing.assert_array_equal(leaf_out.detach().numpy(), 2 * X)
    assert leaf_out.grad_fn is None and leaf_out.requires_grad
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError) as theirs:
        torch.mul(torch.tensor(X, requires_grad=True), 2, out=torch.empty(3, 4))
    with pytest.raises(RuntimeError) as mine:
        dg.mul(x, 2, out=dg.empty(3, 4))
    assert str(mine.value) == str(theirs.value)


def test_a_view_writes_into_its_base_and_the_version_moves():
    base = dg.zeros(2, 3, 4, dtype=dg.float64)
    view = base[1]
    before = view._version
    dg.add(dg.tensor(X), dg.tensor(Y), out=view)
    np.testing.assert_array_equal(base.numpy()[1], X + Y)
    np.testing.assert_array_equal(base.numpy()[0], 0)
    assert view._version > before and base._version > before


def test_out_may_be_an_input():
    a = dg.tensor(X)
    dg.add(a, a, out=a)
    np.testing.assert_array_equal(a.numpy(), 2 * X)
    values, indices = dg.sort(dg.tensor(X), 1)
    dg.sort(values, 1, descending=True, out=(values, indices))
    np.testing.assert_array_equal(values.numpy(), -np.sort(-X, axis=1))


def test_creation_functions_take_outs_dtype_and_refuse_another():
    out = dg.empty(3, dtype=dg.long)
    assert dg.zeros(3, out=out) is out and out.dtype == dg.long and out.tolist() == [0, 0, 0]
    assert dg.arange(5, out=dg.empty(0, dtype=dg.int32)).tolist() == [0, 1, 2, 3, 4]
    assert dg.randn(4, out=dg.empty(0, dtype=dg.float64)).dtype == dg.float64
    with pytest.raises(DTypeError) as err:
        dg.zeros(3, dtype=dg.float32, out=out)
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError) as theirs:
        torch.zeros(3, dtype=torch.float32, out=torch.empty(3, dtype=torch.long))
    assert str(err.value) == f"zeros(): {theirs.value}"


def test_an_out_of_the_wrong_kind_is_a_type_error():
    x = dg.tensor(X)
    with pytest.raises(TypeError, match=r"argument 'out' must be tuple of Tensors, not Tensor"):
        dg.max(x, 0, out=dg.empty(0))
    with pytest.raises(TypeError, match=r"argument 'out' must be Tensor, not tuple"):
        dg.add(x, x, out=(dg.empty(0),))
    with pytest.raises(TypeError, match=r"argument 'out' must be Tensor or tuple of Tensors, not list"):
        dg.add(x, x, out=[1])
    with pytest.raises(TypeError, match=r"must hold 2 tensors, got 3"):
        dg.sort(x, out=(dg.empty(0), dg.empty(0), dg.empty(0)))


def test_without_out_nothing_changes():
    x = dg.tensor(X, requires_grad=True)
    dg.sum(dg.mul(x, 3)).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full_like(X, 3))
    assert dg.add.__name__ == "add" and dg.linalg.norm.__doc__ == dg.linalg.norm.__wrapped__.__doc__


def _result_shells(result):
    """Empty outs of the result's dtypes, shaped as torch's out= takes them (a Tensor, or a tuple of them)."""
    if isinstance(result, dg.Tensor):
        return dg.empty(0, dtype=result.dtype)
    return (
        tuple(_result_shells(r) for r in result) if isinstance(result, tuple) else [_result_shells(r) for r in result]
    )


def test_every_function_that_takes_out_gives_through_it_what_it_returns():
    x, index = dg.tensor(rng.random((3, 3)) + 0.5), dg.zeros(3, 3, dtype=dg.long)
    patterns = [(x,), (x, x), (3,), ((3,),), (x, 0), (x, x, x), ([x, x],), (x, 0, index), ((3,), 1.0), (0.0, 1.0, 5),
                (x, 1, 1.0), (x, 0, index, x), (0, 5, (3,)), (x, 0.5), (x, 1, index[0]), (x, 1, index[0], x),
                (x > 1, x > 1.2), (index, index), (x, x > 1)]  # fmt: skip
    checked, wrong = 0, []
    for space, names in OUT.items():
        for name in sorted(names):
            fn = getattr(getattr(dg, space) if space else dg, name)
            for args in patterns:
                try:
                    dg.manual_seed(0)
                    want = fn(*args)
                except Exception:  # noqa: BLE001, S112  (not this function's arguments: the next pattern)
                    continue
                results = [want] if isinstance(want, dg.Tensor) else list(want)
                if not all(isinstance(r, dg.Tensor) for r in results):
                    break
                dg.manual_seed(0)
                got = fn(*args, out=_result_shells(want))
                got = [got] if isinstance(got, dg.Tensor) else list(got)
                if len(got) != len(results) or any(
                    g.dtype != w.dtype or not np.array_equal(g.numpy(), w.numpy(), equal_nan=True)
                    for g, w in zip(got, results)
                ):
                    wrong.append(f"{space}.{name}{args!r:.60}")
                checked += 1
                break
    assert not wrong, wrong
    assert checked >= 300  # of the 342: the others take arguments none of the patterns gives


def test_out_on_each_device_holds_what_the_cpu_computes(device):
    x, y = dg.tensor(X, device=device), dg.tensor(Y, device=device)
    out = dg.empty(0, dtype=dg.float64, device=device)
    assert dg.add(x, y, alpha=2, out=out) is out and out.device == x.device
    np.testing.assert_allclose(out.cpu().numpy(), X + 2 * Y, rtol=1e-15)
    values, indices = dg.max(
        x, 1, out=(dg.empty(0, dtype=dg.float64, device=device), dg.empty(0, dtype=dg.long, device=device))
    )
    np.testing.assert_array_equal(values.cpu().numpy(), X.max(1))
    np.testing.assert_array_equal(indices.cpu().numpy(), X.argmax(1))
    made = dg.zeros(2, 3, out=dg.empty(0, dtype=dg.int32, device=device))
    assert made.device == x.device and made.dtype == dg.int32 and made.cpu().tolist() == [[0] * 3] * 2
    base = dg.zeros(2, 3, 4, dtype=dg.float64, device=device)
    dg.mul(x, y, out=base[1])
    np.testing.assert_allclose(base.cpu().numpy()[1], X * Y, rtol=1e-15)
    np.testing.assert_array_equal(x.sum(axis=1, keepdims=True).cpu().numpy(), x.sum(dim=1, keepdim=True).cpu().numpy())
    if device == "cuda":
        with pytest.raises(RuntimeError, match="Expected out tensor to have device"):
            dg.add(x, y, out=dg.empty(0, dtype=dg.float64))
