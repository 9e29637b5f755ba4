"""StudentT and Cauchy, with torch's formulas for log_prob, cdf/icdf (where torch has them), entropy and
moments. Each is reparameterized as torch's: a StudentT draw is loc + scale·X/√(Z/df) with X ~ N(0, 1) and
Z ~ χ²(df) = 2·Gamma(df/2) (ops/gamma_sample.py's implicit gradient); a Cauchy draw is its inverse cdf of
a uniform ε from the device's generator. Gumbel and HalfNormal, which torch builds as
TransformedDistributions, live in transformed_families.py."""

import math

import distgraph as dg
from distgraph.distributions import constraints
from distgraph.distributions.continuous import _Family, _LocScale
from distgraph.ops.gamma_sample import standard_gamma


class StudentT(_Family):
    arg_constraints = {"df": constraints.positive, "loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True
    _params = ("df", "loc", "scale")

    def __init__(self, df, loc=0.0, scale=1.0, validate_args=None):
        self._set_params((df, loc, scale), validate_args)

    mode = property(lambda self: self.loc)

    @property
    def mean(self):
        """loc where df > 1, nan elsewhere (no finite mean)."""
        return dg.where(self.df <= 1, math.nan, self.loc)

    @property
    def variance(self):
        """scale²·df/(df - 2) where df > 2, inf for 1 < df <= 2, nan for df <= 1."""
        above = self.df > 2
        df = dg.where(above, self.df, 3.0)  # the other branch stays finite, so its zero gradient is not nan
        finite = self.scale.pow(2) * df / (df - 2)
        return dg.where(above, finite, dg.where(self.df > 1, math.inf, math.nan))

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        x = self._noise("normal", sample_shape)
        chi2 = 2 * standard_gamma((0.5 * self.df).expand(*shape))
        return self.loc + self.scale * x * (chi2 / self.df).rsqrt()

    def log_prob(self, value):
        self._checked(value)
        y = (value - self.loc) / self.scale
        z = (
            self.scale.log()
            + 0.5 * self.df.log()
            + 0.5 * math.log(math.pi)
            + dg.lgamma(0.5 * self.df)
            - dg.lgamma(0.5 * (self.df + 1.0))
        )
        return -0.5 * (self.df + 1.0) * dg.log1p(y.pow(2) / self.df) - z

    def entropy(self):
        half, half_next = 0.5 * self.df, 0.5 * (self.df + 1)
        lbeta = dg.lgamma(half) + math.lgamma(0.5) - dg.lgamma(half_next)
        digammas = dg.digamma(half_next) - dg.digamma(half)
        return self.scale.log() + half_next * digammas + 0.5 * self.df.log() + lbeta


class Cauchy(_LocScale):
    mean = property(lambda self: dg.full(self._extended_shape(), math.nan, dtype=self.loc.dtype))
    mode = property(lambda self: self.loc)
    variance = property(lambda self: dg.full(self._extended_shape(), math.inf, dtype=self.loc.dtype))

    def rsample(self, sample_shape=()):
        """loc + scale·tan(π(u - ½)), u uniform: the standard Cauchy's inverse cdf."""
        return self.icdf(self._noise("uniform", sample_shape))

    def log_prob(self, value):
        self._checked(value)
        return -math.log(math.pi) - self.scale.log() - dg.log1p(((value - self.loc) / self.scale).pow(2))

    def cdf(self, value):
        self._checked(value)
        return dg.atan((value - self.loc) / self.scale) / math.pi + 0.5

    def icdf(self, value):
        return dg.tan(math.pi * (value - 0.5)) * self.scale + self.loc

    def entropy(self):
        return math.log(4 * math.pi) + self.scale.log()
