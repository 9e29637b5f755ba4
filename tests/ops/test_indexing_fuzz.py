"""t[index], t[index] = v, t[index] += v and index_put_ against torch 2.13 on random subscripts (seeded):
every form a torch user writes, mixed — ints (Python, numpy, 0-d tensors), slices of any bounds and
positive steps, None, Ellipsis, integer index tensors (int64/int32, negative, broadcasting, empty,
duplicated), lists, bool and uint8 masks, Python bools and 0-d bool tensors, a list instead of a tuple
— on float64 inputs of 0 to 4 dims. Values and every gradient must equal torch's; where torch raises,
distgraph must raise the same kind of error (IndexError, ValueError, TypeError)."""

import warnings

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")

DIMS = {"int": 1, "np-int": 1, "t0": 1, "slice": 1, "array": 1, "list": 1, "none": 0, "bool": 0, "tbool": 0}
KINDS = list(DIMS) + ["mask"]
WEIGHTS = np.array([3, 1, 1, 4, 4, 2, 1, 1, 1, 2], float)


def _plan(rng, ndim):
    """Item kinds with the dims each takes; an Ellipsis may go anywhere (the items after it index the
    last dims). Mostly fits the input; sometimes takes one dim too many (torch's error)."""
    kinds = list(rng.choice(KINDS, size=rng.integers(0, 6), p=WEIGHTS / WEIGHTS.sum()))
    if rng.random() < 0.15:  # two index tensors apart: torch moves the indexed dims first
        at = rng.integers(0, len(kinds) + 1)
        kinds[at:at] = ["array", "slice", "array"]
    takes = [rng.integers(1, 3) if k == "mask" else DIMS[k] for k in kinds]
    while sum(takes) > ndim and not (sum(takes) == ndim + 1 and rng.random() < 0.05):
        kinds.pop(), takes.pop()
    plan = list(zip(kinds, takes))
    if rng.random() < 0.35:
        plan.insert(rng.integers(0, len(plan) + 1), ("ellipsis", 0))
    dims, d = [], 0
    ell = next((i for i, (k, _) in enumerate(plan) if k == "ellipsis"), None)
    for i, (k, t) in enumerate(plan):
        if ell is not None and i == ell:
            d = ndim - sum(t for _, t in plan[ell + 1 :])
        dims.append(d)
        d += t
    return [(k, t, d) for (k, t), d in zip(plan, dims)]


def _bounded(rng, n, size):
    """Indices into a dim of size n (negative ones too), one out of range now and then."""
    if n == 0 or rng.random() < 0.03:
        return rng.integers(-n - 2, n + 3, size)
    return rng.integers(-n, n, size)


def _spec(rng, shape):
    """A random subscript as a spec: a list of (kind, payload); `build` turns it into either library's."""
    ndim = len(shape)
    plan = _plan(rng, ndim)
    has_mask = any(k == "mask" for k, _, _ in plan)
    bshape = tuple(rng.integers(0, 4, rng.integers(0, 3)))  # the shape the index tensors broadcast to
    items = []
    for kind, take, d in plan:
        n = shape[d] if 0 <= d < ndim else 1
        if kind in ("int", "np-int", "t0"):
            items.append((kind, int(_bounded(rng, n, ()))))
        elif kind == "slice":
            lo, hi = (None if rng.random() < 0.3 else int(rng.integers(-n - 2, n + 3)) for _ in range(2))
            items.append((kind, slice(lo, hi, [None, 1, 2, 3][rng.integers(0, 4)])))
        elif kind in ("array", "list"):
            s = (1,) if has_mask else tuple(b if rng.random() < 0.8 else 1 for b in bshape)[rng.integers(0, 2) :]
            if kind == "list" and not s:
                s = (1,)
            a = _bounded(rng, n, s)
            items.append((kind, a.astype(np.int32) if kind == "array" and rng.random() < 0.3 else a))
        elif kind == "mask":
            m = rng.random(shape[d : d + take]) < 0.5
            items.append((kind, m.astype(np.uint8) if rng.random() < 0.15 else m))
        elif kind in ("bool", "tbool"):
            items.append((kind, bool(rng.random() < 0.7)))
        else:
            items.append((kind, None))
    form = rng.choice(["tuple", "list", "bare"], p=[0.75, 0.15, 0.1])
    return items, str(form if form != "bare" or len(items) == 1 else "tuple")


