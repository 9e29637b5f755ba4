"""Ops added in the API round (math_extra, math_names, linalg_extra, linalg_matrix, reduction_extra,
counting, indexing_extra, shape_extra) for the random-program fuzzer, drawn from their own random stream
(test_program_fuzz_new_ops.py): pointwise math, products and decompositions of well-conditioned
matrices, nan-aware and order statistics, index writes, scatters and shape ops, and the in-place forms
through views of intermediates. Written as program_menu's entries are: `draw(rng, pool) -> (description,
fn, operands)` with fn(m, *tensors) run on distgraph and torch alike.
"""

import numpy as np

from tests.autograd.program_menu import _VIEWS, _dim, _distinct, _pick


def _two(rng, pool, p_float=0.85):
    return [_pick(rng, pool, "f" if rng.random() < p_float else "any") for _ in range(2)]


def pointwise_new(rng, pool):
    """Binary and unary math, their domains made safe half of the time (raw inputs give NaN and ±inf)."""
    a, b = _two(rng, pool)
    s = float(rng.choice([0.5, -1.5, 2.0]))
    safe = bool(rng.integers(2))
    pos = (lambda x: x.abs() + 0.5) if safe else (lambda x: x)  # noqa: E731
    unit = (lambda x: x.sigmoid() * 0.9 + 0.05) if safe else (lambda x: x)  # noqa: E731
    fns = {
        "addcmul": lambda m, x, y: m.addcmul(x, y, x, value=s),
        "addcdiv": lambda m, x, y: m.addcdiv(y, x, pos(y), value=s),
        "xlogy": lambda m, x, y: m.xlogy(x, pos(y)),
        "xlogy_s": lambda m, x, y: m.xlogy(s, pos(y)),
        "logaddexp": lambda m, x, y: m.logaddexp(x, y),
        "logaddexp2": lambda m, x, y: m.logaddexp2(x, y),
        "hypot": lambda m, x, y: m.hypot(x, y),
        "copysign": lambda m, x, y: m.copysign(x, y),
        "copysign_s": lambda m, x, y: m.copysign(x, s),
        "fmax": lambda m, x, y: m.fmax(x, y),
        "fmin": lambda m, x, y: m.fmin(x.log(), y),  # NaNs where x < 0: fmin skips them
        "float_power": lambda m, x, y: m.float_power(pos(x), y),
        "float_power_s": lambda m, x, y: m.float_power(pos(x), s),
        "dist": lambda m, x, y: m.dist(x, y, p=[0, 1, 2, 3, float("inf")][int(abs(s * 2)) % 5]),
        "sinc": lambda m, x, y: m.sinc(x),
        "logit": lambda m, x, y: m.logit(unit(x)),
        "logit_eps": lambda m, x, y: m.logit(x, eps=0.1),
        "nan_to_num": lambda m, x, y: m.nan_to_num((x / y).log(), nan=s, posinf=3.0),
        "nan_to_num_default": lambda m, x, y: (x / y).nan_to_num(),
        "erfc": lambda m, x, y: m.erfc(x),
        "erfinv": lambda m, x, y: m.erfinv(unit(x) * 2 - 1),
        "lgamma": lambda m, x, y: m.lgamma(x),
        "digamma": lambda m, x, y: m.digamma(pos(x)),
        "i0": lambda m, x, y: m.i0(x),
    }
    name = str(rng.choice(list(fns)))
    return f"{name}({a}, {b}, s={s}, safe={safe})", fns[name], [a, b]


def _square(m, a):
    """A well-conditioned (batch of) square matrices from `a`: a·aᵀ + n·I plus a non-symmetric part."""
    x = a if a.ndim >= 2 else a.reshape(1, -1)
    n = x.shape[-2]
    spd = x @ x.mT + n * m.eye(n, dtype=x.dtype)
    return spd, spd + 0.5 * spd.tril(-1)


