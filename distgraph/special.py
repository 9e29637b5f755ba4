"""`distgraph.special`: torch.special's names (torch 2.13), every real-valued function.

Most are distgraph ops under another name (`expit` is `sigmoid`, `gammaln` is `lgamma`, `psi` is
`digamma`); the rest live in ops/special_fns.py (Bessel, Airy, erfcx, entr, ndtr, zeta, the incomplete
gammas, ...) and ops/polynomials.py (the orthogonal polynomials). softmax and log_softmax take a
required `dim` and a keyword-only `dtype`, as torch.special's do.
"""

from distgraph.ops import elementwise as _ew
from distgraph.ops import linalg as _linalg
from distgraph.ops import math_extra as _mx
from distgraph.ops.polynomials import (  # noqa: F401
    chebyshev_polynomial_t,
    chebyshev_polynomial_u,
    chebyshev_polynomial_v,
    chebyshev_polynomial_w,
    hermite_polynomial_h,
    hermite_polynomial_he,
    laguerre_polynomial_l,
    legendre_polynomial_p,
    shifted_chebyshev_polynomial_t,
    shifted_chebyshev_polynomial_u,
    shifted_chebyshev_polynomial_v,
    shifted_chebyshev_polynomial_w,
)
from distgraph.ops.reduction import logsumexp  # noqa: F401
from distgraph.ops.special_fns import (  # noqa: F401
    airy_ai,
    bessel_j0,
    bessel_j1,
    bessel_y0,
    bessel_y1,
    entr,
    erfcx,
    gammainc,
    gammaincc,
    i0e,
    i1,
    i1e,
    log_ndtr,
    modified_bessel_i0,
    modified_bessel_i1,
    modified_bessel_k0,
    modified_bessel_k1,
    ndtr,
    ndtri,
    scaled_modified_bessel_k0,
    scaled_modified_bessel_k1,
    spherical_bessel_j0,
    xlog1py,
    zeta,
)
from distgraph.ops.torch_keywords import accept as _accept_torch_keywords

digamma = psi = _mx.digamma
polygamma, gammaln, multigammaln = _mx.polygamma, _mx.lgamma, _mx.mvlgamma
erf, erfc, erfinv = _ew.erf, _mx.erfc, _mx.erfinv
exp2, expm1, log1p, expit, round = _ew.exp2, _ew.expm1, _ew.log1p, _ew.sigmoid, _ew.round
logit, i0, sinc, xlogy = _mx.logit, _mx.i0, _mx.sinc, _mx.xlogy


def softmax(input, dim, *, dtype=None):
    return _linalg.softmax(input, dim, dtype)


def log_softmax(input, dim, *, dtype=None):
    return _linalg.log_softmax(input, dim, dtype)


_accept_torch_keywords(globals(), "special")  # out=, axis=, keepdims= (ops/torch_keywords.py)
