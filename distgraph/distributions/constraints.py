"""torch.distributions.constraints: what a parameter or a sample must satisfy. `check(value)` gives a bool
tensor over the batch (an event's elements reduced, `event_dim` of them); the reprs are torch's, so
validation errors read as torch's do."""

import distgraph as dg


def _fmt(bound):
    """A bound as torch's f-strings show it: a 0-d tensor as its number (Tensor.__format__), else as is."""
    return bound.item() if isinstance(bound, dg.Tensor) and bound.ndim == 0 else bound


class Constraint:
    """A region: `check(value)` is True where value lies in it. `is_discrete`: integer-valued;
    `event_dim`: how many rightmost dims one check covers."""

    is_discrete = False
    event_dim = 0

    def check(self, value):
        raise NotImplementedError

    def __repr__(self):
        return type(self).__name__.lstrip("_") + "()"


class _Dependent(Constraint):
    """A placeholder for a constraint that depends on other parameters (Uniform's low < high): never
    checked by Distribution.__init__, as torch."""

    def check(self, value):
        raise ValueError("Cannot determine validity of dependent constraint")


class _Real(Constraint):
    def check(self, value):
        return value == value  # noqa: PLR0124  (False only at NaN)


class _Boolean(Constraint):
    is_discrete = True

    def check(self, value):
        return (value == 0) | (value == 1)


class _GreaterThan(Constraint):
    def __init__(self, lower_bound):
        self.lower_bound = lower_bound

    def check(self, value):
        return value > self.lower_bound

    def __repr__(self):
        return f"GreaterThan(lower_bound={_fmt(self.lower_bound)})"


class _GreaterThanEq(_GreaterThan):
    def check(self, value):
        return value >= self.lower_bound

    def __repr__(self):
        return f"GreaterThanEq(lower_bound={_fmt(self.lower_bound)})"


class _LessThan(Constraint):
    def __init__(self, upper_bound):
        self.upper_bound = upper_bound

    def check(self, value):
        return value < self.upper_bound

    def __repr__(self):
        return f"LessThan(upper_bound={_fmt(self.upper_bound)})"


class _Interval(Constraint):
    def __init__(self, lower_bound, upper_bound):
        self.lower_bound, self.upper_bound = lower_bound, upper_bound

    def check(self, value):
        return (self.lower_bound <= value) & (value <= self.upper_bound)

    def __repr__(self):
        return f"Interval(lower_bound={_fmt(self.lower_bound)}, upper_bound={_fmt(self.upper_bound)})"


class _HalfOpenInterval(_Interval):
    def check(self, value):
        return (self.lower_bound <= value) & (value < self.upper_bound)

    def __repr__(self):
        return f"HalfOpenInterval(lower_bound={_fmt(self.lower_bound)}, upper_bound={_fmt(self.upper_bound)})"


class _IntegerGreaterThan(_GreaterThan):
    is_discrete = True

    def check(self, value):
        return (value % 1 == 0) & (value >= self.lower_bound)

    def __repr__(self):
        return f"IntegerGreaterThan(lower_bound={_fmt(self.lower_bound)})"


class _IntegerInterval(_Interval):
    is_discrete = True

    def check(self, value):
        return (value % 1 == 0) & super().check(value)

    def __repr__(self):
        return f"IntegerInterval(lower_bound={_fmt(self.lower_bound)}, upper_bound={_fmt(self.upper_bound)})"


class _Independent(Constraint):
    """`base` with its `reinterpreted_batch_ndims` rightmost dims read as one event (all must hold)."""

    def __init__(self, base, reinterpreted_batch_ndims):
        self.base, self.reinterpreted_batch_ndims = base, reinterpreted_batch_ndims

    @property
    def is_discrete(self):
        return self.base.is_discrete

    @property
    def event_dim(self):
        return self.base.event_dim + self.reinterpreted_batch_ndims

    def check(self, value):
        result = self.base.check(value)
        if result.ndim < self.reinterpreted_batch_ndims:
            expected = self.base.event_dim + self.reinterpreted_batch_ndims
            raise ValueError(f"Expected value.dim() >= {expected} but got {value.ndim}")
        for _ in range(self.reinterpreted_batch_ndims):
            result = result.all(-1)
        return result

    def __repr__(self):
        return f"IndependentConstraint({self.base!r}, {self.reinterpreted_batch_ndims})"


class _Simplex(Constraint):
    event_dim = 1

    def check(self, value):
        return (value >= 0).all(-1) & ((value.sum(-1) - 1).abs() < 1e-6)


class _OneHot(Constraint):
    is_discrete = True
    event_dim = 1

    def check(self, value):
        return ((value == 0) | (value == 1)).all(-1) & (value.sum(-1) == 1)


class _Multinomial(Constraint):
    """Nonnegative counts summing to at most upper_bound (torch's weaker check than "exactly")."""

    is_discrete = True
    event_dim = 1

    def __init__(self, upper_bound):
        self.upper_bound = upper_bound

    def check(self, value):
        return (value >= 0).all(-1) & (value.sum(-1) <= self.upper_bound)


class _LowerCholesky(Constraint):
    event_dim = 2

    def check(self, value):
        lower = (value.tril() == value).flatten(-2).all(-1)
        return lower & (value.diagonal(dim1=-2, dim2=-1) > 0).all(-1)


class _PositiveDefinite(Constraint):
    """Symmetric as torch's (isclose to its transpose: rtol 1e-5, atol 1e-6) with positive eigenvalues
    (torch asks cholesky_ex; the answer is the same)."""

    event_dim = 2

    def check(self, value):
        symmetric = dg.isclose(value, value.transpose(-2, -1), rtol=1e-5, atol=1e-6).flatten(-2).all(-1)
        xp = value.device.xp
        arr = value.detach().array
        positive = xp.zeros(arr.shape[:-2], dtype=bool)
        ok = symmetric.array
        if bool(ok.any()):
            positive = xp.where(ok, xp.linalg.eigvalsh(xp.where(ok[..., None, None], arr, 1.0)).min(-1) > 0, False)
        return symmetric & dg.tensor(positive, device=value.device)


dependent = _Dependent()
real = _Real()
boolean = _Boolean()
positive = _GreaterThan(0.0)
nonnegative = _GreaterThanEq(0.0)
nonnegative_integer = _IntegerGreaterThan(0)
unit_interval = _Interval(0.0, 1.0)
real_vector = _Independent(real, 1)
simplex = _Simplex()
one_hot = _OneHot()
lower_cholesky = _LowerCholesky()
positive_definite = _PositiveDefinite()
greater_than, greater_than_eq, less_than, interval, half_open_interval = (
    _GreaterThan,
    _GreaterThanEq,
    _LessThan,
    _Interval,
    _HalfOpenInterval,
)
integer_interval, independent, multinomial = _IntegerInterval, _Independent, _Multinomial


def is_dependent(constraint):
    return isinstance(constraint, _Dependent)
