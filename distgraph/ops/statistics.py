"""Statistics: var, std, var_mean, std_mean, built from reductions and elementwise ops (so they stay
differentiable to any order).

torch computes var_mean/std_mean in one Welford pass, whose running mean turns NaN at the first value
after an infinite one: its mean is ±inf only where the one infinite value of a slice comes last, and
NaN where the slice holds any other infinite value (mean() alone gives ±inf). `_welford_mean` gives
that value, with mean's gradient.
"""

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops.reduction import F16, _all_if_empty, _sum, _unsqueeze_reduced, mean, normalize_dims, sum
from distgraph.ops.registry import defop


def _plan(input, dim, unbiased, correction):
    """(axes reduced, values per slice n, correction) of var/std, with torch's dtype check."""
    if input.array.dtype.kind not in "fc":
        raise DTypeError(f"var(): std and var only support floating point and complex dtypes, got {input.dtype.name}")
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    axes = normalize_dims(_all_if_empty(dim), input.ndim, "var")
    n = 1
    for a in axes:
        n *= input.shape[a]
    return axes, n, correction


def _two_pass(input, n, whole):
    """Whether torch computes this var/std as std_var_all_cpu does: a var or std (not var_mean/std_mean,
    which take one Welford pass) with one output element, float32 or float64: the squared deviations from
    mean() summed in float64. Unlike Welford's, the variance of a constant slice may then be 1e-32, not 0."""
    return whole and input.array.size == n and input.array.dtype in (np.float32, np.float64)


def _unbiased_overload(dim, unbiased):
    """torch's other overload, var(input, unbiased): a bool in dim's place is `unbiased` over every element
    (x.std(False) is the population deviation of all of x, not a reduction over dim 0)."""
    return (None, dim) if isinstance(dim, bool) and unbiased is None else (dim, unbiased)


def var(input, dim=None, unbiased=None, keepdim=False, correction=None):
    dim, unbiased = _unbiased_overload(dim, unbiased)
    return _variance(input, dim, unbiased, keepdim, correction, whole=True)


def _variance(input, dim, unbiased, keepdim, correction, whole):
    if input.array.dtype is F16:  # torch accumulates float16 in float32 (a float16 dof is inf above 65504)
        return ew.cast(_variance(ew.cast(input, np.float32), dim, unbiased, keepdim, correction, whole), F16)
    axes, n, correction = _plan(input, dim, unbiased, correction)
    if n <= correction and (dim is None or input.ndim == 0):
        return _var_no_dof(input, axes=axes, keepdim=keepdim)
    if n > correction and input.array.dtype.kind == "f":
        return _var(input, axes=axes, keepdim=keepdim, dof=n - correction, two_pass=_two_pass(input, n, whole))
    centered = ew.sub(input, mean(input, dim=axes, keepdim=True))
    return ew.div(sum(ew.mul(centered, centered), dim=axes, keepdim=keepdim), max_(n - correction, 0))


@defop("var", kind="reduction")
def _var(xp, x, axes, keepdim, dof, two_pass=False):
    if two_pass:
        centered = x.astype(np.float64) - _mean_array(xp, x, axes).astype(np.float64)
        return (_sum.forward(xp, centered * centered, axes, keepdim) / dof).astype(x.dtype, copy=False)
    centered = x - _exact_mean(xp, x, axes)
    return _sum.forward(xp, centered * centered, axes, keepdim) / dof


@_var.grad
def _(ctx, g):
    return _var_backward(ctx, _unsqueeze_reduced(g, ctx.attrs["axes"], ctx.attrs["keepdim"]))


def _var_backward(ctx, g):
    """torch's var_backward, 2/dof · g · (x - mean) (`g` broadcasting against x): not also through mean's
    gradient, whose term is 0 in exact arithmetic but NaN for an infinite g (inf times centered values
    of both signs, summed)."""
    x, axes = ctx.inputs[0], ctx.attrs["axes"]
    return ew.mul(ew.mul(g, 2.0 / ctx.attrs["dof"]), ew.sub(x, mean(x, dim=axes, keepdim=True)))


@defop("std", kind="reduction", saves_output=True)
def _std(xp, x, axes, keepdim, dof, two_pass=False):
    return xp.sqrt(_var.forward(xp, x, axes=axes, keepdim=keepdim, dof=dof, two_pass=two_pass))


@_std.grad
def _(ctx, g):
    # torch's std_backward: var_backward(g / (2 std)) with that quotient masked to 0 where std is 0, so the
    # first-order gradient there is 0 and a second-order one through g is NaN (0 / 0), as torch's
    axes, keepdim = ctx.attrs["axes"], ctx.attrs["keepdim"]
    r, g = _unsqueeze_reduced(ctx.out, axes, keepdim), _unsqueeze_reduced(g, axes, keepdim)
    return _var_backward(ctx, ew.where(cmp.eq(r, 0), ew.const(0, r), ew.div(g, ew.mul(r, 2))))


