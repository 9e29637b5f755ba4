"""The menu of ops the random-program fuzzer draws from (tests/autograd/test_program_fuzz.py).

Every entry is written once against a module `m` that is either `distgraph` or `torch`, so the same
call runs on both: `draw(rng, pool)` picks operands (indices into the program's pool of values) and
parameters with `rng`, and returns `(description, fn, operand_indices)` where `fn(m, *tensors)` is the
call. Operands may have any dtype or shape: where torch refuses the call, distgraph must refuse too.
"""

import numpy as np

SCALARS = [1.5, -0.75, 2, -3, 0, True, 0.5]


def _pick(rng, pool, want="any"):
    """An index into `pool` whose dtype kind is in `want` ("f" float, "i" int, "b" bool, "any")."""
    ok = [i for i, (d, _) in enumerate(pool) if want == "any" or d.array.dtype.kind in want]
    return int(rng.choice(ok)) if ok else int(rng.integers(len(pool)))


def _dim(rng, t, allow_none=True):
    nd = max(t.ndim, 1)
    if allow_none and rng.random() < 0.2:
        return None
    d = int(rng.integers(-nd, nd))
    return d


def _operand(rng, pool, want="any"):
    """A pool index or a Python scalar (returned as ("s", value))."""
    if rng.random() < 0.25:
        return ("s", SCALARS[int(rng.integers(len(SCALARS)))])
    return _pick(rng, pool, want)


def _bind(fn, operands):
    """Split operands into tensor indices and scalars: fn gets the tensors in the scalars' places."""
    idx = [o for o in operands if not isinstance(o, tuple)]

    def call(m, *tensors):
        it = iter(tensors)
        return fn(m, *[o[1] if isinstance(o, tuple) else next(it) for o in operands])

    return call, idx


# ---- elementwise --------------------------------------------------------------------------------
_SAFE = {  # unary ops with their domain made safe, so gradients are finite
    "exp": lambda m, a: (a * 0.5).exp(),
    "log": lambda m, a: (a.abs() + 0.5).log(),
    "sqrt": lambda m, a: (a.abs() + 0.1).sqrt(),
    "rsqrt": lambda m, a: (a.abs() + 0.3).rsqrt(),
    "reciprocal": lambda m, a: (a.abs() + 0.5).reciprocal(),
    "log1p": lambda m, a: a.abs().log1p(),
    "log2": lambda m, a: (a.abs() + 1).log2(),
    "log10": lambda m, a: (a.abs() + 1).log10(),
    "asin": lambda m, a: (a.tanh() * 0.9).asin(),
    "acos": lambda m, a: (a.tanh() * 0.9).acos(),
    "atanh": lambda m, a: (a.tanh() * 0.9).atanh(),
    "acosh": lambda m, a: (a.abs() + 1.2).acosh(),
    "pow_frac": lambda m, a: (a.abs() + 0.2).pow(1.5),
    "rpow": lambda m, a: 1.5**a,
}
_PLAIN = [
    "sin", "cos", "tan", "tanh", "sigmoid", "relu", "abs", "neg", "square", "sign", "floor", "ceil",
    "round", "trunc", "frac", "erf", "expm1", "atan", "asinh", "sinh", "cosh", "exp2", "exp", "log",
    "sqrt", "reciprocal", "logical_not",
]  # fmt: skip


def unary(rng, pool):
    i = _pick(rng, pool, "f" if rng.random() < 0.8 else "any")
    if rng.random() < 0.5:
        name = str(rng.choice(list(_SAFE)))
        return f"{name}({i})", _SAFE[name], [i]
    name = str(rng.choice(_PLAIN))
    if name == "round" and rng.random() < 0.3:
        return f"round({i}, decimals=1)", lambda m, a: a.round(decimals=1), [i]
    if rng.random() < 0.3:
        return f"m.{name}({i})", lambda m, a: getattr(m, name)(a) if hasattr(m, name) else getattr(a, name)(), [i]
    return f"{name}({i})", lambda m, a: getattr(a, name)(), [i]


