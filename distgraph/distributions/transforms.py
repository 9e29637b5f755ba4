"""torch.distributions.transforms' elementwise bijections: ExpTransform, AffineTransform, SigmoidTransform,
TanhTransform, PowerTransform, ComposeTransform and any one's `.inv`. A transform maps x to y = t(x), inverts it with
`t.inv(y)`, and gives log|dy/dx| by `log_abs_det_jacobian(x, y)` (summed over `event_dim` rightmost dims);
`sign` is +1 or -1 for a monotone map (TransformedDistribution's cdf flips on -1).

Caching follows torch: with cache_size=1 a transform remembers its last (x, y) pair, keyed by the identity
of the tensor objects, in both directions; `t.inv` is one object per transform and shares that cache. This
is what keeps a squashed Gaussian finite: log_prob(y) of the y that rsample just produced reuses the exact
x, where atanh(y) of a y that rounded to 1.0 would be inf. cache_size=0 (the default) recomputes each call."""

import math

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.distributions import constraints
from distgraph.distributions.utils import broadcast_all, sum_rightmost


class Transform:
    """y = self(x); subclasses define _call, _inverse, log_abs_det_jacobian and their (co)domains."""

    bijective = True
    sign = 1
    domain = constraints.real
    codomain = constraints.real

    def __init__(self, cache_size=0):
        if cache_size not in (0, 1):
            raise ValueError("cache_size must be 0 or 1")
        self._cache_size = cache_size
        self._cached_x_y = None, None
        self._inv = None

    @property
    def event_dim(self):
        if self.domain.event_dim != self.codomain.event_dim:
            raise ValueError("Please use either .domain.event_dim or .codomain.event_dim")
        return self.domain.event_dim

    @property
    def inv(self):
        """One inverse object per transform (t.inv.inv is t), so the two directions share one cache."""
        if self._inv is None:
            self._inv = _InverseTransform(self)
        return self._inv

    def with_cache(self, cache_size=1):
        """This transform with the given cache_size (itself when it already has it)."""
        if self._cache_size == cache_size:
            return self
        if type(self).__init__ is Transform.__init__:
            return type(self)(cache_size=cache_size)
        raise NotImplementedError(f"{type(self)}.with_cache is not implemented")

    def __call__(self, x):
        return self._through_cache(x, self._call, side=0)

    def _inv_call(self, y):
        """x = self.inv(y)."""
        return self._through_cache(y, self._inverse, side=1)

    def _through_cache(self, value, compute, side):
        """compute(value), or the other half of the cached (x, y) pair when value is the very tensor cached
        on its side (0: x, 1: y); with a cache the new pair replaces the old one."""
        if self._cache_size == 0:
            return compute(value)
        if value is self._cached_x_y[side]:
            return self._cached_x_y[1 - side]
        result = compute(value)
        self._cached_x_y = (value, result) if side == 0 else (result, value)
        return result

    def _call(self, x):
        raise NotImplementedError(f"{type(self).__name__} has no forward map")

    def _inverse(self, y):
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def log_abs_det_jacobian(self, x, y):
        raise NotImplementedError(f"{type(self).__name__} has no log_abs_det_jacobian")

    def forward_shape(self, shape):
        return tuple(shape)

    def inverse_shape(self, shape):
        return tuple(shape)

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        return type(self).__name__ + "()"


class _InverseTransform(Transform):
    """`base.inv`: base run backwards; its inverse is base again."""

    def __init__(self, base):
        super().__init__(cache_size=base._cache_size)
        self._inv = base

    domain = property(lambda self: self._inv.codomain)
    codomain = property(lambda self: self._inv.domain)
    sign = property(lambda self: self._inv.sign)
    bijective = property(lambda self: self._inv.bijective)
    inv = property(lambda self: self._inv)

    def with_cache(self, cache_size=1):
        return self._inv.with_cache(cache_size).inv

    def __call__(self, x):
        return self._inv._inv_call(x)

    def log_abs_det_jacobian(self, x, y):
        return -self._inv.log_abs_det_jacobian(y, x)

    def forward_shape(self, shape):
        return self._inv.inverse_shape(shape)

    def inverse_shape(self, shape):
        return self._inv.forward_shape(shape)

    def __eq__(self, other):
        return isinstance(other, _InverseTransform) and self._inv == other._inv

    def __hash__(self):
        return hash(("inv", self._inv))

    def __repr__(self):
        return f"_InverseTransform({self._inv!r})"


