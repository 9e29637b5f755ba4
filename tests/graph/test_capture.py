import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.graph.capture import CaptureError, capture
from distgraph.graph.compile import CompileWarning
from distgraph.graph.executor import Runner
from tests.graph.helpers import assert_step_matches_eager, randn


def _mlp():
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    for p in model.parameters():
        p.data = p.detach().to(dg.float64)
    return model


def _batch(n=8):
    return randn(n, 5), dg.tensor(np.arange(n) % 3)


def test_forward_graph_equals_eager():
    x = randn(6, 4)
    fn = lambda x: (x.exp() * x.sigmoid() - x.mean(1, keepdim=True)).softmax(1)  # noqa: E731
    graph, _, _ = capture(fn, [x])
    (out,) = Runner(graph)(x.array)
    assert np.max(np.abs(out - fn(x).array)) <= 1e-12


def test_training_step_graph_gives_loss_and_grads_of_eager():
    model, (x, y) = _mlp(), _batch()
    graph, params, _ = capture(lambda x, y: F.cross_entropy(model(x), y), [x, y], grad_of=list(model.parameters()))
    assert [p is q for p, q in zip(params, model.parameters())] == [True] * 4  # parameters are lifted inputs
    outs = Runner(graph)(x.array, y.array, *[p.array for p in params])
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert abs(outs[0] - loss.array) <= 1e-12
    for g, p in zip(outs[1:], model.parameters()):
        assert np.max(np.abs(g - p.grad.array)) <= 1e-12


def test_compiled_step_writes_grads_and_sees_parameter_updates():
    model, (x, y) = _mlp(), _batch()
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy)
    for _ in range(2):  # the second step runs on updated parameters, read at call time
        assert_step_matches_eager(step, model, F.cross_entropy, (x,), y)
        with dg.no_grad():
            for p in model.parameters():
                p.sub_(p.grad * 0.1)


def test_same_bits_on_repeat():
    model, (x, y) = _mlp(), _batch()
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy)
    first = step(x, y).array.copy()
    assert step(x, y).array.tobytes() == first.tobytes()


def test_new_shape_warns_and_recaptures():
    f = dg.compile(lambda x: (x * 2).sum(0), (randn(4, 3),))
    with pytest.warns(CompileWarning, match="re-capturing"):
        out = f(randn(7, 3))
    assert out.shape == (3,) and len(f.variants) == 2


def test_value_dependent_control_flow_falls_back_to_eager():
    def fn(x):
        return x * 2 if x.sum().item() > 0 else x * 3

    x = dg.tensor(np.ones((3, 2)))
    with pytest.warns(CompileWarning, match="running eagerly"):
        f = dg.compile(fn, (x,))
    neg = dg.tensor(-np.ones((3, 2)))
    np.testing.assert_array_equal(f(neg).array, fn(neg).array)


def test_a_value_read_on_the_host_falls_back_to_eager_even_where_perturbed_inputs_agree():
    # the branch takes the same side for the example and its perturbed twin (|x| large in both), so only
    # hearing the host read catches it; before, the compiled call returned 300 where eager gives 200
    def fn(x):
        return x * 2 if x.abs().max().item() > 10 else x * 3

    with pytest.warns(CompileWarning, match=r"item\(\) reads the value of %\d+"):
        f = dg.compile(fn, (dg.tensor(np.array([100.0])),))
    small = dg.tensor(np.array([100.0 / 3]))
    np.testing.assert_array_equal(f(small).array, fn(small).array)


def test_a_branch_on_a_parameter_falls_back_to_eager():
    class Signed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(dg.tensor(np.ones(3)))

        def forward(self, x):
            return x * 2 if bool(self.w.sum() > 0) else x * 3

    m, x = Signed(), dg.tensor(np.ones(3))
    with pytest.warns(CompileWarning, match=r"bool\(\) reads the value"):
        f = dg.compile(m, (x,))
    with dg.no_grad():
        m.w.mul_(-1)
    np.testing.assert_array_equal(f(x).array, m(x).array)