_BINARY = {
    "add": lambda m, a, b: m.add(a, b),
    "add_alpha": lambda m, a, b: m.add(a, b, alpha=2),
    "sub": lambda m, a, b: m.sub(a, b),
    "mul": lambda m, a, b: m.mul(a, b),
    "div": lambda m, a, b: m.div(a, b),
    "div_floor": lambda m, a, b: m.div(a, b, rounding_mode="floor"),
    "div_trunc": lambda m, a, b: m.div(a, b, rounding_mode="trunc"),
    "floor_divide": lambda m, a, b: m.floor_divide(a, b),
    "remainder": lambda m, a, b: m.remainder(a, b),
    "fmod": lambda m, a, b: m.fmod(a, b),
    "pow": lambda m, a, b: m.pow(a, b),
    "atan2": lambda m, a, b: m.atan2(a, b),
    "maximum": lambda m, a, b: m.maximum(a, b),
    "minimum": lambda m, a, b: m.minimum(a, b),
    "+": lambda m, a, b: a + b,
    "-": lambda m, a, b: a - b,
    "*": lambda m, a, b: a * b,
    "/": lambda m, a, b: a / b,
    "//": lambda m, a, b: a // b,
    "%": lambda m, a, b: a % b,
    "**": lambda m, a, b: a**b,
    "eq": lambda m, a, b: a == b,
    "ne": lambda m, a, b: a != b,
    "lt": lambda m, a, b: a < b,
    "le": lambda m, a, b: a <= b,
    "gt": lambda m, a, b: m.gt(a, b),
    "ge": lambda m, a, b: m.ge(a, b),
    "logical_and": lambda m, a, b: m.logical_and(a, b),
    "logical_or": lambda m, a, b: m.logical_or(a, b),
    "logical_xor": lambda m, a, b: m.logical_xor(a, b),
    "&": lambda m, a, b: a & b,
    "|": lambda m, a, b: a | b,
    "^": lambda m, a, b: a ^ b,
    "lerp": lambda m, a, b: m.lerp(a, b, 0.3),
    "isclose": lambda m, a, b: m.isclose(a, b),
}
_NEEDS_TENSOR_FIRST = {"lerp", "isclose", "atan2", "logical_and", "logical_or", "logical_xor", "add_alpha"}


def binary(rng, pool):
    name = str(rng.choice(list(_BINARY)))
    fn = _BINARY[name]
    want = "f" if rng.random() < 0.6 else "any"
    a = _pick(rng, pool, want) if name in _NEEDS_TENSOR_FIRST or rng.random() < 0.75 else _operand(rng, pool)
    b = _operand(rng, pool, want)
    if isinstance(a, tuple) and isinstance(b, tuple):
        b = _pick(rng, pool, want)
    call, idx = _bind(fn, [a, b])
    return f"{name}({a}, {b})", call, idx


def ternary(rng, pool):
    kind = int(rng.integers(4))
    if kind == 0:  # where with a condition tensor (or a comparison made on the fly)
        c, a, b = _pick(rng, pool, "b"), _operand(rng, pool, "f"), _operand(rng, pool, "f")
        fn = lambda m, c, a, b: m.where(c if c.dtype == m.bool else c > 0, a, b)  # noqa: E731
        call, idx = _bind(fn, [c, a, b])
        return f"where({c}, {a}, {b})", call, idx
    if kind == 1:  # clamp with tensor or scalar bounds (either may be absent)
        a = _pick(rng, pool, "f")
        lo = _operand(rng, pool, "f") if rng.random() < 0.8 else ("s", None)
        hi = _operand(rng, pool, "f") if rng.random() < 0.8 else ("s", None)
        fn = lambda m, a, lo, hi: m.clamp(a, min=lo, max=hi)  # noqa: E731
        call, idx = _bind(fn, [a, lo, hi])
        return f"clamp({a}, {lo}, {hi})", call, idx
    if kind == 2:  # lerp with a tensor weight
        a, b, w = _pick(rng, pool, "f"), _pick(rng, pool, "f"), _pick(rng, pool, "f")
        return "lerp(t, t, t)", lambda m, a, b, w: m.lerp(a, b, w), [a, b, w]
    a, b = _pick(rng, pool, "f"), _pick(rng, pool, "f")
    return "clamp_min_max_method", lambda m, a, b: a.clamp(min=b).clamp(max=0.7), [a, b]


