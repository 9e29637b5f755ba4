"""numpy's `axis` and `keepdims` where torch's argument parser takes them for `dim` and `keepdim`
(ops/torch_keywords.py): functions and Tensor methods, against torch 2.13 where installed, and the list itself."""

import inspect

import numpy as np
import pytest

import distgraph as dg
from distgraph.ops.keyword_names import NUMPY_NAMES

rng = np.random.default_rng(1)
X = rng.standard_normal((3, 4, 5))

# (expression over `lib` and `x`, as a ported script writes it)
CALLS = [
    "x.sum(axis=1)",
    "x.sum(axis=(0, 2), keepdims=True)",
    "x.mean(axis=-1, keepdims=True)",
    "x.std(axis=0)",
    "x.var(axis=2, keepdims=True)",
    "x.prod(axis=1)",
    "x.amax(axis=1, keepdims=True)",
    "x.argmax(axis=2)",
    "x.logsumexp(axis=1)",
    "x.softmax(axis=-1)",
    "x.cumsum(axis=1)",
    "x.max(axis=1).values",
    "x.sort(axis=0).values",
    "x.topk(2, axis=1).indices",
    "x.unsqueeze(axis=0)",
    "x.squeeze(axis=0)",
    "x[0].squeeze(axis=0)",
    "lib.sum(x, axis=1, keepdims=True)",
    "lib.mean(x, axis=0)",
    "lib.cat([x, x], axis=1)",
    "lib.stack([x, x], axis=0)",
    "lib.max(x, axis=2).values",
    "lib.min(x, axis=0, keepdims=True).indices",
    "lib.argmin(x, axis=1)",
    "lib.all(x > 0, axis=1)",
    "lib.any(x > 0, axis=1, keepdims=True)",
    "lib.count_nonzero(x > 0, axis=2)",
    "lib.linalg.vector_norm(x, axis=1)",
    "lib.special.logsumexp(x, axis=2)",
    "lib.median(x, axis=1).values",
    "lib.gather(x, axis=1, index=lib.zeros(3, 1, 5, dtype=lib.long))",
]


def _run(lib, expr):
    x = lib.tensor(X)
    return eval(expr, {"lib": lib, "x": x})  # noqa: S307  (the table's expressions, ours)


@pytest.mark.parametrize("expr", CALLS)
def test_numpy_names_give_what_torchs_names_give(expr):
    with_numpy = _run(dg, expr).numpy()
    with_torch = _run(dg, expr.replace("axis=", "dim=").replace("keepdims=", "keepdim=")).numpy()
    np.testing.assert_array_equal(with_numpy, with_torch)


@pytest.mark.parametrize("expr", CALLS)
def test_numpy_names_match_torch(expr):
    torch = pytest.importorskip("torch")
    mine, theirs = _run(dg, expr), _run(torch, expr)
    assert tuple(mine.shape) == tuple(theirs.shape)
    np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-12)


def test_gradients_flow_through_the_renamed_call():
    x = dg.tensor(X, requires_grad=True)
    x.sum(axis=1, keepdims=True).mul(dg.tensor(X[:, :1])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.broadcast_to(X[:, :1], X.shape))


def test_both_names_at_once_is_a_type_error():
    x = dg.tensor(X)
    with pytest.raises(TypeError, match=r"sum\(\) got multiple values for argument 'dim' \(as 'axis'\)"):
        x.sum(dim=1, axis=1)
    with pytest.raises(TypeError, match=r"got multiple values for argument 'keepdim'"):
        dg.mean(x, 1, keepdim=True, keepdims=True)


def test_where_torchs_binding_takes_no_numpy_names_neither_does_distgraphs():
    x = dg.tensor(X)
    for call in (lambda: dg.nn.functional.softmax(x, axis=1), lambda: x.flip(axis=0), lambda: x.transpose(axis=0)):
        with pytest.raises(TypeError):
            call()
    torch = pytest.importorskip("torch")
    t = torch.tensor(X)
    for call in (lambda: torch.nn.functional.softmax(t, axis=1), lambda: t.flip(axis=0)):
        with pytest.raises(TypeError):
            call()


def test_every_listed_name_is_wrapped_and_none_had_its_own_axis():
    spaces = {"": dg, "Tensor": dg.Tensor, "linalg": dg.linalg, "special": dg.special}
    for space, names in NUMPY_NAMES.items():
        for name in names:
            fn = getattr(spaces[space], name)
            assert hasattr(fn, "__wrapped__"), f"{space}.{name}"
            params = inspect.signature(fn.__wrapped__).parameters
            assert "axis" not in params and "keepdims" not in params, f"{space}.{name} names them itself"
    assert {"sum", "mean", "max", "softmax", "cat"} <= NUMPY_NAMES[""] | NUMPY_NAMES["Tensor"]


def test_the_list_matches_torchs_parser():
    torch = pytest.importorskip("torch")
    t = torch.rand(2, 3)
    for name in ("sum", "mean", "argmax", "cumsum"):
        assert name in NUMPY_NAMES["Tensor"] and name in NUMPY_NAMES[""]
        getattr(t, name)(axis=1)
        getattr(torch, name)(t, axis=1)


def test_every_function_and_method_that_takes_axis_gives_what_dim_gives():
    base, index = rng.random((3, 4)) + 0.5, dg.zeros(3, 4, dtype=dg.long)
    tails = [(), (2,), (index,), (index, dg.tensor(base)), (0, 2), ([1, 3],), (0,), (dg.tensor([0, 1]),)]
    spaces = {"": dg, "linalg": dg.linalg, "special": dg.special}

    def call(space, name, tail, **keyword):  # on a tensor of its own: the in-place methods (squeeze_) change it
        x = dg.tensor(base)
        if space == "Tensor":
            return getattr(x, name)(*tail, **keyword)
        head = ([x, x],) if name in ("cat", "stack", "concat", "concatenate") else (x,)
        return getattr(spaces[space], name)(*head, *tail, **keyword)

    checked, wrong = 0, []
    for space, names in NUMPY_NAMES.items():
        for name in sorted(names):
            for tail in tails:
                try:
                    dg.manual_seed(0)
                    want = call(space, name, tail, dim=1)
                except Exception:  # noqa: BLE001, S112  (not this function's arguments: the next pattern)
                    continue
                dg.manual_seed(0)
                got = call(space, name, tail, axis=1)
                pairs = zip(want, got) if isinstance(want, (tuple, list)) else [(want, got)]
                if any(not np.array_equal(np.asarray(w), np.asarray(g), equal_nan=True) for w, g in pairs):
                    wrong.append(f"{space}.{name}")
                checked += 1
                break
    assert not wrong, wrong
    assert checked >= 120  # of the 169: the others take arguments none of the patterns gives