def build(m, spec):
    items, form = spec
    out = []
    for kind, v in items:
        if kind in ("int", "slice"):
            out.append(v)
        elif kind == "np-int":
            out.append(np.int64(v))
        elif kind == "t0":
            out.append(m.tensor(v))
        elif kind in ("array", "mask"):
            out.append(m.tensor(v) if m is torch else dg.tensor(v))
        elif kind == "list":
            out.append(v.tolist())
        elif kind == "bool":
            out.append(v)
        elif kind == "tbool":
            out.append(m.tensor(v))
        elif kind == "none":
            out.append(None)
        else:
            out.append(Ellipsis)
    if form == "bare":
        return out[0]
    return list(out) if form == "list" else tuple(out)


def _shape(rng):
    return tuple(int(s) if rng.random() > 0.05 else 0 for s in rng.integers(1, 5, rng.integers(0, 5)))


def _check(dg_fn, torch_fn, *arrays, **kw):
    """tests.parity.check, and both outputs need grad alike (check compares gradients only where both
    do, so an output that lost its graph would otherwise pass)."""
    out = check(dg_fn, torch_fn, *arrays, **kw)
    ref = torch_fn(
        *[torch.tensor(a, requires_grad=a.dtype.kind == "f") if isinstance(a, np.ndarray) else a for a in arrays]
    )
    assert out.requires_grad == ref.requires_grad, f"requires_grad {out.requires_grad} != torch's"


def _same_error(fn_torch, fn_dg):
    """Run torch's side; when it raises, distgraph must raise the same builtin kind. True if it raised."""
    try:
        fn_torch()
    except (IndexError, ValueError, TypeError, RuntimeError) as exc:
        kind = (
            RuntimeError
            if type(exc) is RuntimeError
            else next(k for k in (IndexError, ValueError, TypeError) if isinstance(exc, k))
        )
        expect = dg.errors.DistgraphError if kind is RuntimeError else kind
        with pytest.raises(expect):
            fn_dg()
        return True
    return False


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the deprecated forms warn; test_indexing checks that
        yield


@pytest.mark.parametrize("seed", range(400))
def test_getitem_matches_torch(seed):
    rng = np.random.default_rng(seed)
    shape = _shape(rng)
    spec = _spec(rng, shape)
    x = rng.standard_normal(shape)
    if _same_error(lambda: torch.tensor(x)[build(torch, spec)], lambda: dg.tensor(x)[build(dg, spec)]):
        return
    _check(lambda a: a[build(dg, spec)], lambda a: a[build(torch, spec)], x)


def _value(rng, m, target, x_dtype_is_float=True):
    """A value for t[index] = value: a Python number or a tensor broadcasting to `target` in one of the
    ways torch accepts (full, some dims 1, a suffix, an extra leading 1), sometimes of another dtype."""
    r = rng.random()
    if r < 0.25:
        return ("float", float(rng.standard_normal()))
    if r < 0.3:
        return ("int", int(rng.integers(-3, 4)))
    if r < 0.33:
        return ("pybool", bool(rng.integers(0, 2)))
    shape = tuple(target)
    how = rng.random()
    if how < 0.2:
        shape = tuple(1 if rng.random() < 0.5 else s for s in shape)
    elif how < 0.35:
        shape = shape[rng.integers(0, len(shape) + 1) :]
    elif how < 0.42:
        shape = (1, *shape)
    dt = rng.choice(["f64", "f64", "f64", "f64", "f32", "i64"])
    a = rng.standard_normal(shape)
    return (str(dt), a.astype(np.float32) if dt == "f32" else (a * 3).astype(np.int64) if dt == "i64" else a)


