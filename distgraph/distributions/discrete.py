"""Bernoulli, Categorical, OneHotCategorical and OneHotCategoricalStraightThrough, parameterized by
`probs` or `logits` (exactly one; the other is computed on first use). Draws have no reparameterization
(has_rsample False, as torch's), except the straight-through one's rsample, which passes probs' gradient;
log_prob and entropy are differentiable in either parameter. `_ProbsOrLogits` is the binary families'
shared parameter handling (Bernoulli here; Binomial, Geometric and NegativeBinomial in counts.py;
LogitRelaxedBernoulli in relaxed.py)."""

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.distributions import constraints
from distgraph.distributions.distribution import Distribution
from distgraph.distributions.utils import broadcast_all, lazy_property, logits_to_probs, probs_to_logits


def _one_of(name, probs, logits):
    if (probs is None) == (logits is None):
        raise ValueError(f"{name}: Either `probs` or `logits` must be specified, but not both.")


class _ProbsOrLogits(Distribution):
    """A family given `probs` or `logits` (exactly one; the other computed on first use) and `_others`,
    parameters broadcast with it; `_param` is whichever of probs and logits was given."""

    _others = ()

    def _set_params(self, others, probs, logits, validate_args):
        _one_of(type(self).__name__, probs, logits)
        given = "probs" if probs is not None else "logits"
        *values, param = broadcast_all(*others, probs if probs is not None else logits)
        for name, value in zip(self._others, values):
            setattr(self, name, value.to(param.dtype))
        setattr(self, given, param)
        self._param = param
        Distribution.__init__(self, tuple(param.shape), validate_args=validate_args)

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits, is_binary=True)

    param_shape = property(lambda self: tuple(self._param.shape))

    def expand(self, batch_shape, _instance=None):
        mro = type(self).__mro__
        new = self._get_checked_instance(mro[mro.index(_ProbsOrLogits) - 1], _instance)  # the family's class
        for name in self._others + ("probs", "logits"):
            if name in self.__dict__:
                setattr(new, name, self.__dict__[name].expand(*batch_shape))
        new._param = new.__dict__["probs" if "probs" in self.__dict__ else "logits"]
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


class Bernoulli(_ProbsOrLogits):
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.boolean
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        self._set_params((), probs, logits, validate_args)

    mean = property(lambda self: self.probs)
    variance = property(lambda self: self.probs * (1 - self.probs))

    @property
    def mode(self):
        mode = (self.probs >= 0.5).to(self.probs.dtype)
        return dg.where(self.probs == 0.5, float("nan"), mode)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        with dg.no_grad():
            return dg.bernoulli(self.probs.expand(*shape).contiguous())

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        if isinstance(value, int | float):  # a Python number, which torch broadcasts (broadcast_all)
            value = dg.tensor(float(value), dtype=self.logits.dtype, device=self.logits.device)
        logits, value = dg.broadcast_tensors(self.logits, value.to(self.logits.dtype))
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none")

    def entropy(self):
        return F.binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none")

    def enumerate_support(self, expand=True):
        values = dg.arange(2, dtype=self._param.dtype, device=self._param.device)
        values = values.reshape((-1,) + (1,) * len(self._batch_shape))
        return values.expand(2, *self._batch_shape) if expand else values