# ---- reductions ---------------------------------------------------------------------------------
def reduction(rng, pool):
    i = _pick(rng, pool, "f" if rng.random() < 0.85 else "any")
    t = pool[i][0]
    dim = _dim(rng, t)
    if dim is not None and t.ndim >= 2 and rng.random() < 0.25:
        dim = (0, -1)
    keep = bool(rng.integers(2))
    name = str(rng.choice(["sum", "mean", "prod", "amax", "amin", "max", "min", "var", "std", "logsumexp",
                           "cumsum", "cumprod", "norm", "argmax", "argmin", "any", "all", "count_nonzero",
                           "softmax", "log_softmax", "var_mean", "std_mean"]))  # fmt: skip
    if name == "logsumexp" and t.array.dtype.kind != "f":  # known: distgraph refuses a bool input
        name = "sum"
    desc = f"{name}({i}, dim={dim}, keepdim={keep})"
    if name in ("sum", "mean", "amax", "amin", "logsumexp"):
        if dim is None:
            return desc, (lambda m, a: getattr(a, name)()) if name != "logsumexp" else _lse_all, [i]
        return desc, lambda m, a: getattr(a, name)(dim, keepdim=keep), [i]
    if name in ("prod", "argmax", "argmin", "any", "all"):
        d = dim if not isinstance(dim, tuple) else -1
        if d is None:
            return desc, lambda m, a: getattr(a, name)(), [i]
        return desc, lambda m, a: getattr(a, name)(d, keepdim=keep), [i]
    if name in ("max", "min"):
        d = dim if not isinstance(dim, tuple) else 0
        if d is None:
            return desc, lambda m, a: getattr(a, name)(), [i]
        return desc, lambda m, a: tuple(getattr(a, name)(d, keepdim=keep)), [i]
    if name in ("var", "std", "var_mean", "std_mean"):
        corr = int(rng.integers(2))  # torch's backward past zero degrees of freedom is not its forward's
        if name.endswith("_mean"):
            return desc, lambda m, a: tuple(getattr(m, name)(a, dim, correction=corr, keepdim=keep)), [i]
        return desc + f" correction={corr}", lambda m, a: getattr(a, name)(dim, correction=corr, keepdim=keep), [i]
    if name in ("cumsum", "cumprod", "softmax", "log_softmax"):
        d = dim if isinstance(dim, int) else -1
        return desc, lambda m, a: getattr(a, name)(d), [i]
    if name == "norm":
        p = [1, 2, 3, float("inf"), "fro"][int(rng.integers(5))]
        return desc + f" p={p}", lambda m, a: a.norm(p, dim=dim, keepdim=keep) if dim is not None else a.norm(p), [i]
    return desc, lambda m, a: m.count_nonzero(a, dim=dim), [i]


def _lse_all(m, a):
    return a.logsumexp(tuple(range(a.ndim)))


# ---- linear algebra -----------------------------------------------------------------------------
def linalg(rng, pool):
    a, b = _pick(rng, pool, "f"), _pick(rng, pool, "f")
    name = str(rng.choice(["matmul", "@T", "bmm", "einsum_ij", "einsum_bij", "mm", "mv", "dot", "outer"]))
    fns = {
        "matmul": lambda m, a, b: m.matmul(a, b),
        "@T": lambda m, a, b: a @ b.transpose(-1, -2) if b.ndim >= 2 else a @ b,
        "bmm": lambda m, a, b: m.bmm(a, b.transpose(1, 2)),
        "einsum_ij": lambda m, a, b: m.einsum("ij,kj->ik", a, b),
        "einsum_bij": lambda m, a, b: m.einsum("...j,...j->...", a, b),
        "mm": lambda m, a, b: m.mm(a, b.t()),
        "mv": lambda m, a, b: m.mv(a, b),
        "dot": lambda m, a, b: m.dot(a, b),
        "outer": lambda m, a, b: m.outer(a, b),
    }
    return f"{name}({a}, {b})", fns[name], [a, b]