def linalg_new(rng, pool):
    a, b = _two(rng, pool, 0.9)
    k = int(rng.choice([-2, -1, 0, 1, 3]))
    d = int(rng.integers(-2, 2))
    fns = {
        "kron": lambda m, x, y: m.kron(x, y),
        "inner": lambda m, x, y: m.inner(x, y),
        "cross": lambda m, x, y: m.cross(x, y, dim=d),
        "linalg_cross": lambda m, x, y: m.linalg.cross(x.mT, y.mT) if x.ndim >= 2 and y.ndim >= 2 else x,
        "trace": lambda m, x, y: m.trace(x),
        "addmv": lambda m, x, y: m.addmv(y.flatten()[:1], x, x[0], beta=0.5, alpha=k),
        "addr": lambda m, x, y: m.addr(y, x.flatten()[:3], x.flatten()[-4:], alpha=2),
        "baddbmm": lambda m, x, y: m.baddbmm(y, x, x.mT, beta=-1, alpha=0.5),
        "addbmm": lambda m, x, y: m.addbmm(y, x, x.mT),
        "det": lambda m, x, y: m.det(_square(m, x)[1]),
        "logdet": lambda m, x, y: _square(m, x)[0].logdet(),
        "slogdet": lambda m, x, y: tuple(m.slogdet(_square(m, x)[1] * -1)),
        "inverse": lambda m, x, y: m.inverse(_square(m, x)[1]),
        "inv": lambda m, x, y: m.linalg.inv(_square(m, x)[0]) * y,
        "solve": lambda m, x, y: m.linalg.solve(_square(m, x)[1], x),
        "solve_y": lambda m, x, y: m.linalg.solve(_square(m, x)[1], y),
        "cholesky": lambda m, x, y: m.linalg.cholesky(_square(m, x)[0]),
        "cholesky_upper": lambda m, x, y: m.cholesky(_square(m, x)[0], upper=True),
        "pinverse": lambda m, x, y: m.pinverse(x),
        "pinv_sq": lambda m, x, y: m.linalg.pinv(_square(m, x)[1]),
        "matrix_power": lambda m, x, y: m.matrix_power(_square(m, x)[1] / 5, k),
    }
    name = str(rng.choice(list(fns)))
    return f"{name}({a}, {b}, k={k}, d={d})", fns[name], [a, b]


def _some_nan(m, x, d):
    """x with its negative entries NaN but the largest along d: torch's nanmedian index in a row of NaNs
    only is where libstdc++'s nth_element happens to leave them (a comparator that finds no order)."""
    if not x.is_floating_point() or x.ndim == 0:
        return x
    return x.masked_fill((x < 0) & (x < x.amax(d, keepdim=True)), float("nan"))


