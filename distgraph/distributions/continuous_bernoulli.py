"""ContinuousBernoulli(probs | logits): the density on [0, 1] proportional to p^x (1 - p)^(1 - x)
(Loaiza-Ganem & Cunningham, 2019), as torch's.

Its normalizer, mean and variance divide by 2p - 1 and log(p / (1 - p)), which vanish at p = ½; as
torch's, within `lims` (default (0.499, 0.501)) each is its Taylor expansion around ½ instead, and the
closed form is evaluated at a probability cut to lims[0] so that the branch not taken stays finite (and its
zero gradient is not nan). Draws are the inverse cdf of a uniform, so rsample carries gradients."""

import math

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.distributions import constraints
from distgraph.distributions.discrete import _one_of
from distgraph.distributions.distribution import Distribution
from distgraph.distributions.utils import broadcast_all, clamp_probs, lazy_property, logits_to_probs, probs_to_logits


class ContinuousBernoulli(Distribution):
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, probs=None, logits=None, lims=(0.499, 0.501), validate_args=None):
        _one_of("ContinuousBernoulli", probs, logits)
        if probs is not None:
            (self.probs,) = broadcast_all(probs)
            if validate_args is not None and not bool(self.arg_constraints["probs"].check(self.probs).all()):
                raise ValueError("The parameter probs has invalid values")
            self.probs = clamp_probs(self.probs)
        else:
            (self.logits,) = broadcast_all(logits)
        self._param = self.probs if probs is not None else self.logits
        self._lims = lims
        super().__init__(tuple(self._param.shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ContinuousBernoulli, _instance)
        new._lims = self._lims
        for name in ("probs", "logits"):
            if name in self.__dict__:
                setattr(new, name, self.__dict__[name].expand(*batch_shape))
                new._param = new.__dict__[name]
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self):
        return clamp_probs(logits_to_probs(self.logits, is_binary=True))

    param_shape = property(lambda self: tuple(self._param.shape))

    def _outside_unstable_region(self):
        return (self.probs <= self._lims[0]) | (self.probs > self._lims[1])

    def _cut_probs(self):
        return dg.where(self._outside_unstable_region(), self.probs, self._lims[0] * dg.ones_like(self.probs))

    def _cont_bern_log_norm(self):
        """log C(p), C(p) = 2·atanh(1 - 2p)/(1 - 2p); log 2 + (4/3 + 104/45·x)·x, x = (p - ½)², near ½."""
        cut = self._cut_probs()
        below_half = dg.where(cut <= 0.5, cut, dg.zeros_like(cut))
        above_half = dg.where(cut >= 0.5, cut, dg.ones_like(cut))
        log_norm = dg.log(dg.abs(dg.log1p(-cut) - dg.log(cut))) - dg.where(
            cut <= 0.5, dg.log1p(-2.0 * below_half), dg.log(2.0 * above_half - 1.0)
        )
        x = (self.probs - 0.5).pow(2)
        taylor = math.log(2.0) + (4.0 / 3.0 + 104.0 / 45.0 * x) * x
        return dg.where(self._outside_unstable_region(), log_norm, taylor)

    @property
    def mean(self):
        cut = self._cut_probs()
        mus = cut / (2.0 * cut - 1.0) + 1.0 / (dg.log1p(-cut) - dg.log(cut))
        x = self.probs - 0.5
        taylor = 0.5 + (1.0 / 3.0 + 16.0 / 45.0 * x.pow(2)) * x
        return dg.where(self._outside_unstable_region(), mus, taylor)

    @property
    def variance(self):
        cut = self._cut_probs()
        variances = cut * (cut - 1.0) / (1.0 - 2.0 * cut).pow(2) + 1.0 / (dg.log1p(-cut) - dg.log(cut)).pow(2)
        x = (self.probs - 0.5).pow(2)
        taylor = 1.0 / 12.0 - (1.0 / 15.0 - 128.0 / 945.0 * x) * x
        return dg.where(self._outside_unstable_region(), variances, taylor)

    def rsample(self, sample_shape=()):
        u = dg.rand(self._extended_shape(sample_shape), dtype=self.probs.dtype, device=self.probs.device)
        return self.icdf(u)

    def log_prob(self, value):
        self._checked(value)
        logits, value = broadcast_all(self.logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none") + self._cont_bern_log_norm()

    def cdf(self, value):
        self._checked(value)
        cut = self._cut_probs()
        cdfs = (cut.pow(value) * (1.0 - cut).pow(1.0 - value) + cut - 1.0) / (2.0 * cut - 1.0)
        unbounded = dg.where(self._outside_unstable_region(), cdfs, value)
        return dg.where(value <= 0.0, dg.zeros_like(value), dg.where(value >= 1.0, dg.ones_like(value), unbounded))

    def icdf(self, value):
        cut = self._cut_probs()
        inverse = (dg.log1p(-cut + value * (2.0 * cut - 1.0)) - dg.log1p(-cut)) / (dg.log(cut) - dg.log1p(-cut))
        return dg.where(self._outside_unstable_region(), inverse, value)

    def entropy(self):
        log_probs0, log_probs1 = dg.log1p(-self.probs), dg.log(self.probs)
        return self.mean * (log_probs0 - log_probs1) - self._cont_bern_log_norm() - log_probs0