# ---- shape ops ----------------------------------------------------------------------------------
def shape_op(rng, pool):
    i = _pick(rng, pool, "f" if rng.random() < 0.8 else "any")
    t = pool[i][0]
    n = t.numel()
    d = _dim(rng, t, allow_none=False)
    r = int(rng.integers(1 << 30))
    choices = {
        "reshape": lambda m, a: a.reshape(-1),
        "reshape2": lambda m, a: a.reshape(2, -1) if n % 2 == 0 else a.reshape(1, -1),
        "view": lambda m, a: a.view(-1, a.shape[-1]) if a.ndim else a.view(1),
        "permute": lambda m, a: a.permute(*np.random.default_rng(r).permutation(a.ndim).tolist()),
        "transpose": lambda m, a: a.transpose(0, -1),
        "T": lambda m, a: a.T if a.ndim == 2 else a.mT,
        "expand": lambda m, a: a.unsqueeze(0).expand(2, *a.shape),
        "expand_m1": lambda m, a: a.expand(*([-1] * a.ndim)),
        "squeeze": lambda m, a: a.squeeze(d) if a.ndim else a.squeeze(),
        "squeeze_all": lambda m, a: a.squeeze(),
        "unsqueeze": lambda m, a: a.unsqueeze(d),
        "flatten": lambda m, a: a.flatten(),
        "flatten_part": lambda m, a: a.flatten(0, 1),
        "unflatten": lambda m, a: a.unflatten(0, (1, -1)),
        "split": lambda m, a: tuple(a.split(2, dim=d)),
        "split_sizes": lambda m, a: tuple(a.split([1, a.shape[d] - 1], dim=d)),
        "chunk": lambda m, a: tuple(a.chunk(2, dim=d)),
        "unbind": lambda m, a: tuple(a.unbind(d)),
        "roll": lambda m, a: a.roll(2, d),
        "roll_flat": lambda m, a: a.roll(-3),
        "flip": lambda m, a: a.flip(d),
        "tril": lambda m, a: a.tril(int(np.random.default_rng(r).integers(-2, 3))),
        "triu": lambda m, a: a.triu(int(np.random.default_rng(r).integers(-2, 3))),
        "repeat": lambda m, a: a.repeat(*([2] + [1] * a.ndim)),
        "tile": lambda m, a: a.tile((2, 1)),
        "repeat_interleave": lambda m, a: a.repeat_interleave(2, dim=d),
        "repeat_interleave_t": lambda m, a: a.repeat_interleave(m.arange(a.shape[d]) % 3, dim=d),
        "narrow": lambda m, a: a.narrow(d, 1, 1),
        "movedim": lambda m, a: a.movedim(0, -1),
        "diagonal": lambda m, a: a.diagonal(),
        "diagonal_off": lambda m, a: a.diagonal(1, 0, -1),
        "index_int": lambda m, a: a[1],
        "index_slice": lambda m, a: a[..., 1:3],
        "index_step": lambda m, a: a[::2],
        "index_none": lambda m, a: a[None, ..., None],
        "index_neg": lambda m, a: a[-1, ...],
        "index_tensor": lambda m, a: a[m.tensor([0, -1, 0])],
        "index_mask": lambda m, a: a[a > 0],
        "index_mixed": lambda m, a: a[:, m.tensor([1, 0, 1])],
        "contiguous": lambda m, a: a.transpose(0, -1).contiguous(),
        "clone": lambda m, a: a.clone(),
        "detach": lambda m, a: a.detach(),
        "to64": lambda m, a: a.to(m.float64),
        "to32": lambda m, a: a.float(),
        "tolong": lambda m, a: a.long(),
        "tobool": lambda m, a: a.bool(),
    }
    name = str(rng.choice(list(choices)))
    return f"{name}({i}, d={d})", choices[name], [i]


