"""The count families: Poisson(rate), Binomial(total_count, probs | logits), Geometric(probs | logits),
NegativeBinomial(total_count, probs | logits) and Multinomial(total_count, probs | logits), with torch's
log_prob, entropy (Binomial's and Multinomial's by enumerating a support, as torch's) and moments. Draws go
through the device's generator (ops/random_extra.py's poisson and binomial, a uniform's inverse cdf for
Geometric, a Poisson of a Gamma draw for NegativeBinomial, counted Categorical draws for Multinomial), have
no reparameterization (has_rsample False, as torch's) and come back in the parameter's floating dtype."""

import math

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.distributions import constraints
from distgraph.distributions.discrete import Categorical, _ProbsOrLogits
from distgraph.distributions.distribution import Distribution
from distgraph.distributions.gamma import Gamma
from distgraph.distributions.utils import broadcast_all, lazy_property


class Poisson(Distribution):
    arg_constraints = {"rate": constraints.nonnegative}
    support = constraints.nonnegative_integer

    def __init__(self, rate, validate_args=None):
        (self.rate,) = broadcast_all(rate)
        super().__init__(tuple(self.rate.shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Poisson, _instance)
        new.rate = self.rate.expand(*batch_shape)
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    mean = variance = property(lambda self: self.rate)
    mode = property(lambda self: self.rate.floor())

    def sample(self, sample_shape=()):
        with dg.no_grad():
            return dg.poisson(self.rate.expand(*self._extended_shape(sample_shape)).contiguous())

    def log_prob(self, value):
        self._checked(value)
        rate, value = broadcast_all(self.rate, value)
        return dg.xlogy(value, rate) - rate - dg.lgamma(value + 1)


def _clamp_by_zero(x):
    """max(x, 0) with gradient ½ at 0, as torch's Binomial."""
    return (x.clamp(min=0) + x - x.clamp(max=0)) / 2


class Binomial(_ProbsOrLogits):
    """Successes in `total_count` trials of probability `probs`; total_count is cast to probs' dtype."""

    arg_constraints = {
        "total_count": constraints.nonnegative_integer,
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    has_enumerate_support = True
    _others = ("total_count",)

    def __init__(self, total_count=1, probs=None, logits=None, validate_args=None):
        self._set_params((total_count,), probs, logits, validate_args)

    @property
    def support(self):
        return constraints.integer_interval(0, self.total_count)

    mean = property(lambda self: self.total_count * self.probs)
    mode = property(lambda self: ((self.total_count + 1) * self.probs).floor().clamp(max=self.total_count))
    variance = property(lambda self: self.total_count * self.probs * (1 - self.probs))

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        with dg.no_grad():
            return dg.binomial(self.total_count.expand(*shape).contiguous(), self.probs.expand(*shape).contiguous())

    def log_prob(self, value):
        self._checked(value)
        n, logits = self.total_count, self.logits
        log_factorial_n = dg.lgamma(n + 1)
        log_factorial_k = dg.lgamma(value + 1)
        log_factorial_nmk = dg.lgamma(n - value + 1)
        normalize = n * _clamp_by_zero(logits) + n * dg.log1p(dg.exp(-logits.abs())) - log_factorial_n
        return value * logits - log_factorial_k - log_factorial_nmk - normalize

    def _homogeneous_count(self, what):
        total = int(self.total_count.max().item())
        if self.total_count.min().item() != total:
            raise NotImplementedError(f"Inhomogeneous total count not supported by `{what}`.")
        return total

    def entropy(self):
        self._homogeneous_count("entropy")
        log_prob = self.log_prob(self.enumerate_support(False))
        return -(dg.exp(log_prob) * log_prob).sum(0)

    def enumerate_support(self, expand=True):
        total = self._homogeneous_count("enumerate_support")
        values = dg.arange(1 + total, dtype=self._param.dtype, device=self._param.device)
        values = values.reshape((-1,) + (1,) * len(self._batch_shape))
        return values.expand(1 + total, *self._batch_shape) if expand else values


class Geometric(_ProbsOrLogits):
    """The number of failures before the first success, P(k) = (1 - p)^k·p; probs must be in (0, 1]."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, probs=None, logits=None, validate_args=None):
        self._set_params((), probs, logits, validate_args)
        if self._validate_args and probs is not None and not bool((self.probs > 0).all()):
            raise ValueError(
                f"Expected parameter probs (Tensor of shape {tuple(self.probs.shape)}) of distribution {self!r} "
                f"to be positive but found invalid values:\n{self.probs[~(self.probs > 0)]}"
            )

    mean = property(lambda self: 1.0 / self.probs - 1.0)
    mode = property(lambda self: dg.zeros_like(self.probs))
    variance = property(lambda self: (1.0 / self.probs - 1.0) / self.probs)

    def sample(self, sample_shape=()):
        """floor(log u / log(1 - p)), u uniform on [tiny, 1)."""
        probs = self.probs
        with dg.no_grad():
            u = dg.rand(self._extended_shape(sample_shape), dtype=probs.dtype, device=probs.device)
            u = u.clamp(min=dg.finfo(probs.dtype).tiny)
            return (u.log() / dg.log1p(-probs)).floor()

    def log_prob(self, value):
        self._checked(value)
        value, probs = broadcast_all(value, self.probs)
        probs = dg.where((probs == 1) & (value == 0), 0.0, probs)  # 0·log 0 read as 0, as torch
        return value * dg.log1p(-probs) + self.probs.log()

    def entropy(self):
        return F.binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none") / self.probs


class NegativeBinomial(_ProbsOrLogits):
    """The number of successes before `total_count` failures, each trial a success with probability
    `probs`; total_count may be any nonnegative real (cast to probs' dtype)."""

    arg_constraints = {
        "total_count": constraints.greater_than_eq(0),
        "probs": constraints.half_open_interval(0.0, 1.0),
        "logits": constraints.real,
    }
    support = constraints.nonnegative_integer
    _others = ("total_count",)

    def __init__(self, total_count, probs=None, logits=None, validate_args=None):
        self._set_params((total_count,), probs, logits, validate_args)

    mean = property(lambda self: self.total_count * dg.exp(self.logits))
    mode = property(lambda self: ((self.total_count - 1) * self.logits.exp()).floor().clamp(min=0.0))
    variance = property(lambda self: self.mean / dg.sigmoid(-self.logits))

    @lazy_property
    def _gamma(self):
        """The Poisson rate's mixing distribution: Gamma(total_count, exp(-logits))."""
        return Gamma(self.total_count, dg.exp(-self.logits), validate_args=False)

    def sample(self, sample_shape=()):
        with dg.no_grad():
            return dg.poisson(self._gamma.sample(sample_shape).contiguous())

    def log_prob(self, value):
        self._checked(value)
        n, logits = self.total_count, self.logits
        log_unnormalized = n * F.logsigmoid(-logits) + value * F.logsigmoid(logits)
        log_normalization = -dg.lgamma(n + value) + dg.lgamma(1.0 + value) + dg.lgamma(n)
        log_normalization = dg.where(n + value == 0.0, 0.0, log_normalization)  # 0 failures, 0 successes: 1
        return log_unnormalized - log_normalization


class Multinomial(Distribution):
    """Counts of `total_count` Categorical(probs | logits) draws over K categories (event_shape (K,));
    total_count is one int for the whole batch, as torch's."""

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}

    def __init__(self, total_count=1, probs=None, logits=None, validate_args=None):
        if not isinstance(total_count, int):
            raise NotImplementedError("inhomogeneous total_count is not supported")
        self.total_count = total_count
        self._categorical = Categorical(probs=probs, logits=logits)
        batch, event = self._categorical.batch_shape, self._categorical.param_shape[-1:]
        super().__init__(batch, event, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Multinomial, _instance)
        new.total_count = self.total_count
        new._categorical = self._categorical.expand(batch_shape)
        Distribution.__init__(new, batch_shape, self._event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    support = property(lambda self: constraints.multinomial(self.total_count))
    probs = property(lambda self: self._categorical.probs)
    logits = property(lambda self: self._categorical.logits)
    param_shape = property(lambda self: self._categorical.param_shape)
    mean = property(lambda self: self.probs * self.total_count)
    variance = property(lambda self: self.total_count * self.probs * (1 - self.probs))

    def sample(self, sample_shape=()):
        with dg.no_grad():
            draws = self._categorical.sample((self.total_count,) + tuple(sample_shape))  # (n, *sample, *batch)
            counts = F.one_hot(draws, self._event_shape[0]).sum(0)  # (*sample, *batch, K)
            return counts.to(self.probs.dtype)

    def entropy(self):
        """n·H(categorical) - log n! + Σ_k E[log x_k!], each x_k ~ Binomial(n, p_k) (torch's)."""
        n = dg.tensor(float(self.total_count), dtype=self.probs.dtype)
        term1 = n * self._categorical.entropy() - dg.lgamma(n + 1)
        binomial = Binomial(self.total_count, probs=self.probs)
        support = binomial.enumerate_support(expand=False)[1:]
        weighted = dg.exp(binomial.log_prob(support)) * dg.lgamma(support + 1)
        return term1 + weighted.sum((0, -1))

    def log_prob(self, value):
        self._checked(value)
        logits, value = broadcast_all(self.logits, value)
        log_factorial_n = dg.lgamma(value.sum(-1) + 1)
        log_factorial_xs = dg.lgamma(value + 1).sum(-1)
        logits = dg.where((value == 0) & (logits == -math.inf), 0.0, logits)  # 0·log 0 read as 0
        return log_factorial_n - log_factorial_xs + (logits * value).sum(-1)
