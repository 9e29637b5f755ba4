"""distgraph.func against torch.func in float64, for what a review found: transforms keep the graph to
tensors the function reads from its closure (module parameters: the gradient-penalty pattern), and vmap
refuses an in-place write into an unmapped input instead of repeating it per element."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn

torch = pytest.importorskip("torch")
tf = torch.func

RNG = np.random.default_rng(0)
W, X = RNG.standard_normal(3), RNG.standard_normal(3)


def _close(d, t):
    np.testing.assert_allclose(np.asarray(d.detach().__array__()), t.detach().numpy(), rtol=1e-10, atol=1e-12)


def _closure_params():
    return dg.tensor(W, requires_grad=True), torch.tensor(W, requires_grad=True)


@pytest.mark.parametrize(
    "transform",
    [
        lambda func, f, x: func.grad(f)(x),
        lambda func, f, x: func.grad_and_value(f)(x)[0],
        lambda func, f, x: func.grad_and_value(f)(x)[1],
        lambda func, f, x: func.jacrev(f)(x),
        lambda func, f, x: func.jacfwd(f)(x),
        lambda func, f, x: func.hessian(f)(x),
        lambda func, f, x: func.vjp(f, x)[1](torch.ones(()) if func is tf else dg.ones((), dtype=dg.float64))[0],
        lambda func, f, x: func.vjp(f, x)[0],
    ],
    ids=["grad", "grad_and_value-grad", "grad_and_value-value", "jacrev", "jacfwd", "hessian", "vjp-fn", "vjp-out"],
)
def test_transform_results_stay_differentiable_to_closure_tensors_like_torch(transform):
    (w, wt), x, xt = _closure_params(), dg.tensor(X), torch.tensor(X)
    got = transform(dg.func, lambda v: (w * v**3).sum(), x)
    want = transform(tf, lambda v: (wt * v**3).sum(), xt)
    _close(got, want)
    assert got.requires_grad
    (got**2).sum().backward()
    (want**2).sum().backward()
    _close(w.grad, wt.grad)


def test_result_depending_only_on_the_arguments_is_detached_like_torch():
    (w, wt), x, xt = _closure_params(), dg.tensor(X), torch.tensor(X)
    g, aux = dg.func.grad(lambda v: ((v**2).sum(), w * 2), has_aux=True)(x)
    gt, auxt = tf.grad(lambda v: ((v**2).sum(), wt * 2), has_aux=True)(xt)
    assert (g.requires_grad, aux.requires_grad) == (gt.requires_grad, auxt.requires_grad) == (False, True)
    _close(g, gt)


def _linear_pair():
    m = nn.Linear(3, 2).double()
    tm = torch.nn.Linear(3, 2).double()
    tm.load_state_dict({k: torch.from_numpy(v.detach().numpy().copy()) for k, v in m.state_dict().items()})
    return m, tm


def test_gradient_penalty_through_a_linear_model_matches_torch():
    """‖∂f/∂x‖ penalised, the parameters trained: grad of the model's output in x, backward to its weights."""
    (m, tm), x = _linear_pair(), RNG.standard_normal((4, 3))

    def penalty(func, model, inp):
        g = func.grad(lambda v: func.functional_call(model, dict(model.named_parameters()), (v,)).tanh().sum())(inp)
        return ((g.pow(2).sum(-1) - 1) ** 2).mean()

    got, want = penalty(dg.func, m, dg.tensor(x)), penalty(tf, tm, torch.tensor(x))
    _close(got, want)
    got.backward()
    want.backward()
    _close(m.weight.grad, tm.weight.grad)
    _close(m.bias.grad, tm.bias.grad)


def test_per_sample_gradient_penalty_with_vmap_matches_torch():
    (m, tm), x = _linear_pair(), RNG.standard_normal((4, 3))

    def penalty(func, vmap, model, inp):
        g = vmap(func.grad(lambda v: model(v).pow(2).sum()))(inp)
        return g.pow(2).sum()

    got, want = penalty(dg.func, dg.vmap, m, dg.tensor(x)), penalty(tf, torch.vmap, tm, torch.tensor(x))
    _close(got, want)
    got.backward()
    want.backward()
    _close(m.weight.grad, tm.weight.grad)


