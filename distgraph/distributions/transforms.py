"""torch.distributions.transforms' elementwise bijections: ExpTransform, AffineTransform, SigmoidTransform,
TanhTransform, ComposeTransform and any one's `.inv`. A transform maps x to y = t(x), inverts it with
`t.inv(y)`, and gives log|dy/dx| by `log_abs_det_jacobian(x, y)` (summed over `event_dim` rightmost dims);
`sign` is +1 or -1 for a monotone map (TransformedDistribution's cdf flips on -1). No caching: torch's
cache_size is taken and ignored, each call recomputes."""

import math

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.distributions import constraints
from distgraph.distributions.utils import sum_rightmost


class Transform:
    """y = self(x); subclasses define _call, _inverse, log_abs_det_jacobian and their (co)domains."""

    bijective = True
    sign = 1
    domain = constraints.real
    codomain = constraints.real

    def __init__(self, cache_size=0):
        if cache_size not in (0, 1):
            raise ValueError("cache_size must be 0 or 1")

    @property
    def event_dim(self):
        if self.domain.event_dim != self.codomain.event_dim:
            raise ValueError("Please use either .domain.event_dim or .codomain.event_dim")
        return self.domain.event_dim

    @property
    def inv(self):
        return _InverseTransform(self)

    def __call__(self, x):
        return self._call(x)

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
        self._inv = base

    domain = property(lambda self: self._inv.codomain)
    codomain = property(lambda self: self._inv.domain)
    sign = property(lambda self: self._inv.sign)
    inv = property(lambda self: self._inv)

    def __call__(self, x):
        return self._inv._inverse(x)

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


class AffineTransform(Transform):
    """y = loc + scale·x; loc and scale are numbers or tensors broadcast against x, and `event_dim`
    rightmost dims are one event (their log-det summed)."""

    def __init__(self, loc, scale, event_dim=0, cache_size=0):
        super().__init__(cache_size)
        self.loc, self.scale, self._event_dim = loc, scale, event_dim

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
    """parts applied first to last; the log-dets add up."""

    def __init__(self, parts, cache_size=0):
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
        return ComposeTransform([p.inv for p in reversed(self.parts)])

    def __call__(self, x):
        for part in self.parts:
            x = part(x)
        return x

    def log_abs_det_jacobian(self, x, y):
        if not self.parts:
            return dg.zeros_like(x)
        total = 0.0
        for part in self.parts:
            y_part = part(x)
            total = total + part.log_abs_det_jacobian(x, y_part)
            x = y_part
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