class ExpTransform(Transform):
    codomain = constraints.positive

    def _call(self, x):
        return x.exp()

    def _inverse(self, y):
        return y.log()

    def log_abs_det_jacobian(self, x, y):
        return x


class SigmoidTransform(Transform):
    """y = sigmoid(x), kept inside [tiny, 1 - eps] as torch's so its inverse stays finite."""

    codomain = constraints.unit_interval

    def _call(self, x):
        info = dg.finfo(x.dtype)
        return dg.sigmoid(x).clamp(min=info.tiny, max=1.0 - info.eps)

    def _inverse(self, y):
        info = dg.finfo(y.dtype)
        y = y.clamp(min=info.tiny, max=1.0 - info.eps)
        return y.log() - dg.log1p(-y)

    def log_abs_det_jacobian(self, x, y):
        return -F.softplus(-x) - F.softplus(x)


class TanhTransform(Transform):
    codomain = constraints.interval(-1.0, 1.0)

    def _call(self, x):
        return x.tanh()

    def _inverse(self, y):
        return y.atanh()

    def log_abs_det_jacobian(self, x, y):
        """log(1 - tanh²x) = 2(log 2 - x - softplus(-2x)), stable for large |x| (torch's form)."""
        return 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))


class AbsTransform(Transform):
    """y = |x|: not bijective; its inverse picks the nonnegative root (torch's), and it has no log-det."""

    bijective = False
    codomain = constraints.positive

    def _call(self, x):
        return x.abs()

    def _inverse(self, y):
        return y


class PowerTransform(Transform):
    """y = x^exponent on the positive reals; exponent is a number or tensor broadcast against x (torch's
    Weibull, InverseGamma and Kumaraswamy are built on it)."""

    domain = constraints.positive
    codomain = constraints.positive

    def __init__(self, exponent, cache_size=0):
        super().__init__(cache_size)
        (self.exponent,) = broadcast_all(exponent)

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return PowerTransform(self.exponent, cache_size=cache_size)

    sign = property(lambda self: self.exponent.sign())

    def _call(self, x):
        return x.pow(self.exponent)

    def _inverse(self, y):
        return y.pow(1 / self.exponent)

    def log_abs_det_jacobian(self, x, y):
        return (self.exponent * y / x).abs().log()

    def forward_shape(self, shape):
        return tuple(dg.broadcast_shapes(tuple(shape), tuple(self.exponent.shape)))

    inverse_shape = forward_shape

    def __eq__(self, other):
        return isinstance(other, PowerTransform) and _same(self.exponent, other.exponent)

    __hash__ = Transform.__hash__

    def __repr__(self):
        return f"PowerTransform(exponent={self.exponent})"


