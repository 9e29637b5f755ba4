"""Generated code (graph/codegen.py) against the node-by-node interpreter and eager execution, float64."""

import copy
import re
import threading

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.errors import DistgraphError
from distgraph.graph.capture import capture
from distgraph.graph.codegen import generate
from distgraph.graph.executor import Runner
from distgraph.graph.ir import Node
from distgraph.graph.passes import memory, optimize
from tests.graph.helpers import captured, randn

TOL = 1e-12


def _diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))


def _check(graph, arrays, eager):
    """Generated code (optimized graph) == interpreter (same graph) == eager, output by output."""
    graph = optimize(graph)
    ref = Runner(graph, codegen=False)(*arrays)
    gen = Runner(graph)
    for out in (gen(*arrays), gen(*arrays)):  # second call: buffers are reused, results still right
        assert len(out) == len(ref) == len(eager)
        for o, r, e in zip(out, ref, eager):
            assert np.shape(o) == np.shape(r) == np.shape(e)
            assert _diff(o, r) <= TOL and _diff(o, e) <= TOL
    return gen


def _mlp64():
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    for p in model.parameters():
        p.data = p.detach().to(dg.float64)
    return model


def test_mlp_train_step_matches_interpreter_and_eager():
    model = _mlp64()
    x, y = randn(8, 5), dg.tensor(np.arange(8) % 3)
    params = list(model.parameters())
    graph, lifted, _ = capture(lambda x, y: F.cross_entropy(model(x), y), [x, y], grad_of=params)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    eager = [loss.array] + [p.grad.array for p in params]
    _check(graph, [x.array, y.array] + [p.array for p in lifted], eager)


def test_conv_net_matches_interpreter_and_eager():
    w, b = randn(4, 3, 3, 3), randn(4)

    def net(x, w, b):
        h = F.conv2d(x, w, b, padding=1).relu()
        return F.max_pool2d(h, 2).reshape(2, -1).tanh().sum(1)

    x = randn(2, 3, 8, 8)
    graph, arrays = captured(net, x, w, b)
    _check(graph, arrays, [net(x, w, b).array])


def test_fused_elementwise_tree_is_inlined_and_matches():
    def fn(x, y):
        tree = ((x * y).exp() + (x - y).tanh()) * x.sigmoid() / (y * y + 1.0)
        return tree, ((tree.sum() * 0.5).exp() + 1.0).log()  # a 0-d chain too: scalars, no buffers

    x, y = randn(5, 7), randn(1, 7)
    graph, arrays = captured(fn, x, y)
    gen = _check(graph, arrays, [t.array for t in fn(x, y)])
    assert any(n.op == "fused" for n in gen.graph.nodes)
    assert "out=" not in gen.program.source and "b0" in gen.program.source  # positional out= buffers


def test_views_and_reshapes_match_and_never_alias_a_buffer_returned():
    def fn(x):
        h = (x @ x.T).tanh()  # would be a buffer, but a view of it is returned: allocated per call
        return h.reshape(-1)[::2], (h * 2.0).T.exp(), x.permute(1, 0).reshape(3, 4)

    x = randn(4, 3)
    graph, arrays = captured(fn, x)
    gen = _check(graph, arrays, [t.array for t in fn(x)])
    first = [o.copy() for o in gen(*arrays)]
    held = gen(*arrays)
    gen(*[a * 3.0 for a in arrays])  # a later call must not overwrite results already returned
    for a, b in zip(first, held):
        assert _diff(a, b) == 0.0


def test_buffers_are_reused_and_peak_stays_planned():
    def deep(x):
        for _ in range(8):
            x = (x @ x.T).tanh() * 0.5 + 0.25
        return x.sum()

    x = randn(16, 16)
    graph, arrays = captured(deep, x)
    gen = _check(graph, arrays, [deep(x).array])
    program = gen.program
    writes = re.findall(r", (b\d+)\)$", program.source, flags=re.M)
    assert len(writes) >= 24  # every matmul, tanh and affine step writes into a buffer
    one = 16 * 16 * 8
    assert program.arena_bytes <= 4 * one < len(program.buffers) * one  # their bytes are reused in the arena
    assert {offset for *_, offset in program.buffers} <= {0, one, 2 * one, 3 * one}


def test_optimizer_captured_into_the_step_equals_eager_sgd():
    model = _mlp64()
    ref = copy.deepcopy(model)
    x, y = randn(8, 5), dg.tensor(np.arange(8) % 3)
    opt = dg.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01)
    ref_opt = dg.optim.SGD(ref.parameters(), lr=0.1, weight_decay=0.01)
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)
    assert len(step.graph.outputs) == 1 + len(list(model.parameters()))  # loss + updated parameters
    for i in range(3):
        if i == 2:
            opt.param_groups[0]["lr"] = ref_opt.param_groups[0]["lr"] = 0.05  # a scheduler's change is seen
        loss = step(x, y)
        ref_opt.zero_grad()
        ref_loss = F.cross_entropy(ref(x), y)
        ref_loss.backward()
        ref_opt.step()
        assert _diff(loss.array, ref_loss.array) <= TOL
        for p, q in zip(model.parameters(), ref.parameters()):
            assert _diff(p.array, q.array) <= TOL
    runner, lifted = next(iter(step.variants.values()))[:2]  # generated vs interpreted, same write-back
    arrays = [x.array, y.array, *step.update.arrays(), *[p.array for p in lifted]]
    gen_params, int_params = [a.copy() for a in arrays], [a.copy() for a in arrays]
    gen_out = runner(*gen_params)
    int_out = Runner(runner.graph, codegen=False, write_back=runner.write_back)(*int_params)
    assert all(_diff(a, b) <= TOL for a, b in zip(gen_out + gen_params, int_out + int_params))


