"""The count families: Poisson(rate), Binomial(total_count, probs | logits) and Geometric(probs | logits),
with torch's log_prob, entropy (Binomial's by enumerating its support, as torch's) and moments. Draws go
through the device's generator (ops/random_extra.py's poisson and binomial, and a uniform's inverse cdf for
Geometric), have no reparameterization (has_rsample False, as torch's) and come back in the parameter's
floating dtype."""

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.distributions import constraints
from distgraph.distributions.discrete import _ProbsOrLogits
from distgraph.distributions.distribution import Distribution
from distgraph.distributions.utils import broadcast_all


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
