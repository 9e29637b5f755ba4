"""LogNormal, Gumbel and HalfNormal: the families torch builds as TransformedDistributions, built the same
way so `isinstance(d, TransformedDistribution)`, `.base_dist`, `.transforms` and the (Transformed,
Transformed) KL rule behave as torch's:

- LogNormal(loc, scale) = Normal(loc, scale) through ExpTransform;
- Gumbel(loc, scale) = Uniform(tiny, 1 - eps) through log, negate, log, then loc - scale·x;
- HalfNormal(scale) = Normal(0, scale) through AbsTransform (`_Folded`, which HalfCauchy shares).

Sampling goes through the transforms (torch's reparameterization); log_prob, cdf, icdf, entropy and the
moments keep their closed forms, which agree with the transformed ones and stay finite further out."""

import math

import distgraph as dg
from distgraph.distributions import constraints
from distgraph.distributions.continuous import Normal, Uniform
from distgraph.distributions.distribution import Distribution
from distgraph.distributions.transformed import TransformedDistribution
from distgraph.distributions.transforms import AbsTransform, AffineTransform, ExpTransform
from distgraph.distributions.utils import broadcast_all

_EULER_GAMMA = 0.57721566490153286060


class LogNormal(TransformedDistribution):
    """exp of a Normal(loc, scale); loc and scale are the base Normal's."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.positive
    has_rsample = True
    __repr__ = Distribution.__repr__

    def __init__(self, loc, scale, validate_args=None):
        base = Normal(loc, scale, validate_args=validate_args)
        super().__init__(base, ExpTransform(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LogNormal, _instance)
        return super().expand(batch_shape, _instance=new)

    loc = property(lambda self: self.base_dist.loc)
    scale = property(lambda self: self.base_dist.scale)
    mean = property(lambda self: (self.loc + self.scale.pow(2) / 2).exp())
    mode = property(lambda self: (self.loc - self.scale.pow(2)).exp())
    variance = property(lambda self: dg.expm1(self.scale.pow(2)) * (2 * self.loc + self.scale.pow(2)).exp())

    def log_prob(self, value):
        self._checked(value)
        y = value.log()
        return self.base_dist.log_prob(y) - y

    def cdf(self, value):
        self._checked(value)
        return self.base_dist.cdf(value.log())

    def icdf(self, value):
        return self.base_dist.icdf(value).exp()

    def entropy(self):
        return self.base_dist.entropy() + self.loc


class Gumbel(TransformedDistribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    __repr__ = Distribution.__repr__

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        info = dg.finfo(self.loc.dtype)
        low, high = dg.full_like(self.loc, info.tiny), dg.full_like(self.loc, 1 - info.eps)
        transforms = [
            ExpTransform().inv,
            AffineTransform(0, -dg.ones_like(self.scale)),
            ExpTransform().inv,
            AffineTransform(self.loc, -self.scale),
        ]
        super().__init__(Uniform(low, high, validate_args=validate_args), transforms, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Gumbel, _instance)
        new.loc, new.scale = self.loc.expand(*batch_shape), self.scale.expand(*batch_shape)
        return super().expand(batch_shape, _instance=new)

    mean = property(lambda self: self.loc + self.scale * _EULER_GAMMA)
    mode = property(lambda self: self.loc)
    stddev = property(lambda self: (math.pi / math.sqrt(6)) * self.scale)
    variance = property(lambda self: self.stddev.pow(2))

    def log_prob(self, value):
        self._checked(value)
        y = (self.loc - value) / self.scale
        return (y - y.exp()) - self.scale.log()

    def cdf(self, value):
        self._checked(value)
        return dg.exp(-dg.exp((self.loc - value) / self.scale))

    def icdf(self, value):
        return self.loc - self.scale * dg.log(-dg.log(value))

    def entropy(self):
        return self.scale.log() + (1 + _EULER_GAMMA)


class _Folded(TransformedDistribution):
    """|X| for X ~ `_base`(0, scale), a family symmetric about 0 (HalfNormal's Normal, HalfCauchy's Cauchy):
    twice the base's density on [0, ∞); scale is the base's."""

    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True
    __repr__ = Distribution.__repr__
    _base = None

    def __init__(self, scale, validate_args=None):
        super().__init__(self._base(0.0, scale, validate_args=False), AbsTransform(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        return super().expand(batch_shape, _instance=new)

    scale = property(lambda self: self.base_dist.scale)
    mode = property(lambda self: dg.zeros_like(self.scale))

    def log_prob(self, value):
        self._checked(value)
        return dg.where(value >= 0, self.base_dist.log_prob(value) + math.log(2), -math.inf)

    def cdf(self, value):
        self._checked(value)
        return 2 * self.base_dist.cdf(value) - 1

    def icdf(self, value):
        return self.base_dist.icdf((value + 1) / 2)

    def entropy(self):
        return self.base_dist.entropy() - math.log(2)


class HalfNormal(_Folded):
    _base = Normal
    mean = property(lambda self: self.scale * math.sqrt(2 / math.pi))
    variance = property(lambda self: self.scale.pow(2) * (1 - 2 / math.pi))
