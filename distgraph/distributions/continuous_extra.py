"""StudentT, Cauchy, Gumbel and HalfNormal, with torch's formulas for log_prob, cdf/icdf (where torch has
them), entropy and moments. Each is reparameterized as torch's: a StudentT draw is loc + scale·X/√(Z/df)
with X ~ N(0, 1) and Z ~ χ²(df) = 2·Gamma(df/2) (ops/gamma_sample.py's implicit gradient); Cauchy, Gumbel
and HalfNormal are functions of a uniform or normal ε from the device's generator. torch builds Gumbel and
HalfNormal as TransformedDistributions; here they are plain families with the same values (HalfNormal keeps
torch's `base_dist`, the Normal(0, scale) it folds)."""

import math

import distgraph as dg
from distgraph.distributions import constraints
from distgraph.distributions.continuous import Normal, _Family, _LocScale
from distgraph.ops.gamma_sample import standard_gamma

_EULER_GAMMA = 0.57721566490153286060


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


class Gumbel(_LocScale):
    mean = property(lambda self: self.loc + self.scale * _EULER_GAMMA)
    mode = property(lambda self: self.loc)
    stddev = property(lambda self: (math.pi / math.sqrt(6)) * self.scale)
    variance = property(lambda self: self.stddev.pow(2))

    def rsample(self, sample_shape=()):
        """loc - scale·log(-log u), u uniform on [tiny, 1 - eps] as torch's base Uniform."""
        info = dg.finfo(self.loc.dtype)
        return self.icdf(self._noise("uniform", sample_shape).clamp(min=info.tiny, max=1 - info.eps))

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


class HalfNormal(_Family):
    """|X| for X ~ Normal(0, scale)."""

    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True
    _params = ("scale",)

    def __init__(self, scale, validate_args=None):
        self._set_params((scale,), validate_args)

    @property
    def base_dist(self):
        return Normal(dg.zeros_like(self.scale), self.scale, validate_args=False)

    mean = property(lambda self: self.scale * math.sqrt(2 / math.pi))
    mode = property(lambda self: dg.zeros_like(self.scale))
    variance = property(lambda self: self.scale.pow(2) * (1 - 2 / math.pi))

    def rsample(self, sample_shape=()):
        return self.base_dist.rsample(sample_shape).abs()

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