def test_eval_mode_is_part_of_the_guard():
    """A graph captured in train mode keeps its dropout; after .eval() the call re-captures (it ran the
    training graph before), and going back to train() reuses the first graph without a warning."""
    dg.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5))
    m.double()
    x = randn(4, 6)
    f = dg.compile(m, (x,))
    m.eval()
    with pytest.warns(CompileWarning, match="mode changed from train to eval"), dg.no_grad():
        out = f(x)
    np.testing.assert_array_equal(out.array, m(x).array)
    m.train()
    import warnings

    with warnings.catch_warnings(), dg.no_grad():
        warnings.simplefilter("error", CompileWarning)
        assert (f(x).array == 0).any()  # dropout again, from the graph captured first
    assert len(f.variants) == 2


def test_outputs_that_could_be_differentiated_come_from_the_original():
    """An inference graph's outputs have no autograd history: with grad mode on and parameters that
    require grad the call runs eagerly (warned once) so backward works, as with torch.compile; under
    no_grad the graph runs."""
    dg.manual_seed(0)
    m = nn.Linear(3, 2)
    x = dg.tensor(np.ones((4, 3), np.float32))
    f = dg.compile(m, (x,))
    with pytest.warns(CompileWarning, match="runs eagerly to give outputs autograd history"):
        out = f(x)
    out.sum().backward()
    np.testing.assert_allclose(m.weight.grad.array, np.full((2, 3), 4.0))
    with dg.no_grad():
        assert f(x).grad_fn is None and np.array_equal(f(x).array, m(x).array)


def test_batch_norm_training_runs_eagerly_so_its_running_statistics_move():
    dg.manual_seed(0)
    m, ref = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ref.load_state_dict(m.state_dict())
    x = dg.tensor(np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32))
    with pytest.warns(CompileWarning, match="batch_norm's running-statistics update"):
        f = dg.compile(m, (x,))
    f(x)
    ref(x)
    np.testing.assert_array_equal(m[1].running_mean.array, ref[1].running_mean.array)
    assert (m[1].running_mean.array != 0).any()


def test_python_scalar_arguments_are_guarded_by_value_and_other_arguments_run_eagerly():
    x = dg.tensor(np.ones(3))
    f = dg.compile(lambda t, k: t * k + 1, (x, 2.0))
    np.testing.assert_array_equal(f(x, 2.0).array, [3.0, 3.0, 3.0])
    with pytest.warns(CompileWarning, match=r"float 2.0\) to .*float 3.0\); re-capturing"):
        np.testing.assert_array_equal(f(x, 3.0).array, [4.0, 4.0, 4.0])  # not the 2.0 baked in
    with pytest.warns(CompileWarning, match="input 1 is a list; a graph takes tensors and Python scalars"):
        g = dg.compile(lambda t, items: t * len(items), (x, [1, 2]))  # it raised from dg.compile itself
    with pytest.warns(CompileWarning, match="input 1 is a list"):
        np.testing.assert_array_equal(g(x, [1, 2, 3]).array, [3.0, 3.0, 3.0])


def test_random_mask_is_not_baked_into_the_graph():
    def drop(x):  # a mask drawn outside the op registry is a constant of the capture (nn.Dropout's is an op)
        return x * dg.tensor((np.random.random(x.shape) > 0.5).astype(np.float64))

    x = randn(16, 8)
    with pytest.warns(CompileWarning, match="depends on the input values"):
        dg.compile(drop, (x,))


def test_in_place_change_of_a_recorded_value_is_detected():
    def fn(x):
        y = x * 2
        y.add_(1)
        return y * 3

    with pytest.raises(CaptureError, match="modified in place"):
        capture(fn, [randn(3, 3)])


def test_example_inputs_that_are_not_tensors_are_refused_by_name():
    model = nn.Linear(3, 2)
    for bad in ((), 3.0):  # (None: captured at the first call, as torch.compile)
        with pytest.raises(
            dg.errors.ConfigError, match="dg.compile: example_inputs must be a tensor or a non-empty tuple"
        ):
            dg.compile(model, bad)


