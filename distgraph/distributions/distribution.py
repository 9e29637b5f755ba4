"""The Distribution base (torch.distributions.Distribution): shapes, argument and sample validation, and
the defaults every family overrides.

A distribution has a `batch_shape` (independent, differently parameterized copies) and an
`event_shape` (one draw's shape); a sample of `sample_shape` has shape sample + batch + event. With
validation on (the default, as torch's under `__debug__`; `validate_args=False` or
`Distribution.set_default_validate_args(False)` turn it off) parameters are checked against
`arg_constraints` at construction and values against `support` in log_prob/cdf, with torch's
ValueError messages.
"""

import distgraph as dg
from distgraph.distributions import constraints
from distgraph.distributions.utils import lazy_property


class Distribution:
    has_rsample = False
    has_enumerate_support = False
    _validate_args = __debug__
    arg_constraints = {}
    support = None

    @staticmethod
    def set_default_validate_args(value):
        if value not in (True, False):
            raise ValueError(f"set_default_validate_args expects True or False, got {value!r}")
        Distribution._validate_args = value

    def __init__(self, batch_shape=(), event_shape=(), validate_args=None):
        self._batch_shape, self._event_shape = tuple(batch_shape), tuple(event_shape)
        if validate_args is not None:
            self._validate_args = validate_args
        if not self._validate_args:
            return
        for param, constraint in self.arg_constraints.items():
            if constraints.is_dependent(constraint):
                continue
            if param not in self.__dict__ and isinstance(getattr(type(self), param, None), lazy_property):
                continue  # not given (probs when built from logits): nothing to check
            value = getattr(self, param)
            if not bool(constraint.check(value).all()):
                raise ValueError(
                    f"Expected parameter {param} (Tensor of shape {tuple(value.shape)}) of "
                    f"distribution {self!r} to satisfy the constraint {constraint!r}, but found invalid "
                    f"values:\n{value}"
                )

    @property
    def batch_shape(self):
        return self._batch_shape

    @property
    def event_shape(self):
        return self._event_shape

    def expand(self, batch_shape, _instance=None):
        raise NotImplementedError(f"{type(self).__name__}.expand is not implemented")

    def _get_checked_instance(self, cls, _instance=None):
        if _instance is None and type(self).__init__ != cls.__init__:
            raise NotImplementedError(
                f"Subclass {type(self).__name__} of {cls.__name__} that defines a custom __init__ method must also "
                "define a custom .expand() method."
            )
        return self.__new__(type(self)) if _instance is None else _instance

    # ---- sampling ---------------------------------------------------------------------------------
    def _extended_shape(self, sample_shape=()):
        return tuple(sample_shape) + self._batch_shape + self._event_shape

    def sample(self, sample_shape=()):
        """A draw without a graph (a reparameterized family's rsample under no_grad)."""
        with dg.no_grad():
            return self.rsample(sample_shape)

    def rsample(self, sample_shape=()):
        raise NotImplementedError(f"{type(self).__name__} has no rsample (has_rsample is False): use sample()")

    def sample_n(self, n):
        return self.sample((n,))

    # ---- what a family defines --------------------------------------------------------------------
    def log_prob(self, value):
        raise NotImplementedError

    def cdf(self, value):
        raise NotImplementedError(f"{type(self).__name__} has no cdf")

    def icdf(self, value):
        raise NotImplementedError(f"{type(self).__name__} has no icdf")

    def entropy(self):
        raise NotImplementedError(f"{type(self).__name__} has no entropy")

    def enumerate_support(self, expand=True):
        raise NotImplementedError(f"{type(self).__name__} has no enumerable support")

    @property
    def mean(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement mean")

    @property
    def mode(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement mode")

    @property
    def variance(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement variance")

    @property
    def stddev(self):
        return self.variance.sqrt()

    def perplexity(self):
        return dg.exp(self.entropy())

    # ---- validation -------------------------------------------------------------------------------
    def _checked(self, value):
        """value, validated against the support first when validation is on."""
        if self._validate_args:
            self._validate_sample(value)
        return value

    def _validate_sample(self, value):
        """torch's checks of a log_prob/cdf argument: a Tensor, its rightmost dims the event shape, the rest
        broadcastable with the batch shape, every value in the support."""
        if not isinstance(value, dg.Tensor):
            raise ValueError("The value argument to log_prob must be a Tensor")
        event_dim_start = value.ndim - len(self._event_shape)
        if tuple(value.shape[event_dim_start:]) != self._event_shape:
            raise ValueError(
                f"The right-most size of value must match event_shape: {tuple(value.shape)} vs {self._event_shape}."
            )
        actual, expected = tuple(value.shape), self._batch_shape + self._event_shape
        for i, j in zip(reversed(actual), reversed(expected)):
            if i != 1 and j != 1 and i != j:
                raise ValueError(f"Value is not broadcastable with batch_shape+event_shape: {actual} vs {expected}.")
        support = self.support
        if support is None:
            return
        if not bool(support.check(value).all()):
            raise ValueError(
                f"Expected value argument (Tensor of shape {tuple(value.shape)}) to be within the "
                f"support ({support!r}) of the distribution {self!r}, but found invalid values:\n{value}"
            )

    def __repr__(self):
        names = [k for k in self.arg_constraints if k in self.__dict__]
        return f"{type(self).__name__}({', '.join(f'{p}: {describe(self.__dict__[p])}' for p in names)})"


def describe(param):
    """A parameter as torch's repr shows it: a 0-d one as its number, another one-element one as the
    tensor, a larger one by its shape."""
    if param.ndim == 0:
        return param.item()
    return param if param.numel() == 1 else tuple(param.shape)
