"""Weibull, Pareto, HalfCauchy, InverseGamma and Kumaraswamy: more families torch builds as
TransformedDistributions, built the same way so `.base_dist`, `.transforms`, log_prob and the
(Transformed, Transformed) KL rule behave as torch's:

- Weibull(scale, concentration) = Exponential(1) through x^(1/concentration), then scale·x;
- Pareto(scale, alpha) = Exponential(alpha) through exp, then scale·x;
- HalfCauchy(scale) = |Cauchy(0, scale)|;
- InverseGamma(concentration, rate) = 1 / Gamma(concentration, rate);
- Kumaraswamy(concentration1, concentration0) = Uniform(0, 1) through x^(1/c0), 1 - x, then x^(1/c1).

As in torch, log_prob (and cdf/icdf, HalfCauchy aside) go through the transforms; the moments and entropy
are closed forms."""

import math

import distgraph as dg
from distgraph.distributions import constraints
from distgraph.distributions.continuous import Exponential, Uniform
from distgraph.distributions.continuous_extra import Cauchy
from distgraph.distributions.distribution import Distribution
from distgraph.distributions.gamma import Gamma
from distgraph.distributions.transformed import TransformedDistribution
from distgraph.distributions.transformed_families import _Folded
from distgraph.distributions.transforms import AffineTransform, ExpTransform, PowerTransform
from distgraph.distributions.utils import broadcast_all

_EULER_GAMMA = 0.57721566490153286060


