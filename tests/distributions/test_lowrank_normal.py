"""LowRankMultivariateNormal against torch's in float64: log_prob, entropy and the matrices with gradients
in loc, cov_factor and cov_diag on broadcast batch shapes, validation errors, expand, draws (moments and
pathwise gradients) and the three KL pairs torch registers."""

import numpy as np
import pytest

import distgraph as dg
from tests.distributions.family_parity import DD, TD, check_both_raise, check_closed_form, check_expand
from tests.parity import check, torch


def ctor(D, loc, W, diag):
    return D.LowRankMultivariateNormal(loc, W, diag)


def _params(batch, n=4, m=2):
    rng = np.random.default_rng(0)
    return [rng.normal(size=batch + (n,)), rng.normal(size=batch + (n, m)), rng.uniform(0.5, 2.0, (n,))]


WHATS = [
    "log_prob",
    "entropy",
    "mean",
    "mode",
    "variance",
    "stddev",
    "covariance_matrix",
    "scale_tril",
    "precision_matrix",
]


@pytest.mark.parametrize("what", WHATS)
@pytest.mark.parametrize("batch", [(), (3,)])
def test_closed_forms_and_gradients_match_torch(what, batch):
    value = np.random.default_rng(1).normal(size=(2,) + batch + (4,))
    check_closed_form(ctor, what, _params(batch), value)


def test_shape_and_parameter_errors_match_torch():
    loc, W, diag = _params(())
    cases = [
        (np.array(1.0), W, diag),  # loc not a vector
        (loc, W[:, 0], diag),  # cov_factor not a matrix
        (loc, W[:3], diag),  # cov_factor's rows are not the event
        (loc, W, diag[:3]),  # cov_diag is not the event
        (np.zeros((2, 4)), np.zeros((3, 4, 2)), diag),  # batch shapes do not broadcast
        (loc, 0 * W, -diag),  # cov_diag not positive (W = 0 keeps the capacitance factorable)
    ]
    for a, b, c in cases:
        check_both_raise(
            lambda: ctor(DD, dg.tensor(a), dg.tensor(b), dg.tensor(c)),
            lambda: ctor(TD, torch.tensor(a), torch.tensor(b), torch.tensor(c)),
        )
    d, t = ctor(DD, *map(dg.tensor, (loc, W, diag))), ctor(TD, *map(torch.tensor, (loc, W, diag)))
    check_both_raise(lambda: d.log_prob(dg.zeros(3, dtype=dg.float64)), lambda: t.log_prob(torch.zeros(3)))
    assert repr(d) == "LowRankMultivariateNormal(loc: (4,), cov_factor: (4, 2), cov_diag: (4,))"


def test_expand_matches_torch():
    check_expand(ctor, _params((1,)), (3, 1), np.zeros((3, 1, 4)))


def test_draws_have_the_covariance_and_pathwise_gradients():
    n = 20_000
    loc, W, diag = _params(())
    W_t = dg.tensor(W, requires_grad=True)
    d = ctor(DD, dg.tensor(loc), W_t, dg.tensor(diag))
    dg.manual_seed(0)
    x = d.rsample((n,))
    assert tuple(x.shape) == (n, 4) and d.has_rsample
    centered = x - dg.tensor(loc)
    centered.pow(2).mean(0).sum().backward()  # E|x - loc|² = |W|² + ΣD: its gradient in W is 2W
    np.testing.assert_allclose(np.asarray(W_t.grad.__array__()), 2 * W, atol=0.1)
    xs = np.asarray(x.detach().__array__())
    cov = np.cov(xs.T)
    np.testing.assert_allclose(cov, W @ W.T + np.diag(diag), atol=0.15)
    assert np.all(np.abs(xs.mean(0) - loc) < 5 * np.sqrt(np.diag(cov) / n))


@pytest.mark.parametrize("pair", ["lowrank-lowrank", "mvn-lowrank", "lowrank-mvn"])
def test_kl_pairs_match_torch(pair):
    p_kind, q_kind = pair.split("-")

    def build(D, kind, loc, W, diag):
        if kind == "lowrank":
            return ctor(D, loc, W, diag)
        cov = W @ W.mT + (dg.diag_embed(diag) if D is DD else torch.diag_embed(diag))
        return D.MultivariateNormal(loc, covariance_matrix=cov)

    def run(D):
        return lambda loc, W, diag: D.kl_divergence(
            build(D, p_kind, loc, W, diag), build(D, q_kind, loc * 0.5 + 0.2, W.flip(-1) * 0.7, diag + 0.3)
        )

    check(run(DD), run(TD), *_params((3,)))
