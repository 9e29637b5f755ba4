"""Gamma(α, 1) draws with a reparameterized gradient (torch's `_standard_gamma`), the one random op whose
gradient is not zero: distributions.Gamma and Beta build their rsample on it.

The gradient is implicit reparameterization (Figurnov, Mohamed & Mnih, 2018): a draw z = F⁻¹(u; α) with
u held fixed moves with α by dz/dα = -(∂F/∂α)(z; α) / f(z; α), F the regularized lower incomplete gamma
function and f the density. ∂F/∂α has no closed form; it is a central difference of scipy's gammainc
(accurate to ~1e-15 relative) in float64 with a step of 1e-5·α (α < 1) or 1e-5·√α (the scale on which
F moves in α), which leaves ~1e-9 relative error: closer than torch's own series and asymptotic
approximations in `_standard_gamma_grad` (tests hold the two together). The gradient has no gradient
itself (torch's has none either).
"""

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import device_of_array
from distgraph.ops import elementwise as ew
from distgraph.ops.math_extra import _special
from distgraph.ops.registry import defop
from distgraph.ops.rng import generator


@defop("standard_gamma", save=(0,), saves_output=True)
def _standard_gamma(xp, alpha):
    """One draw per element, at least the dtype's smallest normal number (torch clamps there too, so a
    draw that underflows keeps a finite log and gradient)."""
    z = generator(device_of_array(alpha)).standard_gamma(alpha.astype(np.float64))
    return xp.maximum(z, np.finfo(alpha.dtype).tiny).astype(alpha.dtype, copy=False)


_standard_gamma.random = True  # graph passes neither merge (CSE) nor constant-fold a draw


def standard_gamma_grad(xp, alpha, z):
    """dz/dα of a Gamma(α, 1) draw z, elementwise on arrays (see the module docstring)."""
    a, x = alpha.astype(np.float64), z.astype(np.float64)
    gammainc, gammaln = _special(xp, "gammainc"), _special(xp, "gammaln")
    h = 1e-5 * xp.where(a < 1, a, xp.sqrt(a))
    with np.errstate(all="ignore"):
        dF = (gammainc(a + h, x) - gammainc(a - h, x)) / (2 * h)
        log_density = (a - 1) * xp.log(x) - x - gammaln(a)
        return (-dF * xp.exp(-log_density)).astype(alpha.dtype, copy=False)


@_standard_gamma.grad
def _(ctx, g):
    alpha = ctx.inputs[0]
    d = standard_gamma_grad(alpha.device.xp, alpha.array, ctx.out.array)
    return ew.mul(g, Tensor(d, device=alpha.device))


def standard_gamma(alpha):
    """Gamma(alpha, 1) draws, differentiable in alpha (a floating tensor of positive values)."""
    return _standard_gamma(alpha)