class Weibull(TransformedDistribution):
    arg_constraints = {"scale": constraints.positive, "concentration": constraints.positive}
    support = constraints.positive
    __repr__ = Distribution.__repr__

    def __init__(self, scale, concentration, validate_args=None):
        self.scale, self.concentration = broadcast_all(scale, concentration)
        base = Exponential(dg.ones_like(self.scale), validate_args=validate_args)
        super().__init__(base, self._transforms(), validate_args=validate_args)

    def _transforms(self):
        self.concentration_reciprocal = self.concentration.reciprocal()
        return [PowerTransform(self.concentration_reciprocal), AffineTransform(0, self.scale)]

    def expand(self, batch_shape, _instance=None):
        """torch's: the parameters expanded and the transforms rebuilt on them."""
        new = self._get_checked_instance(Weibull, _instance)
        new.scale, new.concentration = self.scale.expand(*batch_shape), self.concentration.expand(*batch_shape)
        base = self.base_dist.expand(batch_shape)
        TransformedDistribution.__init__(new, base, new._transforms(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    mean = property(lambda self: self.scale * dg.exp(dg.lgamma(1 + self.concentration_reciprocal)))
    mode = property(
        lambda self: self.scale * ((self.concentration - 1) / self.concentration) ** self.concentration.reciprocal()
    )

    @property
    def variance(self):
        r = self.concentration_reciprocal
        return self.scale.pow(2) * (dg.exp(dg.lgamma(1 + 2 * r)) - dg.exp(2 * dg.lgamma(1 + r)))

    def entropy(self):
        r = self.concentration_reciprocal
        return _EULER_GAMMA * (1 - r) + dg.log(self.scale * r) + 1


class Pareto(TransformedDistribution):
    """Pareto type I: support [scale, ∞), tail index alpha."""

    arg_constraints = {"alpha": constraints.positive, "scale": constraints.positive}
    __repr__ = Distribution.__repr__

    def __init__(self, scale, alpha, validate_args=None):
        self.scale, self.alpha = broadcast_all(scale, alpha)
        base = Exponential(self.alpha, validate_args=validate_args)
        super().__init__(base, [ExpTransform(), AffineTransform(0, self.scale)], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Pareto, _instance)
        new.scale, new.alpha = self.scale.expand(*batch_shape), self.alpha.expand(*batch_shape)
        return super().expand(batch_shape, _instance=new)

    @property
    def support(self):
        return constraints.greater_than_eq(self.scale)

    @property
    def mean(self):
        """inf for alpha <= 1 (torch clamps alpha to 1, dividing by 0)."""
        a = self.alpha.clamp(min=1)
        return a * self.scale / (a - 1)

    mode = property(lambda self: self.scale)

    @property
    def variance(self):
        a = self.alpha.clamp(min=2)
        return self.scale.pow(2) * a / ((a - 1).pow(2) * (a - 2))

    def entropy(self):
        return (self.scale / self.alpha).log() + (1 + self.alpha.reciprocal())


class HalfCauchy(_Folded):
    _base = Cauchy
    mean = property(lambda self: dg.full(self._extended_shape(), math.inf, dtype=self.scale.dtype))
    variance = property(lambda self: self.base_dist.variance)


class InverseGamma(TransformedDistribution):
    """1 / X for X ~ Gamma(concentration, rate); the parameters are the base Gamma's."""

    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.positive
    has_rsample = True
    __repr__ = Distribution.__repr__

    def __init__(self, concentration, rate, validate_args=None):
        base = Gamma(concentration, rate, validate_args=validate_args)
        neg_one = -dg.ones((), dtype=base.rate.dtype, device=base.rate.device)
        super().__init__(base, PowerTransform(neg_one), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(InverseGamma, _instance)
        return super().expand(batch_shape, _instance=new)

    concentration = property(lambda self: self.base_dist.concentration)
    rate = property(lambda self: self.base_dist.rate)
    mode = property(lambda self: self.rate / (self.concentration + 1))

    @property
    def mean(self):
        return dg.where(self.concentration > 1, self.rate / (self.concentration - 1), math.inf)

    @property
    def variance(self):
        c = self.concentration
        return dg.where(c > 2, self.rate.square() / ((c - 1).square() * (c - 2)), math.inf)

    def entropy(self):
        c = self.concentration
        return c + self.rate.log() + c.lgamma() - (1 + c) * c.digamma()


def _kumaraswamy_moment(a, b, n):
    """E[X^n] = b·B(1 + n/a, b)."""
    arg = 1 + n / a
    return b * dg.exp(dg.lgamma(arg) + dg.lgamma(b) - dg.lgamma(arg + b))


class Kumaraswamy(TransformedDistribution):
    arg_constraints = {"concentration1": constraints.positive, "concentration0": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True
    __repr__ = Distribution.__repr__

    def __init__(self, concentration1, concentration0, validate_args=None):
        self.concentration1, self.concentration0 = broadcast_all(concentration1, concentration0)
        c0 = self.concentration0
        base = Uniform(dg.zeros_like(c0), dg.ones_like(c0), validate_args=validate_args)
        transforms = [
            PowerTransform(c0.reciprocal()),
            AffineTransform(1.0, -1.0),
            PowerTransform(self.concentration1.reciprocal()),
        ]
        super().__init__(base, transforms, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Kumaraswamy, _instance)
        new.concentration1 = self.concentration1.expand(*batch_shape)
        new.concentration0 = self.concentration0.expand(*batch_shape)
        return super().expand(batch_shape, _instance=new)

    mean = property(lambda self: _kumaraswamy_moment(self.concentration1, self.concentration0, 1))
    variance = property(
        lambda self: _kumaraswamy_moment(self.concentration1, self.concentration0, 2) - self.mean.pow(2)
    )

    @property
    def mode(self):
        """nan where either concentration is below 1 (the density has no interior maximum)."""
        a, b = self.concentration1, self.concentration0
        log_mode = b.reciprocal() * (-b).log1p() - (-b * a).log1p()
        return dg.where((b < 1) | (a < 1), math.nan, log_mode).exp()

    def entropy(self):
        t1 = 1 - self.concentration1.reciprocal()
        t0 = 1 - self.concentration0.reciprocal()
        h0 = dg.digamma(self.concentration0 + 1) + _EULER_GAMMA
        return t0 + t1 * h0 - dg.log(self.concentration1) - dg.log(self.concentration0)
