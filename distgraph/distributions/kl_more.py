"""torch's KL pairs for Pareto, ContinuousBernoulli and LowRankMultivariateNormal, registered into kl.py's
table: the closed forms torch has, and +inf where p's support reaches outside q's. Kept beside kl.py so
that neither module outgrows one sitting."""

import math

import distgraph as dg
from distgraph.distributions.continuous import Exponential, Laplace, Normal, Uniform
from distgraph.distributions.continuous_bernoulli import ContinuousBernoulli
from distgraph.distributions.gamma import Beta, Gamma
from distgraph.distributions.kl import _inf_where, _infinite_like, _register_infinite, _x_log_x, register_kl
from distgraph.distributions.lowrank_normal import LowRankMultivariateNormal, lowrank_logdet, lowrank_mahalanobis
from distgraph.distributions.multivariate import MultivariateNormal, _mahalanobis
from distgraph.distributions.transformed_families import Gumbel
from distgraph.distributions.transformed_families_extra import Pareto


# ---- Pareto --------------------------------------------------------------------------------------
@register_kl(Pareto, Pareto)
def _kl_pareto_pareto(p, q):
    scale_ratio, alpha_ratio = p.scale / q.scale, q.alpha / p.alpha
    result = q.alpha * scale_ratio.log() - alpha_ratio.log() + alpha_ratio - 1
    return _inf_where(result, p.support.lower_bound < q.support.lower_bound)


@register_kl(Pareto, Exponential)
def _kl_pareto_exponential(p, q):
    scale_rate_prod = p.scale * q.rate
    t1 = (p.alpha / scale_rate_prod).log()
    t3 = p.alpha * scale_rate_prod / (p.alpha - 1)
    return _inf_where(t1 - p.alpha.reciprocal() + t3 - 1, p.alpha <= 1)


@register_kl(Pareto, Gamma)
def _kl_pareto_gamma(p, q):
    common_term = p.scale.log() + p.alpha.reciprocal()
    t1 = p.alpha.log() - common_term
    t2 = q.concentration.lgamma() - q.concentration * q.rate.log()
    t3 = (1 - q.concentration) * common_term
    t4 = q.rate * p.alpha * p.scale / (p.alpha - 1)
    return _inf_where(t1 + t2 + t3 + t4 - 1, p.alpha <= 1)


@register_kl(Pareto, Normal)
def _kl_pareto_normal(p, q):
    var_normal = 2 * q.scale.pow(2)
    common_term = p.scale / (p.alpha - 1)
    t1 = (math.sqrt(2 * math.pi) * q.scale * p.alpha / p.scale).log()
    t3 = p.alpha * common_term.pow(2) / (p.alpha - 2)
    t4 = (p.alpha * common_term - q.loc).pow(2)
    return _inf_where(t1 - p.alpha.reciprocal() + (t3 + t4) / var_normal - 1, p.alpha <= 2)


@register_kl(Uniform, Pareto)
def _kl_uniform_pareto(p, q):
    width = p.high - p.low
    t1 = (q.alpha * q.scale.pow(q.alpha) * width).log()
    t2 = (_x_log_x(p.high) - _x_log_x(p.low) - width) / width
    return _inf_where(t2 * (q.alpha + 1) - t1, p.low < q.support.lower_bound)


# ---- ContinuousBernoulli --------------------------------------------------------------------------
@register_kl(ContinuousBernoulli, ContinuousBernoulli)
def _kl_continuous_bernoulli_continuous_bernoulli(p, q):
    t1 = p.mean * (p.logits - q.logits)
    t2 = p._cont_bern_log_norm() + dg.log1p(-p.probs)
    t3 = -q._cont_bern_log_norm() - dg.log1p(-q.probs)
    return t1 + t2 + t3


def _cross_entropy_to_continuous_bernoulli(p, q):
    """-H(p) - E_p[log q]: p's mean is all that q's log-density needs."""
    return -p.entropy() - p.mean * q.logits - dg.log1p(-q.probs) - q._cont_bern_log_norm()


register_kl(Beta, ContinuousBernoulli)(_cross_entropy_to_continuous_bernoulli)


@register_kl(Uniform, ContinuousBernoulli)
def _kl_uniform_continuous_bernoulli(p, q):
    result = _cross_entropy_to_continuous_bernoulli(p, q)
    return _inf_where(result, (p.high >= q.support.upper_bound) | (p.low <= q.support.lower_bound))


@register_kl(ContinuousBernoulli, Exponential)
def _kl_continuous_bernoulli_exponential(p, q):
    return -p.entropy() - dg.log(q.rate) + q.rate * p.mean


@register_kl(ContinuousBernoulli, Normal)
def _kl_continuous_bernoulli_normal(p, q):
    t2 = 0.5 * (math.log(2.0 * math.pi) + (q.loc / q.scale).square()) + dg.log(q.scale)
    t3 = (p.variance + p.mean.square() - 2.0 * q.loc * p.mean) / (2.0 * q.scale.square())
    return -p.entropy() + t2 + t3


