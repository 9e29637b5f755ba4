"""MixtureSameFamily(mixture_distribution, component_distribution): a Categorical over k components picks
one of k distributions of one family, the rightmost batch dim of `component_distribution`
(torch.distributions.MixtureSameFamily).

log p(x) = logsumexp_k(log π_k + log p_k(x)); the mean and variance are the law of total expectation and
of total variance; cdf is Σ π_k F_k(x). A draw samples the category and every component, then gathers
the chosen one (no reparameterization, as torch's)."""

import distgraph as dg
from distgraph.distributions.constraints import Constraint
from distgraph.distributions.discrete import Categorical
from distgraph.distributions.distribution import Distribution


class _MixtureSupport(Constraint):
    """The components' support checked against x broadcast over the component dim: every component must
    hold x (torch's MixtureSameFamilyConstraint)."""

    def __init__(self, base):
        self.base = base

    is_discrete = property(lambda self: self.base.is_discrete)
    event_dim = property(lambda self: self.base.event_dim)

    def check(self, value):
        result = self.base.check(value.unsqueeze(-1 - self.event_dim))
        keep = value.ndim - self.event_dim
        return result.reshape(*(tuple(result.shape[:keep]) + (-1,))).all(-1)

    def __repr__(self):
        return f"MixtureSameFamilyConstraint({self.base!r})"


class MixtureSameFamily(Distribution):
    arg_constraints = {}
    has_rsample = False

    def __init__(self, mixture_distribution, component_distribution, validate_args=None):
        if not isinstance(mixture_distribution, Categorical):
            raise ValueError(" The Mixture distribution needs to be an  instance of torch.distributions.Categorical")
        if not isinstance(component_distribution, Distribution):
            raise ValueError("The Component distribution needs to be an instance of torch.distributions.Distribution")
        self._mixture_distribution, self._component_distribution = mixture_distribution, component_distribution
        mdbs, cdbs = tuple(mixture_distribution.batch_shape), tuple(component_distribution.batch_shape[:-1])
        for size1, size2 in zip(reversed(mdbs), reversed(cdbs)):
            if size1 != 1 and size2 != 1 and size1 != size2:
                raise ValueError(
                    f"`mixture_distribution.batch_shape` ({mdbs}) is not compatible with "
                    f"`component_distribution.batch_shape`({cdbs})"
                )
        km, kc = mixture_distribution.logits.shape[-1], component_distribution.batch_shape[-1]
        if km != kc:
            raise ValueError(
                f"`mixture_distribution component` ({km}) does not equal `component_distribution.batch_shape[-1]` "
                f"({kc})"
            )
        self._num_component = km
        self._event_ndims = len(component_distribution.event_shape)
        super().__init__(cdbs, tuple(component_distribution.event_shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = tuple(batch_shape)
        new = self._get_checked_instance(MixtureSameFamily, _instance)
        new._component_distribution = self._component_distribution.expand(batch_shape + (self._num_component,))
        new._mixture_distribution = self._mixture_distribution.expand(batch_shape)
        new._num_component, new._event_ndims = self._num_component, self._event_ndims
        Distribution.__init__(new, batch_shape, self._event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    mixture_distribution = property(lambda self: self._mixture_distribution)
    component_distribution = property(lambda self: self._component_distribution)
    support = property(lambda self: _MixtureSupport(self._component_distribution.support))

    @property
    def mean(self):
        probs = self._pad_mixture_dimensions(self._mixture_distribution.probs)
        return (probs * self._component_distribution.mean).sum(-1 - self._event_ndims)  # (B, E)

    @property
    def variance(self):
        probs = self._pad_mixture_dimensions(self._mixture_distribution.probs)
        components = self._component_distribution
        mean_cond_var = (probs * components.variance).sum(-1 - self._event_ndims)
        var_cond_mean = (probs * (components.mean - self._pad(self.mean)).pow(2)).sum(-1 - self._event_ndims)
        return mean_cond_var + var_cond_mean

    def cdf(self, x):
        cdf_x = self._component_distribution.cdf(self._pad(x))
        return (cdf_x * self._mixture_distribution.probs).sum(-1)

    def log_prob(self, x):
        self._checked(x)
        log_prob_x = self._component_distribution.log_prob(self._pad(x))  # (S, B, k)
        log_mix_prob = dg.log_softmax(self._mixture_distribution.logits, -1)  # (B, k)
        return (log_prob_x + log_mix_prob).logsumexp(-1)  # (S, B)

    def sample(self, sample_shape=()):
        sample_shape = tuple(sample_shape)
        with dg.no_grad():
            gather_dim = len(sample_shape) + len(self._batch_shape)
            mix = self._mixture_distribution.expand(self._batch_shape).sample(sample_shape)  # (S, B)
            components = self._component_distribution.sample(sample_shape)  # (S, B, k, E)
            index = mix.reshape(*(tuple(mix.shape) + (1,) * (self._event_ndims + 1)))
            index = index.expand(*(tuple(mix.shape) + (1,) + self._event_shape))
            return components.gather(gather_dim, index.contiguous()).squeeze(gather_dim)

    def _pad(self, x):
        return x.unsqueeze(-1 - self._event_ndims)

    def _pad_mixture_dimensions(self, x):
        """The mixture's probs (B', k) as (B', 1…, k, 1…): room for the batch dims it lacks and the event."""
        dist_batch_ndims = len(self._batch_shape)
        cat_batch_ndims = len(self._mixture_distribution.batch_shape)
        pad_ndims = 0 if cat_batch_ndims == 1 else dist_batch_ndims - cat_batch_ndims
        xs = tuple(x.shape)
        return x.reshape(*(xs[:-1] + (1,) * pad_ndims + xs[-1:] + (1,) * self._event_ndims))

    def __repr__(self):
        return f"MixtureSameFamily(\n  {self._mixture_distribution},\n  {self._component_distribution})"
