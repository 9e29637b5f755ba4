"""utils.checkpoint: gradients equal the un-checkpointed ones bit for bit (dropout, batch norm, inputs with
and without grad, parameters inside, nested, closures), the intermediates are not kept, the caller's
random stream is left alone, and torch's errors and warnings for each variant."""

import gc
import warnings
import weakref

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.utils.checkpoint import checkpoint, checkpoint_sequential

RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 4))
VARIANTS = [True, False]


def _model():
    dg.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 8), nn.Dropout(0.3), nn.Tanh(), nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)
    ).to(dg.float64)


def _step(run, x_requires_grad=True):
    """Run `run(model, x)` from fixed seeds, backprop its sum; every gradient, the output, the next draw."""
    m = _model()
    x = dg.tensor(X, requires_grad=x_requires_grad)
    dg.manual_seed(7)
    y = run(m, x)
    y.sum().backward()
    grads = [p.grad.numpy() for p in m.parameters()] + ([x.grad.numpy()] if x_requires_grad else [])
    return grads, y.detach().numpy(), dg.rand(3).numpy(), m[4]


def _assert_same(ref, got):
    assert len(ref[0]) == len(got[0])
    for a, b in zip(ref[0], got[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref[1], got[1])
    np.testing.assert_array_equal(ref[2], got[2])  # the recomputation left the caller's random stream alone


@pytest.mark.parametrize("reentrant", VARIANTS)
def test_gradients_equal_uncheckpointed_with_dropout_and_batchnorm(reentrant):
    ref = _step(lambda m, x: m(x))
    got = _step(lambda m, x: checkpoint(m, x, use_reentrant=reentrant))
    _assert_same(ref, got)


@pytest.mark.parametrize("reentrant", VARIANTS)
def test_checkpoint_sequential_equals_uncheckpointed(reentrant):
    ref = _step(lambda m, x: m(x))
    for segments in (1, 2, 3, 7):
        got = _step(lambda m, x, s=segments: checkpoint_sequential(m, s, x, use_reentrant=reentrant))
        _assert_same(ref, got)


@pytest.mark.parametrize("reentrant", VARIANTS)
def test_batchnorm_running_stats_update_twice_as_torch(reentrant):
    """The recomputation runs BatchNorm's forward again, so (as in torch) the running stats move twice."""
    torch = pytest.importorskip("torch")
    bn = torch.nn.BatchNorm1d(4).double()
    tx = torch.tensor(X, requires_grad=True)
    torch.utils.checkpoint.checkpoint(bn, tx, use_reentrant=reentrant).sum().backward()
    m = _step(lambda m, x: checkpoint(m, x, use_reentrant=reentrant))[3]
    assert int(m.num_batches_tracked.item()) == int(bn.num_batches_tracked.item()) == 2


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # the inner reentrant one, in the outer
# forward (no_grad), as torch warns
def test_nested_checkpoints_equal_uncheckpointed():
    def run(m, x, reentrant):
        inner = lambda h: checkpoint(m[3:5], h, use_reentrant=reentrant)  # noqa: E731
        outer = lambda h: m[5:](inner(m[:3](h)))  # noqa: E731
        return checkpoint(outer, x, use_reentrant=reentrant)

    ref = _step(lambda m, x: m(x))
    for reentrant in VARIANTS:
        _assert_same(ref, _step(lambda m, x, r=reentrant: run(m, x, r)))


def test_input_without_grad_non_reentrant_still_trains_parameters():
    ref = _step(lambda m, x: m(x), x_requires_grad=False)
    got = _step(lambda m, x: checkpoint(m, x, use_reentrant=False), x_requires_grad=False)
    _assert_same(ref, got)


def test_input_without_grad_reentrant_warns_and_gives_no_gradients_as_torch():
    m = _model()
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True. Gradients will be None"):
        y = checkpoint(m, dg.tensor(X), use_reentrant=True)
    assert not y.requires_grad
    assert all(p.grad is None for p in m.parameters())


def test_mixed_inputs_and_non_tensor_arguments():
    a, b = dg.tensor(X, requires_grad=True), dg.tensor(X[:, :1] + 1.0)

    def fn(x, y, scale):
        return ((x * y).sin() * scale).exp()

    ref = fn(a, b, 0.5).sum()
    (ga,) = dg.autograd.grad(ref, [a])
    for reentrant in VARIANTS:
        a.grad = None
        checkpoint(fn, a, b, 0.5, use_reentrant=reentrant).sum().backward()
        np.testing.assert_array_equal(a.grad.numpy(), ga.numpy())


def test_non_reentrant_works_with_autograd_grad_and_keyword_arguments():
    m = _model()
    x = dg.tensor(X, requires_grad=True)
    dg.manual_seed(7)
    ref = dg.autograd.grad(m(x).sum(), [x, *m.parameters()])
    m = _model()
    dg.manual_seed(7)
    y = checkpoint(lambda t, *, model: model(t), x, model=m, use_reentrant=False)
    got = dg.autograd.grad(y.sum(), [x, *m.parameters()])
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r.numpy(), g.numpy())