def multi_op(rng, pool):
    a, b = _pick(rng, pool, "f"), _pick(rng, pool, "f")
    d = int(rng.integers(-2, 2))
    name = str(rng.choice(["cat", "stack", "cat3", "broadcast_tensors"]))
    fns = {
        "cat": lambda m, a, b: m.cat([a, b], dim=d),
        "stack": lambda m, a, b: m.stack([a, b], dim=d),
        "cat3": lambda m, a, b: m.cat([a, a * 2, b], dim=0),
        "broadcast_tensors": lambda m, a, b: tuple(m.broadcast_tensors(a, b)),
    }
    return f"{name}({a}, {b}, d={d})", fns[name], [a, b]


def _distinct(m, a, nan=False):
    """`a` with ties broken by offsets far below its spacing: torch leaves the order of equal values
    in sort/topk/kthvalue unspecified, so only tie-free inputs have one right answer. NaNs tie too, and
    topk/kthvalue pick among them as libstdc++'s nth_element happens to leave them: `nan` replaces them."""
    if not a.is_floating_point() or a.numel() == 0:
        return a
    a = m.where(a.isnan(), 0.0, a) if nan else a
    return a + m.arange(a.numel(), dtype=a.dtype).reshape(a.shape) * 1e-6


def index_op(rng, pool):
    i = _pick(rng, pool, "f")
    t = pool[i][0]
    d = _dim(rng, t, allow_none=False)
    size = t.shape[d] if t.ndim else 1
    r = np.random.default_rng(int(rng.integers(1 << 30)))
    idx_shape = list(t.shape) if t.ndim else []
    if idx_shape and r.random() < 0.5:
        idx_shape[d] = max(1, size - 1)
    idx = r.integers(0, max(size, 1), idx_shape).tolist() if r.random() > 0.05 else r.integers(5, 9, idx_shape).tolist()
    perm = r.permutation(max(size, 1))[: max(1, size - 1)].tolist()
    k = int(r.integers(1, max(size, 1) + 1))
    j = _pick(rng, pool, "f")
    name = str(r.choice(["gather", "scatter", "scatter_add", "scatter_scalar", "index_select", "masked_fill",
                         "masked_fill_t", "take_along_dim", "sort", "sort_desc", "argsort", "topk", "topk_small",
                         "kthvalue", "masked_select", "where1", "nonzero"]))  # fmt: skip
    fns = {
        "gather": lambda m, a, b: a.gather(d, m.tensor(idx, dtype=m.int64)),
        "scatter": lambda m, a, b: a.scatter(d, m.tensor(idx, dtype=m.int64), b),
        "scatter_add": lambda m, a, b: a.scatter_add(d, m.tensor(idx, dtype=m.int64), b),
        "scatter_scalar": lambda m, a, b: a.scatter(d, m.tensor(idx, dtype=m.int64), 1.5),
        "index_select": lambda m, a, b: a.index_select(d, m.tensor(perm, dtype=m.int64)),
        "masked_fill": lambda m, a, b: a.masked_fill(b > 0, -2.0),
        "masked_fill_t": lambda m, a, b: a.masked_fill(a > 0, b.sum()),
        "take_along_dim": lambda m, a, b: m.take_along_dim(a, _distinct(m, a).argsort(d), dim=d),
        "sort": lambda m, a, b: tuple(_distinct(m, a).sort(d)),
        "sort_desc": lambda m, a, b: tuple(m.sort(_distinct(m, a), dim=d, descending=True)),
        "argsort": lambda m, a, b: _distinct(m, a).argsort(d),
        "topk": lambda m, a, b: tuple(_distinct(m, a, nan=True).topk(k, d)),
        "topk_small": lambda m, a, b: tuple(_distinct(m, a, nan=True).topk(k, d, largest=False)),
        "kthvalue": lambda m, a, b: tuple(_distinct(m, a, nan=True).kthvalue(k, d)),
        "masked_select": lambda m, a, b: a.masked_select(b > 0),
        "where1": lambda m, a, b: m.where(b > 0, a, 0.0),
        "nonzero": lambda m, a, b: (a > 0).nonzero(),
    }
    return f"{name}({i}, {j}, d={d}, k={k})", fns[name], [i, j]