class AffineTransform(Transform):
    """y = loc + scale·x; loc and scale are numbers or tensors broadcast against x, and `event_dim`
    rightmost dims are one event (their log-det summed)."""

    def __init__(self, loc, scale, event_dim=0, cache_size=0):
        super().__init__(cache_size)
        self.loc, self.scale, self._event_dim = loc, scale, event_dim

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return AffineTransform(self.loc, self.scale, self._event_dim, cache_size=cache_size)

    event_dim = property(lambda self: self._event_dim)
    domain = property(lambda self: _event_real(self._event_dim))
    codomain = property(lambda self: _event_real(self._event_dim))

    @property
    def sign(self):
        if isinstance(self.scale, int | float):
            return 1 if float(self.scale) > 0 else -1 if float(self.scale) < 0 else 0
        return self.scale.sign()

    def _call(self, x):
        return self.loc + self.scale * x

    def _inverse(self, y):
        return (y - self.loc) / self.scale

    def log_abs_det_jacobian(self, x, y):
        if isinstance(self.scale, int | float):
            result = dg.full_like(x, math.log(abs(self.scale)))
        else:
            result = self.scale.abs().log()
        shape = tuple(x.shape)
        if self._event_dim:
            result = sum_rightmost(result.expand(*dg.broadcast_shapes(tuple(result.shape), shape)), self._event_dim)
            shape = shape[: -self._event_dim]
        return result.expand(*shape)

    def _param_shape(self):
        return dg.broadcast_shapes(*(tuple(getattr(p, "shape", ())) for p in (self.loc, self.scale)))

    def forward_shape(self, shape):
        return tuple(dg.broadcast_shapes(tuple(shape), tuple(self._param_shape())))

    inverse_shape = forward_shape

    def __eq__(self, other):
        if not isinstance(other, AffineTransform):
            return False
        return all(_same(getattr(self, n), getattr(other, n)) for n in ("loc", "scale")) and (
            self._event_dim == other._event_dim
        )

    __hash__ = Transform.__hash__

    def __repr__(self):
        return f"AffineTransform(loc={self.loc}, scale={self.scale}, event_dim={self._event_dim})"


class ComposeTransform(Transform):
    """parts applied first to last; the log-dets add up. The parts do the caching: cache_size=1 gives each
    part a cache (`with_cache`), as torch's."""

    def __init__(self, parts, cache_size=0):
        if cache_size:
            parts = [part.with_cache(cache_size) for part in parts]
        super().__init__(cache_size)
        self.parts = list(parts)

    domain = property(lambda self: self.parts[0].domain if self.parts else constraints.real)
    codomain = property(lambda self: self.parts[-1].codomain if self.parts else constraints.real)

    @property
    def sign(self):
        sign = 1
        for part in self.parts:
            sign = sign * part.sign
        return sign

    @property
    def inv(self):
        if self._inv is None:
            self._inv = ComposeTransform([p.inv for p in reversed(self.parts)])
            self._inv._inv = self
        return self._inv

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return ComposeTransform(self.parts, cache_size=cache_size)

    def __call__(self, x):
        for part in self.parts:
            x = part(x)
        return x

    def log_abs_det_jacobian(self, x, y):
        """Sum of the parts' log-dets; the intermediates are recomputed (free when the parts cache) and
        the last part is given y itself, as torch's."""
        if not self.parts:
            return dg.zeros_like(x)
        xs = [x]
        for part in self.parts[:-1]:
            xs.append(part(xs[-1]))
        xs.append(y)
        total = 0.0
        for part, x_part, y_part in zip(self.parts, xs[:-1], xs[1:], strict=True):
            total = total + part.log_abs_det_jacobian(x_part, y_part)
        return total

    def forward_shape(self, shape):
        for part in self.parts:
            shape = part.forward_shape(shape)
        return tuple(shape)

    def inverse_shape(self, shape):
        for part in reversed(self.parts):
            shape = part.inverse_shape(shape)
        return tuple(shape)

    def __eq__(self, other):
        return isinstance(other, ComposeTransform) and self.parts == other.parts

    __hash__ = Transform.__hash__

    def __repr__(self):
        return "ComposeTransform(\n    " + ",\n    ".join(repr(p) for p in self.parts) + "\n)"


def _event_real(event_dim):
    return constraints.independent(constraints.real, event_dim) if event_dim else constraints.real


def _same(a, b):
    """Two numbers or tensors equal everywhere (torch's AffineTransform.__eq__)."""
    if isinstance(a, dg.Tensor) or isinstance(b, dg.Tensor):
        a = a if isinstance(a, dg.Tensor) else dg.tensor(float(a))
        return tuple(a.shape) == tuple(getattr(b, "shape", ())) and bool((a == b).all())
    return a == b


identity_transform = ComposeTransform([])