@register_kl(ContinuousBernoulli, Uniform)
def _kl_continuous_bernoulli_uniform(p, q):
    result = -p.entropy() + (q.high - q.low).log()
    return _inf_where(result, (q.low >= p.support.lower_bound) | (q.high <= p.support.upper_bound))


register_kl(ContinuousBernoulli, Pareto)(lambda p, q: _infinite_like(p.probs))
register_kl(Beta, Pareto)(lambda p, q: _infinite_like(p.concentration1))
_register_infinite([Exponential], [ContinuousBernoulli, Pareto], "rate")
_register_infinite([Gamma], [ContinuousBernoulli, Pareto], "concentration")
_register_infinite([Gumbel, Laplace, Normal], [ContinuousBernoulli, Pareto], "loc")
_register_infinite([Pareto], [Beta, ContinuousBernoulli, Uniform], "scale")


# ---- LowRankMultivariateNormal ------------------------------------------------------------------
def _same_event(p, q, what):
    if p.event_shape != q.event_shape:
        raise ValueError(f"KL-divergence between two {what} with different event shapes cannot be computed")


def _trace_xxt(x):
    """tr(X Xᵀ) over the last two dims."""
    return x.pow(2).sum((-2, -1))


def _lowrank_parts(d):
    return d._unbroadcasted_cov_factor, d._unbroadcasted_cov_diag, d._capacitance_tril


def _woodbury_a(q):
    """A = L⁻¹ Wᵀ D⁻¹ of q, so that q's precision is D⁻¹ - AᵀA."""
    W, D, L = _lowrank_parts(q)
    return dg.linalg.solve_triangular(L, W.mT / D.unsqueeze(-2), upper=False)


def _lowrank_logdet_of(d):
    return lowrank_logdet(*_lowrank_parts(d))


def _mahalanobis_to_lowrank(q, diff):
    W, D, L = _lowrank_parts(q)
    return lowrank_mahalanobis(W, D, diff, L)


@register_kl(LowRankMultivariateNormal, LowRankMultivariateNormal)
def _kl_lowrank_lowrank(p, q):
    _same_event(p, q, "Low Rank Multivariate Normals")
    term1 = _lowrank_logdet_of(q) - _lowrank_logdet_of(p)
    term3 = _mahalanobis_to_lowrank(q, q.loc - p.loc)
    pW, pD, _ = _lowrank_parts(p)
    qD = q._unbroadcasted_cov_diag
    A = _woodbury_a(q)
    term21 = (pD / qD).sum(-1)
    term22 = _trace_xxt(pW * qD.rsqrt().unsqueeze(-1))
    term23 = _trace_xxt(A * pD.sqrt().unsqueeze(-2))
    term24 = _trace_xxt(A @ pW)
    return 0.5 * (term1 + term21 + term22 - term23 - term24 + term3 - p.event_shape[0])


@register_kl(MultivariateNormal, LowRankMultivariateNormal)
def _kl_mvn_lowrank(p, q):
    _same_event(p, q, "(Low Rank) Multivariate Normals")
    p_tril = p._unbroadcasted_scale_tril
    term1 = _lowrank_logdet_of(q) - 2 * p_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    term3 = _mahalanobis_to_lowrank(q, q.loc - p.loc)
    term21 = _trace_xxt(p_tril * q._unbroadcasted_cov_diag.rsqrt().unsqueeze(-1))
    term22 = _trace_xxt(_woodbury_a(q) @ p_tril)
    return 0.5 * (term1 + term21 - term22 + term3 - p.event_shape[0])


@register_kl(LowRankMultivariateNormal, MultivariateNormal)
def _kl_lowrank_mvn(p, q):
    _same_event(p, q, "(Low Rank) Multivariate Normals")
    q_tril = q._unbroadcasted_scale_tril
    term1 = 2 * q_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1) - _lowrank_logdet_of(p)
    term3 = _mahalanobis(q_tril, q.loc - p.loc)
    pW, pD, _ = _lowrank_parts(p)
    batch = tuple(dg.broadcast_shapes(tuple(q_tril.shape[:-2]), tuple(pW.shape[:-2])))
    n = p.event_shape[0]
    q_tril = q_tril.tril().expand(*(batch + (n, n)))
    term21 = _trace_xxt(dg.linalg.solve_triangular(q_tril, pW.expand(*(batch + tuple(pW.shape[-2:]))), upper=False))
    p_diag = dg.diag_embed(pD.sqrt()).expand(*(batch + (n, n)))
    term22 = _trace_xxt(dg.linalg.solve_triangular(q_tril, p_diag, upper=False))
    return 0.5 * (term1 + term21 + term22 + term3 - n)