def test_capturing_a_new_variant_draws_nothing_from_the_seeded_generator():
    """Capture runs the model (twice, with the check), and its dropout masks came from the global generator:
    a call that re-captured after `dg.manual_seed(s)` drew other masks than eager code seeded alike."""
    dg.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    m.double()
    step = dg.compile(m, (randn(5, 4), dg.tensor(np.arange(5) % 3)), loss_fn=F.cross_entropy)
    x, y = randn(7, 4), dg.tensor(np.arange(7) % 3)
    dg.manual_seed(1)
    with pytest.warns(CompileWarning, match="re-capturing"):
        loss = step(x, y)
    dg.manual_seed(1)
    assert abs(loss.item() - F.cross_entropy(m(x), y).item()) <= 1e-12


class _HalfUsed(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x):
        return self.used(x)


@pytest.mark.parametrize("captured", [False, True])
def test_a_parameter_the_loss_does_not_use_is_not_stepped(captured):
    """Its gradient output is zeros: written to `.grad` (eager leaves None) it made SGD's weight decay and
    Adam move the parameter, which eager's step skips."""
    from distgraph import optim

    dg.manual_seed(0)
    m, ref = _HalfUsed().double(), _HalfUsed().double()
    ref.load_state_dict(m.state_dict())
    opt, ref_opt = optim.AdamW(m.parameters(), lr=0.1), optim.AdamW(ref.parameters(), lr=0.1)
    x, y = randn(5, 4), dg.tensor(np.arange(5) % 3)
    step = dg.compile(m, (x, y), loss_fn=F.cross_entropy, optimizer=opt if captured else None)
    for _ in range(2):
        opt.zero_grad()
        step(x, y)
        if not captured:
            assert m.unused.weight.grad is None
            opt.step()
        ref_opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        ref_opt.step()
    for p, q in zip(m.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert m.unused.weight not in opt.state or not opt.state[m.unused.weight]


def test_captured_gradient_sums_every_consumer_of_a_value_reached_in_any_order():
    """log_softmax's output feeds a mul and a where that also reads the mul: the captured backward
    visited log_softmax before the mul's gradient reached it and lost that part (found by
    test_pass_fuzz)."""
    rng = np.random.default_rng(0)
    c, w = dg.tensor(rng.standard_normal((1, 5))), dg.tensor(rng.standard_normal((4, 5)))

    def loss(x):
        a = x.log_softmax(1)
        b = a * c
        return (dg.where(a > b, a, b * 0.5) * w).sum()

    x = dg.tensor(rng.standard_normal((4, 5)), requires_grad=True)
    loss(x).backward()
    leaf = x.detach().requires_grad_()
    graph, _, _ = capture(loss, [leaf], grad_of=[leaf])
    _, grad = Runner(graph)(x.array)
    assert np.max(np.abs(grad - x.grad.array)) <= 1e-12


def test_compiling_a_batch_norm_model_leaves_its_buffers_as_they_were():
    """Batch norm's training forward cannot be captured (its running-statistics update), so the step
    runs eagerly — but the capture attempt had already counted a batch in `num_batches_tracked`: three
    compiled steps left it at 4 against eager's 3 (and with momentum=None, other running statistics)."""

    def model():
        dg.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8, momentum=None), nn.ReLU(), nn.Linear(8, 3))

    eager, compiled = model(), model()
    x, y = _batch()
    x = x.float()  # the models' dtype: torch refuses a float64 batch for them
    with pytest.warns(CompileWarning, match="running-statistics"):
        step = dg.compile(compiled, (x, y), loss_fn=F.cross_entropy)
    assert int(compiled[1].num_batches_tracked.item()) == 0
    for _ in range(3):
        step(x, y)
        F.cross_entropy(eager(x), y).backward()
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        np.testing.assert_array_equal(a.array, b.array, err_msg=name)