def _setitem_case(seed):
    rng = np.random.default_rng(seed)
    shape = _shape(rng)
    spec = _spec(rng, shape)
    x = rng.standard_normal(shape)
    with torch.no_grad():
        try:
            target = torch.tensor(x)[build(torch, spec)].shape
        except (IndexError, ValueError, TypeError, RuntimeError):
            target = ()
    return rng, shape, spec, x, _value(rng, torch, target), rng.random() < 0.3


@pytest.mark.parametrize("seed", range(300))
def test_setitem_matches_torch(seed):
    """c[index] = v (or += v) where c is a non-leaf (a * 1), a tensor outside the graph (only v needs
    grad) or a view of a non-leaf written twice: the values written to and the gradients of a and v."""
    rng, shape, spec, x, (vkind, v), augmented = _setitem_case(seed)
    w = rng.standard_normal(shape)
    target = rng.choice(["non-leaf", "constant", "view"])

    def run(m, a, *val):
        value = val[0] if val else v
        out = c = a * 1 if target == "non-leaf" else m.zeros(shape, dtype=m.float64)
        if target == "view":  # c views `out` through two basic indexings; a first write through it
            out = a * 1
            c = out[None][0]
            c.mul_(2)
        if augmented:
            c[build(m, spec)] += value
        else:
            c[build(m, spec)] = value
        return out * m.tensor(w)

    args = (x, v) if isinstance(v, np.ndarray) else (x,)
    if _same_error(
        lambda: run(torch, *[torch.tensor(a) for a in args]), lambda: run(dg, *[dg.tensor(a) for a in args])
    ):
        return
    _check(lambda *a: run(dg, *a), lambda *a: run(torch, *a), *args, rtol=1e-6 if vkind == "f32" else 1e-7)


@pytest.mark.parametrize("seed", range(150))
def test_index_put_matches_torch(seed):
    """index_put (out of place) and index_put_ on a non-leaf, accumulate or not: values and gradients."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(1, 5, rng.integers(1, 4)))
    k = int(rng.integers(1, len(shape) + 1))
    bshape = tuple(rng.integers(1, 4, rng.integers(0, 3)))
    if rng.random() < 0.25:  # one boolean mask over the first dims
        idx = [rng.random(shape[: rng.integers(1, len(shape) + 1)]) < 0.5]
    else:
        idx = [_bounded(rng, shape[d], bshape[rng.integers(0, 2) :] if bshape else ()) for d in range(k)]
        idx = [i.astype(np.int32) if rng.random() < 0.2 else i for i in idx]
    accumulate = bool(rng.random() < 0.5)
    inplace = bool(rng.random() < 0.5)
    with torch.no_grad():
        try:
            target = torch.tensor(np.zeros(shape))[tuple(torch.tensor(i) for i in idx)].shape
        except (IndexError, RuntimeError):
            target = ()
    vshape = tuple(1 if rng.random() < 0.2 else s for s in target)[rng.integers(0, len(target) + 1) :]
    x, v = rng.standard_normal(shape), rng.standard_normal(vshape)

    def run(m, a, val):
        ind = tuple(m.tensor(i) if m is torch else dg.tensor(i) for i in idx)
        if inplace:
            return (a * 1).index_put_(ind, val, accumulate=accumulate) * 2
        return m.index_put(a, ind, val, accumulate=accumulate)

    if _same_error(lambda: run(torch, torch.tensor(x), torch.tensor(v)), lambda: run(dg, dg.tensor(x), dg.tensor(v))):
        return
    _check(lambda a, b: run(dg, a, b), lambda a, b: run(torch, a, b), x, v)
