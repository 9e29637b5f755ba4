"""Compiled results that differed from eager with no warning (review of dg.compile's promise that "a
wrong result is never returned silently"): each test compares the compiled function with the original
on inputs or state other than those it was captured with."""

import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import errors, nn
from distgraph.graph.capture import capture
from distgraph.graph.compile import CompileWarning
from distgraph.graph.executor import LocalExecutor, Runner
from distgraph.graph.guards import perturbed
from distgraph.graph.partition import independent, replicas
from distgraph.graph.passes import optimize
from distgraph.graph.passes.fusion import fuse, out_function
from tests.graph.helpers import randn


def _compile(fn, inputs, **kwargs):
    """dg.compile with its CompileWarnings recorded: (compiled, [warning messages])."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = dg.compile(fn, inputs, **kwargs)
    return compiled, [str(w.message) for w in caught if issubclass(w.category, CompileWarning)]


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))


# ---- 1. values read from tensors ---------------------------------------------------------------------
def test_a_mask_made_from_the_input_is_not_baked_into_the_graph():
    f = lambda x: x[x != 0].mean()  # noqa: E731
    x1 = dg.tensor(np.array([[1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]], np.float32))
    x2 = dg.tensor(np.array([[5.0, 6.0, 7.0, 0.0], [8.0, 9.0, 0.0, 0.0]], np.float32))
    with dg.no_grad():
        g, warned = _compile(f, (x1,))
        assert any("getitem with a tensor index reads the value" in w for w in warned)
        _same(g(x2), f(x2))


def test_an_index_tensor_given_as_an_input_is_read_at_every_call():
    f = lambda x, idx: x[idx] * 2  # noqa: E731
    x = dg.tensor(np.arange(12, dtype=np.float32).reshape(4, 3))
    with dg.no_grad():
        g, _ = _compile(f, (x, dg.tensor(np.array([2]))))
        _same(g(x, dg.tensor(np.array([0]))), f(x, dg.tensor(np.array([0]))))


@pytest.mark.parametrize(
    "name,fn",
    [
        ("nonzero", lambda x, y: dg.nonzero(x).float().sum(0)),
        ("masked_select", lambda x, y: dg.masked_select(x, y > 0).sum()),
        ("one_hot", lambda x, y: F.one_hot(y.long(), -1).float().sum(0)),
        ("index_select", lambda x, y: dg.index_select(x, 0, y.long())),
        ("searchsorted", lambda x, y: dg.searchsorted(dg.tensor([0.5, 1.5]), y.float())),
        ("repeat_interleave", lambda x, y: dg.repeat_interleave(x, y, dim=0).sum(0)),
        ("tensor_split", lambda x, y: dg.stack([p.sum() for p in dg.tensor_split(x.reshape(-1), y.long())])),
    ],
)
def test_data_dependent_results_follow_each_call(name, fn):
    """y1 is the same rolled, so the check capture could not tell: the ops must tell capture themselves."""
    x1, y1 = dg.tensor(np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)), dg.tensor(np.array([1, 1]))
    x2, y2 = dg.tensor(np.array([[1.0, 3.0], [4.0, 2.0]], np.float32)), dg.tensor(np.array([0, 1]))
    with dg.no_grad():
        g, _ = _compile(fn, (x1, y1))
        _same(g(x2, y2), fn(x2, y2))


def test_one_hot_of_a_given_width_and_a_class_weighted_loss_stay_graphs_that_follow_the_targets():
    """Both read their class indices through recorded ops now (one_hot made an array on the host; the
    weighted nll_loss's index_select put the targets into getitem's attributes): captured, not eager."""
    dg.manual_seed(0)
    model = nn.Linear(4, 3).double()
    weight = dg.tensor(np.array([0.2, 1.0, 3.0]))
    loss_fn = lambda out, y: F.cross_entropy(out, y, weight=weight) + (F.one_hot(y, 3) * out).sum()  # noqa: E731
    x, y1, y2 = randn(6, 4), dg.tensor(np.array([0, 1, 2, 0, 1, 2])), dg.tensor(np.array([2, 2, 2, 1, 0, 0]))
    step, warned = _compile(model, (x, y1), loss_fn=loss_fn)
    assert step.graph is not None and not warned
    model.zero_grad()
    loss = step(x, y2)
    got = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    ref = loss_fn(model(x), y2)
    ref.backward()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-12)
    for g, p in zip(got, model.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_the_check_capture_moves_zeros_and_rolls_integers_along_every_axis():
    """Data read past the hooks (a raw array) is caught by the second capture on perturbed values: a
    zero mask survived a mere scaling, and a batch of one was unchanged by a roll along axis 0."""
    x, ids = dg.tensor(np.array([[0.0, 1.0, 0.0]], np.float32)), dg.tensor(np.array([[3, 1, 2]]))
    px, pids = perturbed([x, ids])
    assert (px.numpy() != 0).all() and not np.array_equal(pids.numpy(), ids.numpy())
    assert sorted(pids.numpy().ravel()) == sorted(ids.numpy().ravel())
    f = lambda x, ids: x * dg.tensor((x.array != 0).astype(np.float32)) + dg.tensor(ids.array[:, 0] * 1.0)  # noqa: E731
    with dg.no_grad():
        g, warned = _compile(f, (x, ids))
        assert g.graph is None and any("depends on the input values" in w for w in warned)


# ---- 2. tensors the graph held as constants ----------------------------------------------------------
def test_batch_norm_running_statistics_changed_after_compiling_are_read_at_every_call():
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    x, y = dg.randn(16, 4), dg.tensor(np.arange(16) % 3)
    model.eval()
    with dg.no_grad():
        infer, _ = _compile(model, (x,))
    for _ in range(3):  # training moves the running statistics in place
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x * 3 + 1), y).backward()
        opt.step()
    model.eval()
    with dg.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)  # read as inputs: no re-capture needed
        np.testing.assert_allclose(infer(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_a_frozen_parameter_loaded_in_place_is_seen_and_unfreezing_it_recaptures_the_step():
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    for p in model[0].parameters():
        p.requires_grad_(False)
    x, y = randn(8, 4), dg.tensor(np.arange(8) % 3)
    step, _ = _compile(model, (x, y), loss_fn=F.cross_entropy)
    with dg.no_grad():
        model[0].weight.array[...] *= 0.5
    model.zero_grad()
    assert abs(step(x, y).item() - F.cross_entropy(model(x), y).item()) < 1e-12
    for p in model[0].parameters():
        p.requires_grad_(True)
    model.zero_grad()
    with pytest.warns(CompileWarning, match="requires_grad of parameter 0.weight changed"):
        loss = step(x, y)
    got = model[0].weight.grad.numpy().copy()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert abs(loss.item() - F.cross_entropy(model(x), y).item()) < 1e-12
    np.testing.assert_allclose(got, model[0].weight.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_a_closure_tensor_held_as_a_constant_recaptures_when_it_changes():
    w, idx = dg.randn(3, 3), dg.tensor(np.array([0, 2]))
    f = lambda x: (x @ w)[:, idx]  # noqa: E731
    x = dg.randn(2, 3)
    with dg.no_grad():
        g, _ = _compile(f, (x,))
        _same(g(x), f(x))
        w.add_(1.0)  # its version moves
        with pytest.warns(CompileWarning, match="constant %c0 .* changed"):
            _same(g(x), f(x))
        idx[0] = 1  # an index tensor is read on the host: guarded the same way
        with pytest.warns(CompileWarning, match="read on the host .* changed"):
            _same(g(x), f(x))
        w.data = dg.ones(3, 3)  # a new array
        with pytest.warns(CompileWarning, match="changed"):
            _same(g(x), f(x))


# ---- 3. in-place writes inside the function ------------------------------------------------------------
def test_writes_into_an_input_a_parameter_or_a_buffer_run_eagerly():
    def accumulate(x, acc):
        acc.add_(x * 2)
        return x.sum()

    lin = nn.Linear(3, 3)

    def clip(x):
        out = lin(x)
        with dg.no_grad():
            lin.weight.clamp_(-0.1, 0.1)
        return out

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", dg.zeros(()))

        def forward(self, x):
            self.calls.add_(1)
            return x * 2

    x = dg.ones(3)
    with dg.no_grad():
        g, warned = _compile(accumulate, (x, dg.zeros(3)))
        assert any("writes in place into input %in1" in w for w in warned)
        acc = dg.zeros(3)
        g(x, acc), g(x, acc)
        _same(acc, dg.full((3,), 4.0))
        h, _ = _compile(clip, (x.reshape(1, 3),))
        lin.weight.array[...] = 1.0
        h(x.reshape(1, 3))
        assert float(lin.weight.array.max()) == pytest.approx(0.1)
        counter = Counter()
        c, _ = _compile(counter, (x,))
        for _ in range(3):
            c(x)
        assert counter.calls.item() == 3.0


def test_a_compiled_optimizer_step_is_still_one_graph():
    dg.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = dg.optim.Adam(model.parameters(), lr=1e-2)
    x, y = dg.randn(8, 4), dg.tensor(np.arange(8) % 3)
    step, warned = _compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    assert step.graph is not None and not warned


# ---- 4. Python numbers of a module -----------------------------------------------------------------------
class _Tempered(nn.Module):
    def __init__(self, count=False):
        super().__init__()
        self.lin, self.temperature, self.count, self.calls = nn.Linear(3, 3), 1.0, count, 0

    def forward(self, x):
        if self.count:
            self.calls += 1
        return (self.lin(x) / self.temperature).softmax(-1)


def test_a_module_number_changed_after_compiling_recaptures():
    m, x = _Tempered(), dg.randn(2, 3)
    with dg.no_grad():
        g, _ = _compile(m, (x,))
        m.temperature = 10.0
        with pytest.warns(CompileWarning, match="module attribute _Tempered.temperature changed from 1.0 to 10.0"):
            _same(g(x), m(x))


def test_a_forward_that_changes_a_module_number_runs_eagerly():
    m, x = _Tempered(count=True), dg.randn(2, 3)
    with dg.no_grad():
        g, warned = _compile(m, (x,))
        assert any("_Tempered.calls changed" in w for w in warned)
        before = m.calls
        g(x), g(x)
        assert m.calls == before + 2


# ---- 5. random draws ---------------------------------------------------------------------------------------
def test_an_unused_dropout_still_draws_so_seeded_masks_match_eager():
    def f(x):
        F.dropout(x, 0.5, training=True)  # discarded, but it moves the generator
        return F.dropout(x, 0.5, training=True)

    x = dg.ones(64)
    with dg.no_grad():
        g, _ = _compile(f, (x,))
        dg.manual_seed(1)
        eager = f(x)
        dg.manual_seed(1)
        _same(g(x), eager)


def test_plan_threads_draw_in_the_order_of_the_captured_graph():
    """Two branches on two threads: the light one drew its mask first, before the heavy one that
    comes first in the graph, so a seeded plan run gave other masks than the graph run whole."""
    dg.manual_seed(0)
    w1, w2 = dg.randn(128, 128, requires_grad=True), dg.randn(128, requires_grad=True)

    def f(x, y):
        heavy = x
        for _ in range(6):
            heavy = (heavy @ w1).tanh()
        return F.dropout(heavy, 0.5, True).sum() + F.dropout(y * w2, 0.5, True).sum()

    x, y = dg.randn(128, 128), dg.randn(128)
    with dg.no_grad():
        graph = optimize(capture(f, (x, y))[0])
    arrays = (x.array, y.array, w1.array, w2.array)
    dg.manual_seed(5)
    want = Runner(graph)(*arrays)[0]
    plan = independent(graph)
    assert len(plan.subgraphs) >= 3
    with LocalExecutor(plan, workers=2) as ex:
        for _ in range(5):
            dg.manual_seed(5)
            np.testing.assert_array_equal(ex.run(*arrays)[0], want)


# ---- 6. pow in fused code -------------------------------------------------------------------------------
def test_fused_integer_and_bool_pow_match_eager():
    f = lambda a, b: (a * 1 + 0) ** (b - 1) + 1  # noqa: E731
    a, b = dg.tensor(np.array([2, 3, -1, 1, -1])), dg.tensor(np.array([0, 1, 2, 0, -2]))
    with dg.no_grad():
        g, _ = _compile(f, (a, b))
        _same(g(a, b), f(a, b))
    graph = capture(lambda m: (m & m) ** True, [dg.tensor(np.array([True, False]))])[0]
    assert Runner(fuse(graph))(np.array([True, False]))[0].dtype == np.bool_
    pow_into = out_function(np, "pow")
    for x, y in [
        (np.array([2.0, -0.0, 3.5]), np.array([0.5, -1.0, 2.0])),
        (np.array([2, -2, 1]), np.array([-1, 3, -5])),
    ]:
        out = np.empty_like(x)
        with np.errstate(divide="ignore"):  # -0.0 ** -1
            assert pow_into(x, y, out=out) is out
            np.testing.assert_array_equal(out, dg.tensor(x).pow(dg.tensor(y)).numpy())


# ---- 7. inputs of another shape or dtype -------------------------------------------------------------------
def test_runner_refuses_an_input_of_another_shape_or_dtype_by_name():
    graph = capture(lambda x: (x.exp() * 2).sum(0), [randn(2, 3)])[0]
    for codegen in (True, False):
        run = Runner(graph, codegen=codegen)
        with pytest.raises(
            errors.ShapeError, match=r"input 0 \(%in0\) is float64 \(1, 3\).*captured for float64 \(2, 3\)"
        ):
            run(np.ones((1, 3)))
        with pytest.raises(errors.DTypeError, match=r"input 0 \(%in0\) is float32 \(2, 3\)"):
            run(np.ones((2, 3), np.float32))


def test_replicas_of_a_graph_captured_at_the_full_batch_are_refused():
    x = randn(2, 3)
    graph = optimize(capture(lambda x: (x.exp() * 2).sum(0), [x])[0])
    with LocalExecutor(replicas(graph, 2, combine=["sum"])) as ex:
        with pytest.raises(errors.ShapeError, match=r"plan input 0 \(%in0\) gives its subgraphs shape \(1, 3\)"):
            ex.run(x.array)


# ---- 8. 0-d results and the check capture -------------------------------------------------------------------
def test_zero_d_outputs_are_arrays_that_in_place_ops_can_write():
    x = dg.randn(3)
    f = lambda x, s: ((x * s).sum(), dg.tensor(2.0) * 3)  # noqa: E731  (the second folds to a constant)
    with dg.no_grad():
        g, warned = _compile(f, (x, dg.tensor(4.0)))
        assert g.graph is not None and not warned
        out, const = g(x, dg.tensor(2.0))
        assert isinstance(out.array, np.ndarray) and isinstance(const.array, np.ndarray)
        out += 1
        const.add_(1)
        assert out.item() == pytest.approx((x * 2).sum().item() + 1)
        assert g(x, dg.tensor(2.0))[1].item() == 6.0  # the constant is returned as a copy
    graph = capture(lambda x: x.sum(), [x])[0]
    assert isinstance(Runner(graph, codegen=False)(x.array)[0], np.ndarray)


def test_an_error_in_the_check_capture_falls_back_to_eager_with_a_warning():
    def f(x):
        if (x.array < 0).any():  # a raw array: no hook sees this read, the perturbed values raise
            raise ValueError("negative input")
        return x * 2

    x = dg.tensor(np.array([1.0, 2.0]))
    with dg.no_grad():
        g, warned = _compile(f, (x,))
        assert g.graph is None and any("perturbed input values raised ValueError" in w for w in warned)
        _same(g(x), f(x))