def statistic_new(rng, pool):
    i, j = _two(rng, pool, 0.85)
    d = _dim(rng, pool[i][0], allow_none=False)
    keep = bool(rng.integers(2))
    interp = str(rng.choice(["linear", "lower", "higher", "midpoint", "nearest"]))
    q = float(rng.choice([0.0, 0.25, 0.5, 0.9, 1.0]))
    fns = {
        "nansum": lambda m, x, y: m.nansum(x.log(), d, keepdim=keep),
        "nansum_all": lambda m, x, y: x.log().nansum(),
        "nanmean": lambda m, x, y: m.nanmean(x.log(), dim=d, keepdim=keep),
        "median_all": lambda m, x, y: _distinct(m, x).median(),
        "median": lambda m, x, y: tuple(m.median(_distinct(m, x), d, keepdim=keep)),
        "nanmedian": lambda m, x, y: tuple(_some_nan(m, _distinct(m, x), d).nanmedian(d, keepdim=keep)),
        "nanmedian_all": lambda m, x, y: m.nanmedian(_distinct(m, x.log())),
        "quantile": lambda m, x, y: m.quantile(x, q, dim=d, keepdim=keep, interpolation=interp),
        "quantile_t": lambda m, x, y: x.quantile(y.flatten()[:3].sigmoid(), dim=d, interpolation=interp),
        "quantile_all": lambda m, x, y: m.quantile(x, q, interpolation=interp),
        "nanquantile": lambda m, x, y: m.nanquantile(x.log(), q, dim=d, keepdim=keep, interpolation=interp),
        # ties on purpose (rounded); no NaN: torch's mode std::sorts with <, which finds no order among NaNs
        "mode": lambda m, x, y: tuple(m.mode(_distinct(m, x, nan=True).round(), d, keepdim=keep)),
        "aminmax": lambda m, x, y: tuple(m.aminmax(x, dim=d, keepdim=keep)),
        "aminmax_all": lambda m, x, y: tuple(x.aminmax()),
        "cummax": lambda m, x, y: tuple(m.cummax(x, d)),
        "cummin": lambda m, x, y: tuple(x.relu().cummin(d)),
        "logcumsumexp": lambda m, x, y: m.logcumsumexp(x, d),
        "cov": lambda m, x, y: m.cov(x, correction=int(keep)),
        "cov_w": lambda m, x, y: m.cov(x, aweights=y.flatten()[: x.shape[-1]].abs() + 0.1) if x.ndim else x,
        "corrcoef": lambda m, x, y: m.corrcoef(x),
    }
    name = str(rng.choice(list(fns)))
    return f"{name}({i}, {j}, d={d}, keepdim={keep}, q={q}, {interp})", fns[name], [i, j]


def _ix(m, values):
    return m.tensor(values, dtype=m.int64)


def index_new(rng, pool):
    i, j = _two(rng, pool, 0.85)
    t = pool[i][0]
    d = _dim(rng, t, allow_none=False)
    size = max(t.shape[d], 1) if t.ndim else 1  # an empty dim: indices that both libraries refuse
    r = np.random.default_rng(int(rng.integers(1 << 30)))
    dup = r.integers(0, size, int(r.integers(1, size + 2))).tolist()  # may repeat
    perm = r.permutation(size)[: int(r.integers(1, size + 1))].tolist()  # distinct
    flat = r.integers(-t.numel(), max(t.numel(), 1), 3).tolist() if t.numel() else [0]
    red = str(r.choice(["sum", "prod", "mean", "amax", "amin"]))
    self_ = bool(r.integers(2))
    k = int(r.integers(-size, size)) if size else 0
    spread = r.integers(0, size, t.shape).tolist() if t.ndim else 0  # a scatter index of t's shape

    def src(m, x, y, n):  # a source of x's shape with n entries along d, from both operands
        return x.index_select(d, _ix(m, [k % size] * n)).flip(d if x.ndim else ()) * y.mean()

    fns = {
        "index_add": lambda m, x, y: x.index_add(d, _ix(m, dup), src(m, x, y, len(dup)), alpha=-2),
        "index_copy": lambda m, x, y: m.index_copy(x, d, _ix(m, perm), src(m, x, y, len(perm))),
        "index_fill": lambda m, x, y: x.index_fill(d, _ix(m, dup), -1.5),
        "index_fill_t": lambda m, x, y: x.index_fill(d, _ix(m, perm), y.sum()),
        "index_reduce": lambda m, x, y: x.index_reduce(
            d, _ix(m, dup), src(m, x, y, len(dup)), red if red != "sum" else "prod", include_self=self_
        ),
        "scatter_reduce": lambda m, x, y: x.scatter_reduce(
            d,
            _ix(m, spread),
            x * y.mean(),
            red,
            include_self=self_,
        ),  # fmt: skip
        "masked_scatter": lambda m, x, y: x.masked_scatter(y > 0, x.flip(0) * 3 if x.ndim else x * 3),
        "take": lambda m, x, y: m.take(x, _ix(m, flat)),
        "put": lambda m, x, y: x.put(_ix(m, flat), y.flatten()[:3], accumulate=True),
        "select": lambda m, x, y: x.select(d, k),
        "slice_scatter": lambda m, x, y: m.slice_scatter(x, x[..., ::2] * y.sum(), dim=-1, start=0, step=2),
        "slice_scatter_d": lambda m, x, y: m.slice_scatter(x, src(m, x, y, 1), dim=d, start=k % size, end=None),
        "select_scatter": lambda m, x, y: m.select_scatter(x, x.select(d, 0) * y.sum(), d, k),
        "diagonal_scatter": lambda m, x, y: m.diagonal_scatter(x, x.diagonal(1).exp() + y.sum(), 1),
        "tensor_split": lambda m, x, y: tuple(m.tensor_split(x, 3, dim=d)),
        "tensor_split_i": lambda m, x, y: tuple(x.tensor_split([1, 3], d)),
        "rot90": lambda m, x, y: m.rot90(x, k, [0, -1]),
        "diag_embed": lambda m, x, y: m.diag_embed(x, offset=k, dim1=0, dim2=-1),
        "diagflat": lambda m, x, y: m.diagflat(x, k),
        "sum_to_size": lambda m, x, y: x.sum_to_size(y.shape),
        "ravel": lambda m, x, y: x.T.ravel() if x.ndim == 2 else x.ravel(),
        "diff": lambda m, x, y: m.diff(x, n=1 + int(self_), dim=d),
        "diff_prepend": lambda m, x, y: m.diff(x, dim=-1, prepend=y, append=x),
    }
    name = str(r.choice(list(fns)))
    return f"{name}({i}, {j}, d={d}, k={k}, {red}, self={self_}, {dup}, {perm}, {flat})", fns[name], [i, j]


