"""Comparisons, logical ops and predicates: elementwise, no gradient (their outputs are bool)."""

from distgraph.ops import elementwise as ew
from distgraph.ops.registry import defop

EW = "elementwise"


def _compare(name, forward):
    op = defop(name, kind=EW, save=())(forward)

    def fn(input, other):
        return op(*ew._operands(input, other))

    fn.__name__ = name
    return fn


eq = _compare("eq", lambda xp, a, b: a == b)
ne = _compare("ne", lambda xp, a, b: a != b)
lt = _compare("lt", lambda xp, a, b: a < b)
le = _compare("le", lambda xp, a, b: a <= b)
gt = _compare("gt", lambda xp, a, b: a > b)
ge = _compare("ge", lambda xp, a, b: a >= b)
logical_and = _compare("logical_and", lambda xp, a, b: xp.logical_and(a, b))
logical_or = _compare("logical_or", lambda xp, a, b: xp.logical_or(a, b))
logical_xor = _compare("logical_xor", lambda xp, a, b: xp.logical_xor(a, b))
bitwise_and = _compare("bitwise_and", lambda xp, a, b: a & b)
bitwise_or = _compare("bitwise_or", lambda xp, a, b: a | b)
bitwise_xor = _compare("bitwise_xor", lambda xp, a, b: a ^ b)
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne


def _predicate(name, forward):
    """A one-input op as a plain function: an Op object installed on Tensor would not bind `self`,
    so `t.isnan()` would call the op with no input."""
    op = defop(name, kind=EW, save=())(forward)

    def fn(input):
        return op(input)

    fn.__name__ = name
    fn.op = op
    return fn


logical_not = _predicate("logical_not", lambda xp, a: xp.logical_not(a))
bitwise_not = _predicate("bitwise_not", lambda xp, a: ~a)
isnan = _predicate("isnan", lambda xp, a: xp.isnan(a))
isinf = _predicate("isinf", lambda xp, a: xp.isinf(a))
isfinite = _predicate("isfinite", lambda xp, a: xp.isfinite(a))


@defop("isclose", kind=EW, save=())
def _isclose(xp, a, b, rtol=1e-5, atol=1e-8, equal_nan=False):
    return xp.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)


def isclose(input, other, rtol=1e-5, atol=1e-8, equal_nan=False):
    return _isclose(*ew._operands(input, other), rtol=rtol, atol=atol, equal_nan=equal_nan)


def allclose(input, other, rtol=1e-5, atol=1e-8, equal_nan=False):
    return bool(isclose(input, other, rtol, atol, equal_nan).array.all())


def equal(input, other):
    return input.shape == other.shape and bool((input.array == other.array).all())
