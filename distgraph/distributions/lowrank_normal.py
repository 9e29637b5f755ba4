"""LowRankMultivariateNormal(loc, cov_factor, cov_diag): a Normal whose covariance is W·Wᵀ + diag(D),
W of shape (n, m) with m usually much smaller than n (torch's).

Nothing n×n is factored: by the Woodbury identity and the matrix determinant lemma, log_prob and entropy
go through the m×m capacitance C = I + Wᵀ D⁻¹ W and its Cholesky factor (kept unbroadcast, as
torch's). rsample is loc + W·ε_m + √D·ε_n, so gradients reach all three parameters."""

import math

import distgraph as dg
from distgraph.distributions import constraints
from distgraph.distributions.distribution import Distribution
from distgraph.distributions.multivariate import _mahalanobis
from distgraph.distributions.utils import lazy_property


def _capacitance_tril(W, D):
    """Cholesky factor of C = I + Wᵀ D⁻¹ W, (..., m, m)."""
    m = W.shape[-1]
    K = (W.mT / D.unsqueeze(-2)) @ W
    return dg.linalg.cholesky(K + dg.eye(m, dtype=W.dtype, device=W.device))


def lowrank_logdet(W, D, capacitance_tril):
    """log det(W Wᵀ + D) = log det C + log det D (the matrix determinant lemma)."""
    return 2 * capacitance_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1) + D.log().sum(-1)


def lowrank_mahalanobis(W, D, x, capacitance_tril):
    """xᵀ (W Wᵀ + D)⁻¹ x = xᵀ D⁻¹ x - |L⁻¹ Wᵀ D⁻¹ x|² with L the capacitance's factor (Woodbury)."""
    Wt_Dinv_x = ((W.mT / D.unsqueeze(-2)) @ x.unsqueeze(-1)).squeeze(-1)
    return (x.pow(2) / D).sum(-1) - _mahalanobis(capacitance_tril, Wt_Dinv_x)


class LowRankMultivariateNormal(Distribution):
    arg_constraints = {
        "loc": constraints.real_vector,
        "cov_factor": constraints.independent(constraints.real, 2),
        "cov_diag": constraints.independent(constraints.positive, 1),
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, cov_factor, cov_diag, validate_args=None):
        if loc.ndim < 1:
            raise ValueError("loc must be at least one-dimensional.")
        event_shape = tuple(loc.shape[-1:])
        if cov_factor.ndim < 2:
            raise ValueError("cov_factor must be at least two-dimensional, with optional leading batch dimensions")
        if tuple(cov_factor.shape[-2:-1]) != event_shape:
            raise ValueError(f"cov_factor must be a batch of matrices with shape {event_shape[0]} x m")
        if tuple(cov_diag.shape[-1:]) != event_shape:
            raise ValueError(f"cov_diag must be a batch of vectors with shape {event_shape}")
        try:
            loc_, self.cov_factor, cov_diag_ = dg.broadcast_tensors(
                loc.unsqueeze(-1), cov_factor, cov_diag.unsqueeze(-1)
            )
        except (RuntimeError, ValueError) as e:
            raise ValueError(
                f"Incompatible batch shapes: loc {tuple(loc.shape)}, cov_factor {tuple(cov_factor.shape)}, "
                f"cov_diag {tuple(cov_diag.shape)}"
            ) from e
        self.loc, self.cov_diag = loc_[..., 0], cov_diag_[..., 0]
        self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag = cov_factor, cov_diag
        self._capacitance_tril = _capacitance_tril(cov_factor, cov_diag)
        super().__init__(tuple(self.loc.shape[:-1]), event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LowRankMultivariateNormal, _instance)
        loc_shape = tuple(batch_shape) + self._event_shape
        new.loc, new.cov_diag = self.loc.expand(*loc_shape), self.cov_diag.expand(*loc_shape)
        new.cov_factor = self.cov_factor.expand(*(loc_shape + tuple(self.cov_factor.shape[-1:])))
        new._unbroadcasted_cov_factor = self._unbroadcasted_cov_factor
        new._unbroadcasted_cov_diag = self._unbroadcasted_cov_diag
        new._capacitance_tril = self._capacitance_tril
        Distribution.__init__(new, batch_shape, self._event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _matrix_shape(self):
        return self._batch_shape + self._event_shape + self._event_shape

    mean = mode = property(lambda self: self.loc)

    @lazy_property
    def variance(self):
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        return (W.pow(2).sum(-1) + D).expand(*(self._batch_shape + self._event_shape))

    @lazy_property
    def scale_tril(self):
        """√D·chol(I + D^-½ W Wᵀ D^-½): the covariance's Cholesky factor without forming it first."""
        n = self._event_shape[0]
        d_sqrt = self._unbroadcasted_cov_diag.sqrt().unsqueeze(-1)
        Dinvsqrt_W = self._unbroadcasted_cov_factor / d_sqrt
        K = Dinvsqrt_W @ Dinvsqrt_W.mT + dg.eye(n, dtype=d_sqrt.dtype, device=d_sqrt.device)
        return (d_sqrt * dg.linalg.cholesky(K)).expand(*self._matrix_shape())

    @lazy_property
    def covariance_matrix(self):
        W = self._unbroadcasted_cov_factor
        return (W @ W.mT + dg.diag_embed(self._unbroadcasted_cov_diag)).expand(*self._matrix_shape())

    @lazy_property
    def precision_matrix(self):
        """D⁻¹ - AᵀA with A = L⁻¹ Wᵀ D⁻¹ (Woodbury)."""
        D = self._unbroadcasted_cov_diag
        Wt_Dinv = self._unbroadcasted_cov_factor.mT / D.unsqueeze(-2)
        A = dg.linalg.solve_triangular(self._capacitance_tril, Wt_Dinv, upper=False)
        return (dg.diag_embed(D.reciprocal()) - A.mT @ A).expand(*self._matrix_shape())

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        W_shape = shape[:-1] + tuple(self.cov_factor.shape[-1:])
        eps_W = dg.randn(W_shape, dtype=self.loc.dtype, device=self.loc.device)
        eps_D = dg.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        return self.loc + (W @ eps_W.unsqueeze(-1)).squeeze(-1) + D.sqrt() * eps_D

    def _logdet(self):
        return lowrank_logdet(self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag, self._capacitance_tril)

    def log_prob(self, value):
        self._checked(value)
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        M = lowrank_mahalanobis(W, D, value - self.loc, self._capacitance_tril)
        return -0.5 * (self._event_shape[0] * math.log(2 * math.pi) + self._logdet() + M)

    def entropy(self):
        H = 0.5 * (self._event_shape[0] * (1.0 + math.log(2 * math.pi)) + self._logdet())
        return H if not self._batch_shape else H.expand(*self._batch_shape)