# ---- in-place writes through views ---------------------------------------------------------------
_VIEWS = {
    "self": lambda a: a,
    "row": lambda a: a[0],
    "slice": lambda a: a[..., 1:],
    "step": lambda a: a[::2],
    "T": lambda a: a.transpose(0, -1),
    "reshape": lambda a: a.reshape(-1),
    "view": lambda a: a.view(-1),
    "unsqueeze": lambda a: a.unsqueeze(0),
    "narrow": lambda a: a.narrow(-1, 0, 1),
    "detach": lambda a: a.detach(),
    "squeeze": lambda a: a.squeeze(),
    "select_then_slice": lambda a: a[0][1:],
    "unbind": lambda a: a.unbind(0)[0],
    "split": lambda a: a.split(1)[0],
}


def _inplace_fns(r):
    s = float(r.choice([0.5, -1.25, 2.0]))
    return {
        "add_": lambda m, v, o: v.add_(o),
        "add_s": lambda m, v, o: v.add_(s),
        "add_alpha": lambda m, v, o: v.add_(o, alpha=s),
        "sub_": lambda m, v, o: v.sub_(o),
        "mul_": lambda m, v, o: v.mul_(o),
        "mul_s": lambda m, v, o: v.mul_(s),
        "div_": lambda m, v, o: v.div_(o.abs() + 1),
        "pow_": lambda m, v, o: v.pow_(2),
        "clamp_": lambda m, v, o: v.clamp_(-0.5, 0.5),
        "clamp_t": lambda m, v, o: v.clamp_(min=o),
        "copy_": lambda m, v, o: v.copy_(o),
        "fill_": lambda m, v, o: v.fill_(s),
        "fill_t": lambda m, v, o: v.fill_(o.sum()),
        "zero_": lambda m, v, o: v.zero_(),
        "masked_fill_": lambda m, v, o: v.masked_fill_(v > 0, s),
        "exp_": lambda m, v, o: v.exp_(),
        "sigmoid_": lambda m, v, o: v.sigmoid_(),
        "relu_": lambda m, v, o: v.relu_(),
        "neg_": lambda m, v, o: v.neg_(),
        "tanh_": lambda m, v, o: v.tanh_(),
        "iadd": lambda m, v, o: v.__iadd__(o),
        "imul": lambda m, v, o: v.__imul__(o),
        "setitem": lambda m, v, o: v.__setitem__(0, o.sum()) if v.ndim else v.fill_(1.0),
        "setitem_slice": lambda m, v, o: v.__setitem__((Ellipsis, slice(0, 1)), o.sum()) if v.ndim else v.fill_(1.0),
        "setitem_mask": lambda m, v, o: v.__setitem__(v > 0, 0.25),
        "setitem_t": lambda m, v, o: v.__setitem__(0, o) if v.ndim else v.copy_(o),
        "scatter_": lambda m, v, o: v.scatter_(0, m.zeros((1,) + tuple(v.shape[1:]), dtype=m.int64), 3.0),
        "tril_": lambda m, v, o: v.tril_(),
    }


def inplace(rng, pool):
    """A view of a pool value (possibly a leaf, an int tensor or a detached alias) written in place;
    the pool keeps the written view too. Returns the view and the write as one call."""
    r = np.random.default_rng(int(rng.integers(1 << 30)))
    i = _pick(rng, pool, "f" if rng.random() < 0.9 else "any")
    j = _pick(rng, pool, "f" if rng.random() < 0.9 else "any")
    view = str(r.choice(list(_VIEWS)))
    fns = _inplace_fns(r)
    op = str(r.choice(list(fns)))

    def call(m, a, o):
        v = _VIEWS[view](a)
        fns[op](m, v, o)
        return v

    return f"{view}({i}).{op}({j})", call, [i, j]


MENU = [
    (unary, 3),
    (binary, 4),
    (ternary, 2),
    (reduction, 3),
    (linalg, 1),
    (shape_op, 3),
    (multi_op, 1),
    (index_op, 2),
    (inplace, 3),
]