def test_no_grad_outside_detaches_results_like_torch():
    (w, wt), x, xt = _closure_params(), dg.tensor(X), torch.tensor(X)
    with dg.no_grad():
        g = dg.func.grad(lambda v: (w * v**2).sum())(x)
    with torch.no_grad():
        gt = tf.grad(lambda v: (wt * v**2).sum())(xt)
    assert g.requires_grad == gt.requires_grad == False  # noqa: E712
    _close(g, gt)


INPLACE = {
    "add_": lambda r, b: b.add_(r),
    "copy_": lambda r, b: b.copy_(r),
    "setitem": lambda r, b: b.__setitem__(0, r[0]) or b,
}


@pytest.mark.parametrize("name", INPLACE)
def test_vmap_refuses_inplace_write_of_mapped_values_into_unmapped_input_like_torch(name):
    rows = RNG.standard_normal((3, 2))
    with pytest.raises(RuntimeError):
        torch.vmap(INPLACE[name], in_dims=(0, None))(torch.tensor(rows), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"vmap: inplace arithmetic\(self, \*extra_args\) is not possible"):
        dg.vmap(INPLACE[name], in_dims=(0, None))(dg.tensor(rows), dg.zeros(2, dtype=dg.float64))


def test_vmap_allows_a_write_that_repeats_the_same_value_like_torch():
    rows = RNG.standard_normal((3, 2))
    b, bt = dg.ones(2, dtype=dg.float64), torch.ones(2, dtype=torch.float64)
    got = dg.vmap(lambda r, z: r + z.zero_(), in_dims=(0, None))(dg.tensor(rows), b)
    want = torch.vmap(lambda r, z: r + z.zero_(), in_dims=(0, None))(torch.tensor(rows), bt)
    _close(got, want)
    _close(b, bt)


def test_vmap_refuses_batch_norm_updating_its_own_running_stats_like_torch():
    m = nn.BatchNorm1d(3).double()
    x = dg.tensor(np.random.default_rng(0).normal(size=(4, 6, 3)))
    with pytest.raises(RuntimeError, match="running_mean or running_var, which will be updated in place, were not"):
        dg.func.vmap(m)(x)
    assert int(m.num_batches_tracked) == 1 and not m.running_mean.detach().numpy().any()  # stopped at the update
    m.eval()  # eval mode reads the statistics: fine, as torch's
    assert dg.func.vmap(m)(x).shape == (4, 6, 3)


def test_vmap_updates_running_stats_that_are_part_of_a_mapped_input():
    m = nn.BatchNorm1d(3).double()
    params = dict(m.named_parameters())
    buffers = {k: dg.stack([v] * 4) for k, v in m.named_buffers() if v.ndim}  # one set of statistics per element
    x = dg.tensor(np.random.default_rng(1).normal(size=(4, 6, 3)))
    dg.func.vmap(lambda b, xi: dg.func.functional_call(m, (params, b), (xi,)))(buffers, x)
    means = x.detach().numpy().mean(axis=1) * 0.1  # momentum 0.1 from zeros, per element
    np.testing.assert_allclose(buffers["running_mean"].detach().numpy(), means, rtol=1e-12)


def test_vmap_names_item_when_the_function_returns_python_numbers():
    with pytest.raises(ValueError, match=r"\.item\(\).*not supported under vmap"):
        dg.func.vmap(lambda x: x.sum().item())(dg.randn(4, 3))


def test_vmap_in_one_thread_leaves_batch_norm_in_another_alone():
    import threading

    inside, release = threading.Event(), threading.Event()

    def waits(x):
        inside.set()
        release.wait(10)
        return x * 2

    worker = threading.Thread(target=lambda: dg.func.vmap(waits)(dg.ones(2, 3)))
    worker.start()
    try:
        assert inside.wait(10)
        m = nn.BatchNorm1d(3)
        m(dg.randn(4, 3))  # no vmap in this thread: the statistics update
        assert int(m.num_batches_tracked) == 1
    finally:
        release.set()
        worker.join(10)
