"""The location-scale and rate families: Normal, Uniform, Exponential and Laplace, each with
torch's formulas for log_prob, cdf, icdf, entropy and moments. rsample is loc + scale·ε (or its
analogue) with ε drawn from the device's generator, so gradients reach the parameters."""

import math

import distgraph as dg
from distgraph.distributions import constraints
from distgraph.distributions.distribution import Distribution
from distgraph.distributions.utils import broadcast_all

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class _Family(Distribution):
    """A family whose parameters broadcast to the batch shape; `_params` names them in order."""

    _params = ()

    def _set_params(self, values, validate_args):
        for name, value in zip(self._params, broadcast_all(*values)):
            setattr(self, name, value)
        super().__init__(tuple(getattr(self, self._params[0]).shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        for name in self._params:
            setattr(new, name, getattr(self, name).expand(*batch_shape))
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _ref(self):
        return getattr(self, self._params[0])

    def _noise(self, kind, sample_shape):
        ref = self._ref()
        shape = self._extended_shape(sample_shape)
        if kind == "normal":
            return dg.randn(shape, dtype=ref.dtype, device=ref.device)
        return dg.rand(shape, dtype=ref.dtype, device=ref.device)


class _LocScale(_Family):
    """A family of a real location and a positive scale (real-valued unless `support` says otherwise),
    reparameterized."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True
    _params = ("loc", "scale")

    def __init__(self, loc, scale, validate_args=None):
        self._set_params((loc, scale), validate_args)


class Normal(_LocScale):
    mean = mode = property(lambda self: self.loc)
    stddev = property(lambda self: self.scale)
    variance = property(lambda self: self.scale.pow(2))

    def rsample(self, sample_shape=()):
        return self.loc + self._noise("normal", sample_shape) * self.scale

    def log_prob(self, value):
        self._checked(value)
        return -((value - self.loc) ** 2) / (2 * self.scale.pow(2)) - self.scale.log() - _HALF_LOG_2PI

    def cdf(self, value):
        self._checked(value)
        return 0.5 * (1 + dg.erf((value - self.loc) * self.scale.reciprocal() / math.sqrt(2)))

    def icdf(self, value):
        return self.loc + self.scale * dg.erfinv(2 * value - 1) * math.sqrt(2)

    def entropy(self):
        return 0.5 + _HALF_LOG_2PI + self.scale.log()


class Uniform(_Family):
    """Uniform on [low, high); validation asks low < high of each parameter, as torch's."""

    has_rsample = True
    _params = ("low", "high")

    def __init__(self, low, high, validate_args=None):
        self._set_params((low, high), validate_args)

    @property
    def arg_constraints(self):
        return {"low": constraints.less_than(self.high), "high": constraints.greater_than(self.low)}

    @property
    def support(self):
        return constraints.interval(self.low, self.high)

    mean = property(lambda self: (self.high + self.low) / 2)
    mode = property(lambda self: self.high * math.nan)
    stddev = property(lambda self: (self.high - self.low) / 12**0.5)
    variance = property(lambda self: (self.high - self.low).pow(2) / 12)

    def rsample(self, sample_shape=()):
        return self.low + self._noise("uniform", sample_shape) * (self.high - self.low)

    def log_prob(self, value):
        self._checked(value)
        inside = ((self.low <= value) & (self.high > value)).to(self.low.dtype)
        return inside.log() - (self.high - self.low).log()

    def cdf(self, value):
        self._checked(value)
        return ((value - self.low) / (self.high - self.low)).clamp(min=0, max=1)

    def icdf(self, value):
        return value * (self.high - self.low) + self.low

    def entropy(self):
        return (self.high - self.low).log()


class Exponential(_Family):
    arg_constraints = {"rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True
    _params = ("rate",)

    def __init__(self, rate, validate_args=None):
        self._set_params((rate,), validate_args)

    mean = property(lambda self: self.rate.reciprocal())
    mode = property(lambda self: dg.zeros_like(self.rate))
    stddev = property(lambda self: self.rate.reciprocal())
    variance = property(lambda self: self.rate.pow(-2))

    def rsample(self, sample_shape=()):
        return -dg.log1p(-self._noise("uniform", sample_shape)) / self.rate

    def log_prob(self, value):
        self._checked(value)
        return self.rate.log() - self.rate * value

    def cdf(self, value):
        self._checked(value)
        return 1 - dg.exp(-self.rate * value)

    def icdf(self, value):
        return -dg.log1p(-value) / self.rate

    def entropy(self):
        return 1.0 - self.rate.log()


class Laplace(_LocScale):
    mean = mode = property(lambda self: self.loc)
    stddev = property(lambda self: math.sqrt(2) * self.scale)
    variance = property(lambda self: 2 * self.scale.pow(2))

    def rsample(self, sample_shape=()):
        """loc - scale·sign(u)·log(1 - |u|), u uniform on (eps - 1, 1) as torch's (never exactly -1)."""
        eps = dg.finfo(self.loc.dtype).eps
        u = self._noise("uniform", sample_shape) * (2 - eps) + (eps - 1)
        return self.loc - self.scale * u.sign() * dg.log1p(-u.abs())

    def log_prob(self, value):
        self._checked(value)
        return -dg.log(2 * self.scale) - (value - self.loc).abs() / self.scale

    def cdf(self, value):
        self._checked(value)
        d = value - self.loc
        return 0.5 - 0.5 * d.sign() * dg.expm1(-d.abs() / self.scale)

    def icdf(self, value):
        term = value - 0.5
        return self.loc - self.scale * term.sign() * dg.log1p(-2 * term.abs())

    def entropy(self):
        return 1 + dg.log(2 * self.scale)