def _like(m, v, o, lead):
    """A tensor of shape `lead` + v.shape[1:] filled from `o`'s first element."""
    return o.flatten()[:1].expand(*lead, *v.shape[1:])


def _two_d(v):
    """torch's addbmm_ resizes a self that is not the product's (n, m) shape (addbmm_out(self, self, ...)),
    a 1-d view included, where every other in-place op, addmv_ and baddbmm_ too, refuses; distgraph refuses
    as they do. Both refuse here."""
    if v.ndim != 2:
        raise ValueError(f"addbmm_ of a self of shape {tuple(v.shape)}: torch resizes it")
    return v


def _inplace_new(r):
    red = str(r.choice(["sum", "prod", "mean", "amax", "amin"]))
    self_ = bool(r.integers(2))
    cast = bool(r.integers(2))

    def same(v, x):
        return x.to(v.dtype) if cast else x

    def mat(v, x):  # matmul-likes take mixed float dtypes in distgraph (lenient, as matmul's)
        return x.to(v.dtype)

    return {
        "addcmul_": lambda m, v, o: v.addcmul_(o, o, value=0.5),
        "addcdiv_": lambda m, v, o: v.addcdiv_(o, o.abs() + 1, value=-2),
        "xlogy_": lambda m, v, o: v.xlogy_(o.abs() + 0.5),
        "hypot_": lambda m, v, o: v.hypot_(o),
        "copysign_": lambda m, v, o: v.copysign_(o),
        "float_power_": lambda m, v, o: v.float_power_(2),
        "sinc_": lambda m, v, o: v.sinc_(),
        "logit_": lambda m, v, o: v.logit_(eps=0.2),
        "nan_to_num_": lambda m, v, o: v.log_().nan_to_num_(nan=0.5, neginf=-9.0),
        "erfc_": lambda m, v, o: v.erfc_(),
        "erfinv_": lambda m, v, o: v.tanh_().mul_(0.9).erfinv_(),
        "lgamma_": lambda m, v, o: v.lgamma_(),
        "digamma_": lambda m, v, o: v.abs_().add_(0.5).digamma_(),
        "i0_": lambda m, v, o: v.i0_(),
        "index_add_": lambda m, v, o: v.index_add_(0, _ix(m, [0, 0]), same(v, _like(m, v, o, (2,)))),
        "index_copy_": lambda m, v, o: v.index_copy_(0, _ix(m, [0]), same(v, _like(m, v, o, (1,)))),
        "index_fill_": lambda m, v, o: v.index_fill_(-1, _ix(m, [0]), o.sum()),
        "index_reduce_": lambda m, v, o: v.index_reduce_(
            0, _ix(m, [0, 0]), same(v, _like(m, v, o, (2,))), red if red != "sum" else "mean", include_self=self_
        ),
        "scatter_reduce_": lambda m, v, o: v.scatter_reduce_(
            0, m.zeros((1,) + tuple(v.shape[1:]), dtype=m.int64), same(v, _like(m, v, o, (1,))), red,
            include_self=self_,
        ),  # fmt: skip
        "masked_scatter_": lambda m, v, o: v.masked_scatter_(v > 0, same(v, v * 0 + o.sum())),
        "put_": lambda m, v, o: v.put_(_ix(m, [0, -1]), same(v, o.flatten()[:2]), accumulate=True),
        "put_noacc": lambda m, v, o: v.put_(_ix(m, [-1]), same(v, o.flatten()[:1])),
        "addmv_": lambda m, v, o: v.addmv_(mat(v, o.flatten()[:1].expand(v.shape[0], 2)), mat(v, o.flatten()[-2:])),
        "addr_": lambda m, v, o: v.addr_(mat(v, o.flatten()[:1].expand(v.shape[0])), mat(v, o.flatten()[-1:].expand(v.shape[-1]))),
        "addbmm_": lambda m, v, o: _two_d(v).addbmm_(
            mat(v, o.flatten()[:1].expand(2, v.shape[0], 3)), mat(v, o.flatten()[-1:].expand(2, 3, v.shape[-1]))
        ),
        "baddbmm_": lambda m, v, o: v.baddbmm_(
            mat(v, o.flatten()[:1].expand(v.shape[0], v.shape[1], 2)), mat(v, o.flatten()[-2:].reshape(1, 2, 1)),
            alpha=0.5,
        ),  # fmt: skip
    }  # fmt: skip