class Categorical(Distribution):
    """One of K categories (the last dim of probs/logits); probs are normalized to sum to 1 and logits
    shifted so their logsumexp is 0, as torch's."""

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        _one_of("Categorical", probs, logits)
        param = probs if probs is not None else logits
        if param.ndim < 1:
            raise ValueError("`probs` or `logits` parameter must be at least one-dimensional.")
        if probs is not None:
            self.probs = probs / probs.sum(-1, keepdim=True)
        else:
            self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self._param = self.probs if probs is not None else self.logits
        self._num_events = self._param.shape[-1]
        super().__init__(tuple(self._param.shape[:-1]), validate_args=validate_args)

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Categorical, _instance)
        shape = tuple(batch_shape) + (self._num_events,)
        for name in ("probs", "logits"):
            if name in self.__dict__:
                setattr(new, name, self.__dict__[name].expand(*shape))
                new._param = getattr(new, name)
        new._num_events = self._num_events
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def support(self):
        return constraints.integer_interval(0, self._num_events - 1)

    param_shape = property(lambda self: tuple(self._param.shape))
    mean = property(lambda self: dg.full(self._extended_shape(), float("nan"), dtype=self.probs.dtype))
    mode = property(lambda self: self.probs.argmax(-1))
    variance = property(lambda self: dg.full(self._extended_shape(), float("nan"), dtype=self.probs.dtype))

    def sample(self, sample_shape=()):
        """Inverse-CDF draws: the count of cumulative probabilities below u·total, u uniform."""
        sample_shape = tuple(sample_shape)
        with dg.no_grad():
            probs = self.probs.expand(*(sample_shape + self._batch_shape + (self._num_events,)))
            cum = probs.cumsum(-1)
            u = dg.rand(sample_shape + self._batch_shape, dtype=probs.dtype, device=probs.device)
            below = cum[..., :-1] <= (u * cum[..., -1]).unsqueeze(-1)
            return below.sum(-1).long()

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = value.long().unsqueeze(-1)
        value, log_pmf = dg.broadcast_tensors(value, self.logits)
        return log_pmf.gather(-1, value[..., :1]).squeeze(-1)

    def entropy(self):
        logits = self.logits.clamp(min=dg.finfo(self.logits.dtype).min)
        return -(logits * self.probs).sum(-1)

    def enumerate_support(self, expand=True):
        values = dg.arange(self._num_events, device=self._param.device)
        values = values.reshape((-1,) + (1,) * len(self._batch_shape))
        return values.expand(self._num_events, *self._batch_shape) if expand else values


class OneHotCategorical(Distribution):
    """A Categorical draw as a one-hot vector of length K (event_shape (K,))."""

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}
    support = constraints.one_hot
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        self._categorical = Categorical(probs, logits)
        param = self._categorical._param
        super().__init__(tuple(param.shape[:-1]), tuple(param.shape[-1:]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(OneHotCategorical, _instance)
        new._categorical = self._categorical.expand(batch_shape)
        Distribution.__init__(new, batch_shape, self._event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    probs = property(lambda self: self._categorical.probs)
    logits = property(lambda self: self._categorical.logits)
    param_shape = property(lambda self: self._categorical.param_shape)
    mean = property(lambda self: self._categorical.probs)
    variance = property(lambda self: self._categorical.probs * (1 - self._categorical.probs))

    @property
    def mode(self):
        probs = self._categorical.probs
        return F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)

    def sample(self, sample_shape=()):
        probs = self._categorical.probs
        indices = self._categorical.sample(sample_shape)
        return F.one_hot(indices, self._num_events()).to(probs.dtype)

    def _num_events(self):
        return self._event_shape[0]

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self._categorical.log_prob(value.argmax(-1))

    def entropy(self):
        return self._categorical.entropy()

    def enumerate_support(self, expand=True):
        n = self._num_events()
        values = dg.eye(n, dtype=self._categorical._param.dtype, device=self._categorical._param.device)
        values = values.reshape((n,) + (1,) * len(self._batch_shape) + (n,))
        return values.expand(n, *self._batch_shape, n) if expand else values

    def __repr__(self):
        return f"{type(self).__name__}({self._categorical!r})"


class OneHotCategoricalStraightThrough(OneHotCategorical):
    """Straight-through estimator (Bengio et al., 2013): rsample's value is a one-hot draw and its
    gradient that of probs."""

    has_rsample = True

    def rsample(self, sample_shape=()):
        samples = self.sample(sample_shape)
        probs = self._categorical.probs
        return samples + (probs - probs.detach())