def _exact_mean(xp, x, axes):
    """x.mean over `axes` (kept) with one correcting pass: sum/n of a constant slice may miss the
    constant by an ulp, leaving a variance of 1e-32 where torch's Welford pass (var along dims with more than
    one output, var_mean) gives an exact 0 (and, say, 0 ** -x an inf). torch's gradient takes x - mean() with mean = sum/n, so the gradient does too."""
    m = _mean_array(xp, x, axes)
    return m + _mean_array(xp, x - m, axes)


def _mean_array(xp, x, axes):
    """x.mean over `axes` (kept), the same bits, with its sum and division made from this module: numpy's
    mean runs them in numpy's own module, where an inf - inf or an empty slice's 0 / 0 escapes distgraph's
    warnings filter (torch warns of neither)."""
    n = 1
    for a in axes:
        n *= x.shape[a]
    wide = np.float32 if x.dtype == np.float16 else None  # numpy's mean sums float16 in float32
    return (_sum.forward(xp, x, axes, True, wide) / n).astype(x.dtype, copy=False)


@defop("var_no_dof", kind="other")
def _var_no_dof(xp, x, axes, keepdim):
    """var over every dim with no degree of freedom left: the sum of squares over 0 (NaN or inf)."""
    centered = x - _mean_array(xp, x, axes)
    return _sum.forward(xp, centered * centered, axes, keepdim) / 0


@_var_no_dof.grad
def _(ctx, g):
    # torch's var_backward for a full reduction without degrees of freedom: g times NaN where x is
    # its mean, inf elsewhere, a constant, so nothing of it reaches a second-order gradient of x
    x = ctx.inputs[0]
    xp = x.device.xp
    nan_or_inf = xp.where(x.array == x.array.mean(), xp.nan, xp.inf).astype(x.array.dtype)
    return ew.mul(g, Tensor(nan_or_inf, device=x.device))


def max_(a, b):
    return a if a > b else b


def std(input, dim=None, unbiased=None, keepdim=False, correction=None):
    dim, unbiased = _unbiased_overload(dim, unbiased)
    return _deviation(input, dim, unbiased, keepdim, correction, whole=True)


def _deviation(input, dim, unbiased, keepdim, correction, whole):
    if input.array.dtype is F16:  # as _variance
        return ew.cast(_deviation(ew.cast(input, np.float32), dim, unbiased, keepdim, correction, whole), F16)
    axes, n, corr = _plan(input, dim, unbiased, correction)
    if n > corr and input.array.dtype.kind == "f":  # the usual case: torch's std_backward (_std)
        return _std(input, axes=axes, keepdim=keepdim, dof=n - corr, two_pass=_two_pass(input, n, whole))
    # otherwise (no degree of freedom left, complex): where the variance is 0 the gradient is 0, as
    # torch's std_backward masks it (sqrt's infinite slope times var's zero gradient would be NaN)
    v = var(input, dim, unbiased, keepdim, correction)
    zero = cmp.eq(v, 0)
    return ew.where(zero, ew.const(0, v), ew.sqrt(ew.where(zero, ew.const(1, v), v)))


def var_mean(input, dim=None, unbiased=None, keepdim=False, correction=None):
    dim, unbiased = _unbiased_overload(dim, unbiased)
    return _variance(input, dim, unbiased, keepdim, correction, False), _welford_mean(input, dim, keepdim)


def std_mean(input, dim=None, unbiased=None, keepdim=False, correction=None):
    dim, unbiased = _unbiased_overload(dim, unbiased)
    return _deviation(input, dim, unbiased, keepdim, correction, False), _welford_mean(input, dim, keepdim)


def _welford_mean(input, dim, keepdim):
    """mean(input, dim), NaN where torch's Welford pass loses an infinite value (module docstring);
    the NaN is added as a constant, so the gradient is mean's, as torch's."""
    m = mean(input, dim, keepdim)
    x, xp = input.array, input.device.xp
    if x.dtype.kind != "f" or x.size == 0 or bool(xp.isfinite(x).all()):
        return m
    axes = normalize_dims(_all_if_empty(dim), input.ndim, "var_mean")
    kept = [a for a in range(x.ndim) if a not in axes]
    infs = xp.isinf(xp.transpose(x, kept + list(axes))).reshape([x.shape[a] for a in kept] + [-1])
    lost = infs.any(-1) & ~((infs.sum(-1) == 1) & infs[..., -1])
    nan = xp.where(lost, xp.nan, 0).astype(x.dtype).reshape(m.shape)
    return ew.add(m, Tensor(nan, device=input.device))