# In-place ops that read their operands while writing self (index and scatter writes, matmul-likes): where
# an operand aliases self (o a view of the written value, read through expand), torch reads back what it has
# already written (a.index_add_(0, i, a[0, :1].expand(2, 2)) adds the updated a[0, 0]; addbmm_ accumulates
# batch after batch into self), so its result depends on its kernel's order: torch leaves such overlap
# undefined (its overlap check cannot see through expand's 0 strides). These get a copy of the operand.
_READ_WHILE_WRITING = {
    "index_add_", "index_copy_", "index_reduce_", "scatter_reduce_", "put_", "put_noacc", "addmv_", "addr_",
    "addbmm_", "baddbmm_",
}  # fmt: skip


def inplace_new(rng, pool):
    """An in-place form of a new op through a view of a pool value; the pool keeps the written view."""
    r = np.random.default_rng(int(rng.integers(1 << 30)))
    i = _pick(rng, pool, "f" if rng.random() < 0.9 else "any")
    j = _pick(rng, pool, "f" if rng.random() < 0.9 else "any")
    view = str(r.choice(list(_VIEWS)))
    fns = _inplace_new(r)
    op = str(r.choice(list(fns)))

    def call(m, a, o):
        v = _VIEWS[view](a)
        fns[op](m, v, o.clone() if op in _READ_WHILE_WRITING else o)
        return v

    return f"{view}({i}).{op}({j})", call, [i, j]


NEW_MENU = [(pointwise_new, 4), (linalg_new, 3), (statistic_new, 3), (index_new, 4), (inplace_new, 4)]
NEW_RATE = 0.35  # the share of a program's steps drawn from NEW_MENU
