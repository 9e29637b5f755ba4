"""VonMises(loc, concentration): the circular normal on [-π, π), as torch's.

log_prob needs log I₀(κ), and variance log I₁(κ); both use torch's polynomial approximations
(Abramowitz & Stegun 9.8.1-9.8.4), so the values match torch's rather than the exact Bessel functions.
Draws follow torch's rejection sampler (Best & Fisher, 1979), run in float64 and cast back; it has no
reparameterization (has_rsample False, as torch's)."""

import math

import distgraph as dg
from distgraph.distributions import constraints
from distgraph.distributions.continuous import _Family

_I0_COEF_SMALL = [1.0, 3.5156229, 3.0899424, 1.2067492, 0.2659732, 0.0360768, 0.0045813]
_I0_COEF_LARGE = [
    0.39894228,
    0.01328592,
    0.00225319,
    -0.00157565,
    0.00916281,
    -0.02057706,
    0.02635537,
    -0.01647633,
    0.00392377,
]
_I1_COEF_SMALL = [0.5, 0.87890594, 0.51498869, 0.15084934, 0.02658733, 0.00301532, 0.00032411]
_I1_COEF_LARGE = [
    0.39894228,
    -0.03988024,
    -0.00362018,
    0.00163801,
    -0.01031555,
    0.02282967,
    -0.02895312,
    0.01787654,
    -0.00420059,
]
_COEF_SMALL = [_I0_COEF_SMALL, _I1_COEF_SMALL]
_COEF_LARGE = [_I0_COEF_LARGE, _I1_COEF_LARGE]


def _eval_poly(y, coef):
    """Σ coef[i]·yⁱ by Horner's rule."""
    result = coef[-1]
    for c in reversed(coef[:-1]):
        result = c + y * result
    return result


def _log_modified_bessel_fn(x, order=0):
    """log I_order(x) for x > 0 and order 0 or 1: a series in (x/3.75)² below 3.75, an asymptotic one in
    3.75/x above."""
    y = (x / 3.75) * (x / 3.75)
    small = _eval_poly(y, _COEF_SMALL[order])
    if order == 1:
        small = x.abs() * small
    large = x - 0.5 * x.log() + _eval_poly(3.75 / x, _COEF_LARGE[order]).log()
    return dg.where(x < 3.75, small.log(), large)


def _rejection_sample(loc, concentration, proposal_r, x):
    """Draws into x wherever a proposal is accepted, until every element has one, then wrapped to [-π, π)."""
    done = dg.zeros(x.shape, dtype=dg.bool, device=loc.device)
    while not bool(done.all()):
        u1, u2, u3 = dg.rand((3,) + tuple(x.shape), dtype=loc.dtype, device=loc.device).unbind()
        z = dg.cos(math.pi * u1)
        f = (1 + proposal_r * z) / (proposal_r + z)
        c = concentration * (proposal_r - f)
        accept = (c * (2 - c) - u2 > 0) | ((c / u2).log() + 1 - c >= 0)
        x = dg.where(accept, (u3 - 0.5).sign() * f.acos(), x)
        done = done | accept
    return (x + math.pi + loc) % (2 * math.pi) - math.pi


class VonMises(_Family):
    arg_constraints = {"loc": constraints.real, "concentration": constraints.positive}
    support = constraints.real
    _params = ("loc", "concentration")

    def __init__(self, loc, concentration, validate_args=None):
        self._set_params((loc, concentration), validate_args)

    mean = mode = property(lambda self: self.loc)

    @property
    def variance(self):
        """1 - I₁(κ)/I₀(κ): the circular variance."""
        k = self.concentration
        return 1 - (_log_modified_bessel_fn(k, order=1) - _log_modified_bessel_fn(k, order=0)).exp()

    def log_prob(self, value):
        self._checked(value)
        log_prob = self.concentration * dg.cos(value - self.loc)
        return log_prob - math.log(2 * math.pi) - _log_modified_bessel_fn(self.concentration, order=0)

    def _proposal_r(self, kappa):
        """The wrapped-Cauchy envelope's parameter; 1/κ + κ for tiny κ, where the closed form cancels."""
        tau = 1 + (1 + 4 * kappa**2).sqrt()
        rho = (tau - (2 * tau).sqrt()) / (2 * kappa)
        return dg.where(kappa < 1e-05, 1 / kappa + kappa, (1 + rho**2) / (2 * rho))

    def sample(self, sample_shape=()):
        with dg.no_grad():
            loc, kappa = self.loc.to(dg.float64), self.concentration.to(dg.float64)
            x = dg.zeros(self._extended_shape(sample_shape), dtype=dg.float64, device=loc.device)
            return _rejection_sample(loc, kappa, self._proposal_r(kappa), x).to(self.loc.dtype)
