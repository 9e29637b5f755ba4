"""Parity checks shared by the added families' tests: a closed form (value and parameter gradients) against
torch's in float64, torch's NotImplementedError where torch has no such method, and sample statistics
(random streams differ, so draws are compared by moments, never by value)."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check, torch

TD = torch.distributions
DD = dg.distributions
METHODS = ("log_prob", "cdf", "icdf")
PROPERTIES = ("mean", "variance", "stddev", "mode")


def closed_form(ctor, what, n_params):
    """f(*params, value) -> the distribution's `what` (a method of value, entropy, or a property)."""

    def f(*args):
        d = ctor(*args[:n_params])
        if what in METHODS:
            return getattr(d, what)(args[n_params])
        return d.entropy() if what == "entropy" else getattr(d, what)

    return f


def check_closed_form(ctor, what, params, value, grad=True, rtol=1e-7, atol=1e-10):
    """ctor(D, *params) built in both libraries agrees on `what`; where torch raises NotImplementedError,
    distgraph does too."""
    n = len(params)
    t_params = [torch.tensor(p) for p in params]
    try:
        closed_form(lambda *a: ctor(TD, *a), what, n)(*t_params, torch.tensor(value))
    except NotImplementedError:
        with pytest.raises(NotImplementedError):
            closed_form(lambda *a: ctor(DD, *a), what, n)(*[dg.tensor(p) for p in params], dg.tensor(value))
        return
    dg_fn = closed_form(lambda *a: ctor(DD, *a), what, n)
    th_fn = closed_form(lambda *a: ctor(TD, *a), what, n)
    check(dg_fn, th_fn, *params, np.asarray(value, dtype=np.float64), grad=grad, rtol=rtol, atol=atol)


def check_sample_moments(d, t, n=20_000, sigmas=5.0):
    """n draws of d have torch's shape and, per batch element, a mean within `sigmas` standard errors of
    torch's mean (d's variance must be finite)."""
    dg.manual_seed(0)
    x = d.sample((n,))
    assert tuple(x.shape) == tuple(t.sample((n,)).shape)
    assert not x.requires_grad
    mean, var = t.mean.detach().numpy(), t.variance.detach().numpy()
    err = np.abs(np.asarray(x.__array__()).mean(0) - mean)
    assert np.all(err <= sigmas * np.sqrt(var / n) + 1e-12), (err, np.sqrt(var / n))


def check_sample_cdf(d, t, points, n=20_000, sigmas=5.0):
    """The fraction of n draws of d at or below each point is within `sigmas` binomial standard errors of
    torch's cdf there: a moment-free check for heavy tails."""
    dg.manual_seed(0)
    x = np.asarray(d.sample((n,)).__array__())
    for p in points:
        expected = t.cdf(torch.tensor(p).expand(t.batch_shape)).numpy()
        frac = (x <= p).mean(0)
        assert np.all(np.abs(frac - expected) <= sigmas * np.sqrt(expected * (1 - expected) / n) + 1e-3)


def check_rsample_gradient(ctor, params, n=20_000, sigmas=5.0):
    """The pathwise gradient is unbiased: with each parameter repeated n times (one draw per copy), the
    per-draw gradients of rsample average, within `sigmas` standard errors, to torch's gradient of the mean."""
    for i in range(len(params)):
        dg.manual_seed(0)
        copies = [dg.tensor(np.full(n, p), requires_grad=(j == i)) for j, p in enumerate(params)]
        ctor(DD, *copies).rsample().sum().backward()
        per_draw = np.asarray(copies[i].grad.__array__())
        t_params = [torch.tensor(float(p), dtype=torch.float64, requires_grad=(j == i)) for j, p in enumerate(params)]
        mean = ctor(TD, *t_params).mean
        (grad,) = torch.autograd.grad(mean, t_params[i], allow_unused=True) if mean.requires_grad else (None,)
        expected = 0.0 if grad is None else grad.item()
        assert abs(per_draw.mean() - expected) <= sigmas * per_draw.std() / np.sqrt(n) + 1e-9, (
            i,
            per_draw.mean(),
            expected,
        )


def check_expand(ctor, params, batch_shape, value):
    """expand gives the same family with the new batch shape, torch's log_prob, and draws of that shape."""
    d = ctor(DD, *[dg.tensor(p) for p in params])
    t = ctor(TD, *[torch.tensor(p) for p in params])
    e, te = d.expand(batch_shape), t.expand(batch_shape)
    assert type(e) is type(d) and tuple(e.batch_shape) == tuple(te.batch_shape)
    assert tuple(e.event_shape) == tuple(te.event_shape)
    assert tuple(e.sample((2,)).shape) == tuple(te.sample((2,)).shape)
    got = e.log_prob(dg.tensor(value))
    np.testing.assert_allclose(np.asarray(got.__array__()), te.log_prob(torch.tensor(value)).numpy(), rtol=1e-7)


def check_both_raise(fn_dg, fn_torch, exc=ValueError):
    """Both libraries reject the same input with the same exception type."""
    with pytest.raises(exc):
        fn_torch()
    with pytest.raises(exc):
        fn_dg()