def test_non_reentrant_closure_with_history_is_cut_at_the_boundary():
    """A tensor with history read from the closure gets its gradient once, through the outer backward."""
    x, z = dg.tensor(X, requires_grad=True), dg.tensor(X[::-1].copy(), requires_grad=True)

    def loss(ck):
        h = (x * 2).tanh()
        out = ck(lambda t: (t * h).sin(), z) + h * 3  # h also used outside
        return out.sum()

    ref = dg.autograd.grad(loss(lambda f, t: f(t)), [x, z])
    got = dg.autograd.grad(loss(lambda f, t: checkpoint(f, t, use_reentrant=False)), [x, z])
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r.numpy(), g.numpy())


def test_non_reentrant_create_graph_gives_second_derivatives():
    def second(ck):
        x = dg.tensor(X[0], requires_grad=True)
        (g,) = dg.autograd.grad(ck(lambda t: (t**3).sin(), x).sum(), [x], create_graph=True)
        (gg,) = dg.autograd.grad(g.sum(), [x])
        return gg.numpy()

    np.testing.assert_array_equal(second(lambda f, t: f(t)), second(lambda f, t: checkpoint(f, t, use_reentrant=False)))


@pytest.mark.parametrize("reentrant", VARIANTS)
def test_intermediates_are_not_kept(reentrant):
    """Without checkpointing the graph keeps exp's output array alive until backward; with it, it is gone."""
    seen = []

    def fn(x):
        h = x.exp()
        seen.append(weakref.ref(h.array))
        return (h * 2).sin()

    x = dg.tensor(X, requires_grad=True)
    y_plain = fn(x)
    gc.collect()
    assert seen[0]() is not None  # the control: the plain graph holds it
    y = checkpoint(fn, x, use_reentrant=reentrant)
    gc.collect()
    assert seen[1]() is None
    y.sum().backward()
    x_grad = x.grad.numpy().copy()
    x.grad = None
    y_plain.sum().backward()
    np.testing.assert_array_equal(x_grad, x.grad.numpy())


def test_preserve_rng_state_false_draws_a_new_mask():
    """Without the stash the recomputation draws anew, so the gradient differs from the forward's mask
    (torch's documented behaviour) — the check that preserve_rng_state is what makes them equal."""
    ref = _step(lambda m, x: m(x))
    got = _step(lambda m, x: checkpoint(m, x, use_reentrant=False, preserve_rng_state=False))
    assert not np.array_equal(ref[0][0], got[0][0])


def test_reentrant_refuses_autograd_grad_and_backward_inputs():
    x = dg.tensor(X, requires_grad=True)
    with pytest.raises(RuntimeError, match="use_reentrant=True, torch.utils.checkpoint is incompatible with .grad()"):
        dg.autograd.grad(checkpoint(lambda t: t.exp(), x, use_reentrant=True).sum(), [x])
    with pytest.raises(RuntimeError, match="incompatible with .grad\\(\\) or passing an `inputs`"):
        checkpoint(lambda t: t.exp(), x, use_reentrant=True).sum().backward(inputs=[x])


def test_argument_errors_and_warnings_read_as_torch():
    x = dg.tensor(X, requires_grad=True)
    with pytest.raises(ValueError, match="Unexpected keyword arguments: scale"):
        checkpoint(lambda t, scale: t * scale, x, scale=2.0, use_reentrant=True)
    with pytest.raises(ValueError, match="Passing `context_fn` or `debug` is only supported when use_reentrant=False"):
        checkpoint(lambda t: t, x, use_reentrant=True, debug=True)
    with pytest.raises(ValueError, match="determinism_check should be one of"):
        checkpoint(lambda t: t, x, use_reentrant=False, determinism_check="bogus")
    with pytest.warns(UserWarning, match="the use_reentrant parameter should be passed explicitly"):
        checkpoint(lambda t: t * 2, x)
    with pytest.warns(UserWarning, match="checkpoint_sequential: the use_reentrant parameter should be passed"):
        checkpoint_sequential([lambda t: t * 2], 1, x)
    with pytest.raises(ValueError, match="Unexpected keyword arguments: foo"):
        checkpoint_sequential([lambda t: t * 2], 1, x, use_reentrant=False, foo=1)


def test_recomputation_with_other_shapes_is_refused():
    calls = []

    def fn(x):
        calls.append(1)
        return x.exp() if len(calls) == 1 else x.exp().sum()

    y = checkpoint(fn, dg.tensor(X, requires_grad=True), use_reentrant=False)
    with pytest.raises(RuntimeError, match="Recomputed values for the following tensors have different metadata"):
        y.sum().backward()


def test_under_no_grad_nothing_is_recorded():
    x = dg.tensor(X, requires_grad=True)
    with dg.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        for reentrant in VARIANTS:
            assert not checkpoint(lambda t: t.exp(), x, use_reentrant=reentrant).requires_grad
