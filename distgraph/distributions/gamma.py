"""Gamma(concentration, rate), Chi2(df), Beta(concentration1, concentration0), Dirichlet(concentration)
and FisherSnedecor(df1, df2), reparameterized through ops/gamma_sample.py's Gamma(α, 1) draws, whose gradient in α is implicit
reparameterization (as torch's `_standard_gamma`). A Beta draw is X / (X + Y) for X ~ Gamma(c1),
Y ~ Gamma(c0): a function of two reparameterized draws, so its gradient is exact for that construction
(torch's goes through its Dirichlet, another route to the same distribution). A Dirichlet draw is likewise
K Gamma draws over their sum, and a FisherSnedecor draw the ratio of two Gamma draws (torch's)."""

import math

import distgraph as dg
from distgraph.distributions import constraints
from distgraph.distributions.continuous import _Family
from distgraph.distributions.distribution import Distribution
from distgraph.distributions.utils import broadcast_all
from distgraph.ops.gamma_sample import standard_gamma


class Gamma(_Family):
    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True
    _params = ("concentration", "rate")

    def __init__(self, concentration, rate, validate_args=None):
        self._set_params((concentration, rate), validate_args)

    mean = property(lambda self: self.concentration / self.rate)
    mode = property(lambda self: ((self.concentration - 1) / self.rate).clamp(min=0))
    variance = property(lambda self: self.concentration / self.rate.pow(2))

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        value = standard_gamma(self.concentration.expand(*shape)) / self.rate.expand(*shape)
        return value.clamp(min=dg.finfo(value.dtype).tiny)  # a quotient that underflowed, as torch

    def log_prob(self, value):
        self._checked(value)
        c, r = self.concentration, self.rate
        return dg.xlogy(c, r) + dg.xlogy(c - 1, value) - r * value - dg.lgamma(c)

    def cdf(self, value):
        """The regularized lower incomplete gamma function; as torch's, no gradient in concentration."""
        self._checked(value)
        return dg.special.gammainc(self.concentration, self.rate * value)

    def entropy(self):
        c = self.concentration
        return c - self.rate.log() + dg.lgamma(c) + (1.0 - c) * dg.digamma(c)


class Chi2(Gamma):
    """Gamma(df/2, 1/2)."""

    arg_constraints = {"df": constraints.positive}

    def __init__(self, df, validate_args=None):
        super().__init__(0.5 * df, 0.5, validate_args=validate_args)

    df = property(lambda self: self.concentration * 2)


