"""LogitRelaxedBernoulli, RelaxedBernoulli, ExpRelaxedCategorical, RelaxedOneHotCategorical and
OneHotCategoricalStraightThrough against torch's in float64: log_prob with gradients in temperature and
probs/logits, what torch leaves unimplemented, validation, expand, draws (exact event probabilities of the
Gumbel noise, moments against torch's draws) and the straight-through gradient."""

import numpy as np
import pytest

import distgraph as dg
from tests.distributions.family_parity import DD, TD, check_both_raise, check_closed_form, check_expand
from tests.parity import torch


def _cls(D, name):
    """The class in D; torch keeps the two base families in their modules, not its namespace."""
    if D is DD or hasattr(D, name):
        return getattr(D, name)
    return getattr(TD.relaxed_bernoulli if "Bernoulli" in name else TD.relaxed_categorical, name)


FAMILIES = {
    "LogitRelaxedBernoulli": lambda D, t, p: _cls(D, "LogitRelaxedBernoulli")(t, probs=p),
    "RelaxedBernoulli": lambda D, t, p: D.RelaxedBernoulli(t, logits=p),
    "ExpRelaxedCategorical": lambda D, t, p: _cls(D, "ExpRelaxedCategorical")(t, logits=p),
    "RelaxedOneHotCategorical": lambda D, t, p: D.RelaxedOneHotCategorical(t, probs=p),
}
RNG = np.random.default_rng(0)
PARAMS = {
    "LogitRelaxedBernoulli": RNG.uniform(0.1, 0.9, (2, 3)),
    "RelaxedBernoulli": RNG.uniform(-2, 2, (2, 3)),
    "ExpRelaxedCategorical": RNG.uniform(-2, 2, (2, 3)),
    "RelaxedOneHotCategorical": RNG.dirichlet(np.ones(3), 2),
}
VALUES = {
    "LogitRelaxedBernoulli": RNG.normal(size=(2, 3)),
    "RelaxedBernoulli": RNG.uniform(0.05, 0.95, (2, 3)),
    "ExpRelaxedCategorical": np.log(RNG.dirichlet(np.ones(3), 2)),
    "RelaxedOneHotCategorical": RNG.dirichlet(np.ones(3), 2),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("what", ["log_prob", "mean", "variance", "entropy", "cdf"])
@pytest.mark.parametrize("rows", [1, 2])
def test_closed_forms_and_gradients_match_torch(name, what, rows):
    params = PARAMS[name][:rows] if rows == 2 else PARAMS[name][0]
    value = VALUES[name][:rows] if rows == 2 else VALUES[name][0]
    check_closed_form(FAMILIES[name], what, [np.array(0.7), params], value)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_validation_expand_and_shapes_match_torch(name):
    ctor, params = FAMILIES[name], PARAMS[name]
    d, t = ctor(DD, dg.tensor(0.5), dg.tensor(params)), ctor(TD, torch.tensor(0.5), torch.tensor(params))
    assert tuple(d.batch_shape) == tuple(t.batch_shape) and tuple(d.event_shape) == tuple(t.event_shape)
    assert d.has_rsample == t.has_rsample and repr(d).startswith(name + "(") and repr(t).startswith(name + "(")
    assert tuple(d.rsample((4,)).shape) == tuple(t.rsample((4,)).shape)
    bad = VALUES[name] + 2.0
    if not name.startswith(("Logit", "Exp")):  # real support: nothing is outside
        check_both_raise(lambda: d.log_prob(dg.tensor(bad)), lambda: t.log_prob(torch.tensor(bad)))
    if name in ("LogitRelaxedBernoulli", "RelaxedOneHotCategorical"):  # given probs, not logits
        bad_params = params * np.array([-1.0, 1.0, 1.0])
        check_both_raise(
            lambda: ctor(DD, dg.tensor(0.5), dg.tensor(bad_params)),
            lambda: ctor(TD, torch.tensor(0.5), torch.tensor(bad_params)),
        )
    batch = (4,) + tuple(t.batch_shape)
    value = np.broadcast_to(VALUES[name], batch + tuple(t.event_shape)).copy()
    check_expand(lambda D, p: ctor(D, D is DD and dg.tensor(0.5) or torch.tensor(0.5), p), [params], batch, value)


def test_gumbel_noise_gives_the_exact_event_probabilities():
    """P(logit-relaxed draw > 0) = probs, and P(argmax of a relaxed one-hot draw = k) = probs_k, at any
    temperature."""
    n = 20_000
    dg.manual_seed(0)
    probs = np.array([0.2, 0.7])
    x = _cls(DD, "LogitRelaxedBernoulli")(dg.tensor(0.3), probs=dg.tensor(probs)).sample((n,))
    frac = (np.asarray(x.__array__()) > 0).mean(0)
    assert np.all(np.abs(frac - probs) < 5 * np.sqrt(probs * (1 - probs) / n))
    cat = np.array([0.1, 0.3, 0.6])
    for family in ("ExpRelaxedCategorical", "RelaxedOneHotCategorical"):
        x = np.asarray(_cls(DD, family)(dg.tensor(2.0), probs=dg.tensor(cat)).sample((n,)).__array__())
        frac = np.bincount(x.argmax(-1), minlength=3) / n
        assert np.all(np.abs(frac - cat) < 5 * np.sqrt(cat * (1 - cat) / n))


@pytest.mark.parametrize("name", ["RelaxedBernoulli", "RelaxedOneHotCategorical"])
def test_draws_and_their_gradients_agree_with_torchs_in_distribution(name):
    """Mean draw and mean pathwise gradient (d/d temperature) of 20k draws agree with torch's within 5
    standard errors of the difference."""
    n, ctor, params = 20_000, FAMILIES[name], PARAMS[name][0]
    results = []
    for D, tensor in ((DD, dg.tensor), (TD, torch.tensor)):
        (dg if D is DD else torch).manual_seed(0)
        temperature = tensor(np.full(n, 0.6), requires_grad=True)
        shape = (n,) + params.shape
        x = ctor(D, temperature.reshape(n, 1), tensor(np.broadcast_to(params, shape).copy())).rsample()
        (x[..., 0]).sum().backward()
        draws = np.asarray(x.detach().__array__() if D is DD else x.detach().numpy())
        grads = np.asarray(temperature.grad.__array__() if D is DD else temperature.grad.numpy())
        results.append((draws.mean(0), draws.std(0), grads.mean(), grads.std()))
    (m1, s1, g1, gs1), (m2, s2, g2, gs2) = results
    assert np.all(np.abs(m1 - m2) <= 5 * np.sqrt((s1**2 + s2**2) / n))
    assert abs(g1 - g2) <= 5 * np.sqrt((gs1**2 + gs2**2) / n)


def test_straight_through_rsample_is_one_hot_with_the_gradient_of_probs():
    probs, w = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]), np.array([1.0, -2.0, 0.5])
    grads = []
    for D, tensor in ((DD, dg.tensor), (TD, torch.tensor)):
        p = tensor(probs, requires_grad=True)
        d = D.OneHotCategoricalStraightThrough(p)
        x = d.rsample((50,))
        assert d.has_rsample and tuple(x.shape) == (50, 2, 3)
        assert bool((x.sum(-1) == 1).all()) and bool(((x == 0) | (x == 1)).all())
        (x * tensor(w)).sum().backward()
        grads.append(np.asarray(p.grad.__array__() if D is DD else p.grad.numpy()))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-10)


def test_straight_through_log_prob_and_kl_are_one_hot_categoricals():
    def run(D):
        def f(a, b):
            p, q = D.OneHotCategoricalStraightThrough(logits=a), D.OneHotCategoricalStraightThrough(logits=b)
            return p.log_prob(p.mode), p.entropy(), D.kl_divergence(p, q)

        return f

    from tests.parity import check

    check(run(DD), run(TD), np.array([[0.1, 1.0, -0.5]]), np.array([[0.3, -1.0, 0.2]]))
    d = DD.OneHotCategoricalStraightThrough(dg.tensor([0.2, 0.8])).expand((3,))
    assert type(d) is DD.OneHotCategoricalStraightThrough and repr(d).startswith("OneHotCategoricalStraightThrough(")