def test_write_back_copies_when_the_input_is_read_later():
    def fn(w):
        new = w - 0.5 * w.exp()
        return new, w.sum()  # w read after its new value is made: no in-place write

    w = randn(3, 3)
    graph, arrays = captured(fn, w)
    expect = [t.array for t in fn(w)]
    runner = Runner(graph, write_back={0: 0})
    target = arrays[0].copy()
    outs = runner(target)
    assert _diff(target, expect[0]) == 0.0 and _diff(outs[1], expect[1]) <= TOL
    interp_target = arrays[0].copy()
    Runner(graph, codegen=False, write_back={0: 0})(interp_target)
    assert _diff(interp_target, target) == 0.0


def test_concurrent_calls_never_share_buffers():
    fn = lambda x: ((x @ x).tanh() @ x).exp().sum(0)  # noqa: E731
    xs = [randn(8, 8) * (k + 1) for k in range(4)]
    graph, _ = captured(fn, xs[0])
    runner = Runner(graph)
    results = {}

    def work(k):
        for _ in range(20):
            results[k] = runner(xs[k].array)[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert _diff(results[k], fn(xs[k]).array) <= TOL


def test_compiled_fast_path_falls_back_on_a_new_shape():
    f = dg.compile(lambda x: (x * 2.0).tanh(), (randn(3, 2),))
    for shape in [(3, 2), (3, 2), (5, 2), (3, 2)]:
        x = randn(*shape)
        if shape == (5, 2):
            with pytest.warns(dg.graph.compile.CompileWarning, match="re-capturing"):
                out = f(x)
        else:
            out = f(x)
        assert _diff(out.array, (x * 2.0).tanh().array) <= TOL
    with pytest.warns(dg.graph.compile.CompileWarning, match="input 0 is a ndarray"):
        with pytest.raises(AttributeError):  # what the original does with a numpy array
            f(np.zeros((3, 2)))


def test_source_never_contains_graph_strings():
    x = randn(2, 2)
    graph, _ = captured(lambda x: x.sum(0), x)
    node = graph.nodes[0]
    bad = Node(node.name, node.op, node.inputs, {"axes); import os; (": (0,)}, node.spec)
    with pytest.raises(DistgraphError, match="not a Python identifier"):
        generate(graph.replace(nodes=(bad,)), "cpu", memory.plan(graph))
    source = Runner(graph).program.source
    assert "%" not in source and "sum" not in source  # names are generated; forwards are closure values


def test_linear_layers_write_into_buffers_so_a_call_allocates_only_its_outputs():
    """Linear and its weight gradient go through dot(..., out=buffer): after the first call, a call of a
    2-layer MLP's training graph allocates its returned arrays and the one activation backward keeps
    (allocated per call so that its bytes are free while the gradients are made), nothing else."""
    import tracemalloc

    model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 8))
    for p in model.parameters():
        p.data = p.detach().to(dg.float64)
    x, y = randn(128, 64), dg.tensor(np.arange(128) % 8)
    params = list(model.parameters())
    graph, lifted, _ = capture(lambda x, y: F.cross_entropy(model(x), y), [x, y], grad_of=params)
    arrays = [x.array, y.array] + [p.array for p in lifted]
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    gen = _check(graph, arrays, [loss.array] + [p.grad.array for p in params])
    tracemalloc.start()
    try:
        outs = gen(*arrays)
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        outs = gen(*arrays)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    returned = sum(np.asarray(o).nbytes for o in outs)
    hidden = 128 * 256 * 8  # one hidden activation: what a call allocating its linear outputs would add
    assert peak < returned + hidden + hidden // 2, (peak, returned)


def _first_call_peak(runner, arrays):
    """Bytes numpy allocates in a runner's first call: its arena of buffers and everything else."""
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        runner(*arrays)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_a_relu_mlp_step_measures_the_planned_peak_with_relu_written_into_buffers():
    """relu writes into buffers, and the activations backward keeps are allocated per call instead of
    in the arena: there their bytes would stay taken while the gradients accumulate (the measured peak
    was 29 % over the plan with every buffer in the arena). Measured, arena included: 9 % over."""
    layers = [nn.Linear(64, 64) for _ in range(16)]
    model = nn.Sequential(*[m for layer in layers for m in (layer, nn.ReLU())], nn.Linear(64, 10))
    x, y = randn(256, 64).float(), dg.tensor(np.arange(256) % 10)
    params = list(model.parameters())
    graph, lifted, _ = capture(lambda x, y: F.cross_entropy(model(x), y), [x, y], grad_of=params)
    graph = optimize(graph)
    arrays = [x.array, y.array] + [p.array for p in lifted]
    runner = Runner(graph)
    assert "relu_into" in {getattr(v, "__name__", "") for v in runner.program.closure}
    planned = memory.plan(graph).peak_bytes
    measured = _first_call_peak(runner, arrays)
    assert measured <= 1.15 * planned, (measured, planned)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    out = runner(*arrays)
    assert _diff(out[0], loss.array) == 0.0
    for got, p in zip(out[1:], params):
        assert _diff(got, p.grad.array) <= 1e-6