class Beta(_Family):
    arg_constraints = {"concentration1": constraints.positive, "concentration0": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True
    _params = ("concentration1", "concentration0")

    def __init__(self, concentration1, concentration0, validate_args=None):
        self._set_params((concentration1, concentration0), validate_args)

    def _total(self):
        return self.concentration1 + self.concentration0

    mean = property(lambda self: self.concentration1 / self._total())

    @property
    def mode(self):
        """torch's (its Dirichlet's mode): (a-1)⁺ / ((a-1)⁺ + (b-1)⁺), so 0 or 1 where one concentration is
        below 1, nan where neither exceeds 1 but one is 1, and 1 where both are below 1 (torch's argmax of
        that nan pair picks the first)."""
        a1 = (self.concentration1 - 1).clamp(min=0)
        a0 = (self.concentration0 - 1).clamp(min=0)
        both_below = (self.concentration1 < 1) & (self.concentration0 < 1)
        return dg.where(both_below, 1.0, a1 / (a1 + a0))

    variance = property(
        lambda self: self.concentration1 * self.concentration0 / (self._total().pow(2) * (self._total() + 1))
    )

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        x = standard_gamma(self.concentration1.expand(*shape))
        y = standard_gamma(self.concentration0.expand(*shape))
        return x / (x + y)

    def log_prob(self, value):
        self._checked(value)
        a, b = self.concentration1, self.concentration0
        return dg.xlogy(a - 1, value) + dg.xlogy(b - 1, 1 - value) + dg.lgamma(a + b) - dg.lgamma(a) - dg.lgamma(b)

    def entropy(self):
        a, b = self.concentration1, self.concentration0
        total = a + b
        log_beta = dg.lgamma(a) + dg.lgamma(b) - dg.lgamma(total)
        return log_beta - (a - 1) * dg.digamma(a) - (b - 1) * dg.digamma(b) + (total - 2) * dg.digamma(total)


class Dirichlet(Distribution):
    """A point of the (K-1)-simplex (event_shape (K,)); a draw is K Gamma(concentration_k) draws over their
    sum, reparameterized through them as Beta's."""

    arg_constraints = {"concentration": constraints.independent(constraints.positive, 1)}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, concentration, validate_args=None):
        if concentration.ndim < 1:
            raise ValueError("`concentration` parameter must be at least one-dimensional.")
        self.concentration = concentration
        shape = tuple(concentration.shape)
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Dirichlet, _instance)
        new.concentration = self.concentration.expand(*(tuple(batch_shape) + self._event_shape))
        Distribution.__init__(new, batch_shape, self._event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=()):
        x = standard_gamma(self.concentration.expand(*self._extended_shape(sample_shape)))
        return (x / x.sum(-1, keepdim=True)).clamp(min=dg.finfo(x.dtype).tiny)

    def log_prob(self, value):
        self._checked(value)
        c = self.concentration
        return dg.xlogy(c - 1.0, value).sum(-1) + dg.lgamma(c.sum(-1)) - dg.lgamma(c).sum(-1)

    mean = property(lambda self: self.concentration / self.concentration.sum(-1, keepdim=True))

    @property
    def mode(self):
        """(c-1)⁺ normalized; where every concentration is below 1, the first vertex (torch's argmax of
        that all-nan row)."""
        c = self.concentration
        cm1 = (c - 1).clamp(min=0)
        all_below = (c < 1).all(-1, keepdim=True)
        first = (dg.arange(c.shape[-1], device=c.device) == 0).to(c.dtype)
        total = cm1.sum(-1, keepdim=True)
        return dg.where(all_below, first, cm1 / dg.where(total > 0, total, math.nan))  # nan, not 0/0's warning

    @property
    def variance(self):
        c = self.concentration
        total = c.sum(-1, keepdim=True)
        return c * (total - c) / (total.pow(2) * (total + 1))

    def entropy(self):
        c = self.concentration
        k, total = c.shape[-1], c.sum(-1)
        return (
            dg.lgamma(c).sum(-1)
            - dg.lgamma(total)
            - (k - total) * dg.digamma(total)
            - ((c - 1.0) * dg.digamma(c)).sum(-1)
        )


class FisherSnedecor(Distribution):
    """The ratio of two scaled χ² draws, X1/X2 with Xi ~ Gamma(dfi/2, dfi); mean, mode and variance are nan
    where they do not exist (df2 <= 2, df1 <= 2, df2 <= 4), as torch's."""

    arg_constraints = {"df1": constraints.positive, "df2": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, df1, df2, validate_args=None):
        self.df1, self.df2 = broadcast_all(df1, df2)
        self._gamma1 = Gamma(self.df1 * 0.5, self.df1)
        self._gamma2 = Gamma(self.df2 * 0.5, self.df2)
        super().__init__(tuple(self.df1.shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(FisherSnedecor, _instance)
        new.df1, new.df2 = self.df1.expand(*batch_shape), self.df2.expand(*batch_shape)
        new._gamma1, new._gamma2 = self._gamma1.expand(batch_shape), self._gamma2.expand(batch_shape)
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self):
        df2 = dg.where(self.df2 <= 2, math.nan, self.df2)
        return df2 / (df2 - 2)

    @property
    def mode(self):
        mode = (self.df1 - 2) / self.df1 * self.df2 / (self.df2 + 2)
        return dg.where(self.df1 <= 2, math.nan, mode)

    @property
    def variance(self):
        df2 = dg.where(self.df2 <= 4, math.nan, self.df2)
        return 2 * df2.pow(2) * (self.df1 + df2 - 2) / (self.df1 * (df2 - 2).pow(2) * (df2 - 4))

    def rsample(self, sample_shape=()):
        tiny = dg.finfo(self.df1.dtype).tiny
        x1 = self._gamma1.rsample(sample_shape)
        x2 = self._gamma2.rsample(sample_shape).clamp(min=tiny)
        return (x1 / x2).clamp(min=tiny)

    def log_prob(self, value):
        self._checked(value)
        ct1, ct2, ct3 = self.df1 * 0.5, self.df2 * 0.5, self.df1 / self.df2
        t1 = (ct1 + ct2).lgamma() - ct1.lgamma() - ct2.lgamma()
        t2 = ct1 * ct3.log() + (ct1 - 1) * dg.log(value)
        t3 = (ct1 + ct2) * dg.log1p(ct3 * value)
        return t1 + t2 - t3
