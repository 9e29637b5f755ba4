"""Gradient checkpointing and mixed precision: pure rewrites that keep a training step's outputs."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.amp import GradScaler
from distgraph.graph.capture import capture
from distgraph.graph.executor import Runner
from distgraph.graph.passes import DEFAULT, memory, optimize
from distgraph.graph.passes.amp import LOW_PRECISION_OPS, amp
from distgraph.graph.passes.checkpoint import SUFFIX, checkpoint
from tests.graph.helpers import assert_same_outputs


def train_step_graph(depth=8, width=32, batch=256, dtype=np.float64):
    """A deep tanh MLP's training step; the batch is large so saved activations dominate memory."""
    dg.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(width, 4))
    if dtype == np.float64:
        model.double()
    rng = np.random.default_rng(0)
    x = dg.tensor(rng.standard_normal((batch, width)).astype(dtype))
    y = dg.tensor(rng.integers(0, 4, batch))
    params = list(model.parameters())
    graph, lifted, _ = capture(lambda a, b: nn.functional.cross_entropy(model(a), b), [x, y], grad_of=params)
    return graph, [x.array, y.array] + [p.array for p in lifted]


def test_sqrt_segments_preserve_outputs_and_lower_the_peak():
    graph, arrays = train_step_graph()
    before = (graph.nodes, graph.outputs, graph.inputs)
    ck = checkpoint(graph)
    assert any(n.name.endswith(SUFFIX) for n in ck.nodes)
    assert_same_outputs(graph, ck, arrays, tol=0.0)  # recomputation repeats the same arithmetic
    assert memory.plan(ck).peak_bytes < 0.75 * memory.plan(graph).peak_bytes
    assert (graph.nodes, graph.outputs, graph.inputs) == before and len(ck.nodes) > len(graph.nodes)  # pure pass


def test_checkpoint_before_the_default_passes_survives_them():
    """CSE must not merge a recomputation back into its original (it did: the pass was silently undone
    in `optimize(g, (checkpoint, *DEFAULT))`, the documented pipeline)."""
    graph, arrays = train_step_graph()
    plain, ck = optimize(graph), optimize(graph, (checkpoint, *DEFAULT))
    assert any(n.name.endswith(SUFFIX) for n in ck.nodes)
    assert memory.plan(ck).peak_bytes < 0.75 * memory.plan(plain).peak_bytes
    assert_same_outputs(graph, ck, arrays, tol=0.0)


def test_the_last_segment_is_kept_not_recomputed():
    graph, arrays = train_step_graph()
    ck = checkpoint(graph, segments=4)
    n_fwd = [n.name for n in graph.nodes].index(graph.outputs[0]) + 1
    size = -(-n_fwd // 4)
    last = {n.name for n in graph.nodes[3 * size : n_fwd]}
    recomputed = {n.name.removesuffix(SUFFIX) for n in ck.nodes if n.name.endswith(SUFFIX)}
    assert recomputed and not recomputed & last  # backward starts in the last segment while it is alive
    assert memory.plan(ck).peak_bytes < 0.75 * memory.plan(graph).peak_bytes
    assert_same_outputs(graph, ck, arrays, tol=0.0)


def test_memory_budget_picks_enough_segments():
    graph, arrays = train_step_graph()
    full, sqrt = memory.plan(graph).peak_bytes, memory.plan(checkpoint(graph)).peak_bytes
    budget = (full + sqrt) // 2
    ck = checkpoint(graph, budget_bytes=budget)
    assert memory.plan(ck).peak_bytes <= budget
    assert_same_outputs(graph, ck, arrays, tol=0.0)


def test_amp_runs_matmuls_in_float16_and_keeps_float32_master_weights():
    graph, arrays = train_step_graph(depth=3, batch=32, dtype=np.float32)
    low = amp(graph)
    lp = [n for n in low.nodes if n.spec.dtype == "float16"]
    assert lp and all(n.op == "cast" or n.op in LOW_PRECISION_OPS for n in lp)
    # the backward's products too (they were named wrong and stayed float32): every matmul-shaped op is low
    matmuls = [n for n in graph.nodes if n.op in LOW_PRECISION_OPS]
    assert {n.op for n in matmuls} >= {"matmul_tn", "matmul_nt"} or {n.op for n in matmuls} >= {"linear_weight_grad"}
    assert all(any(m.name + "~lp" == n.name for n in lp) for m in matmuls)
    assert [s.dtype for _, s in low.inputs] == [s.dtype for _, s in graph.inputs]  # float32 parameters in
    ref, out = Runner(graph)(*arrays), Runner(low)(*arrays)
    for a, b in zip(ref, out):
        assert b.dtype == a.dtype
        np.testing.assert_allclose(b, a, rtol=5e-2, atol=5e-3)


def test_amp_op_list_names_registry_ops_and_refuses_a_dtype_numpy_lacks():
    from distgraph.errors import ConfigError
    from distgraph.ops.registry import REGISTRY

    assert all(op in REGISTRY for op in LOW_PRECISION_OPS)
    graph, _ = train_step_graph(depth=1, batch=4, dtype=np.float32)
    with pytest.raises(ConfigError, match="float16' or 'bfloat16"):
        amp(graph, dtype="int8")
    try:
        np.dtype("bfloat16")
    except TypeError:
        with pytest.raises(ConfigError, match="bfloat16 needs numpy to know the dtype"):
            amp(graph, dtype="bfloat16")


def test_grad_scaler_skips_and_counts_overflowing_steps_and_adapts_the_scale():
    p = dg.tensor([1.0, 2.0], requires_grad=True)
    opt = dg.optim.SGD([p], lr=0.1)
    scaler = GradScaler(init_scale=8.0, growth_interval=2)
    scaler.scale((p * p).sum()).backward()
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(p.detach().numpy(), [1.0 - 0.1 * 2, 2.0 - 0.1 * 4])  # unscaled gradient used
    p.grad = dg.tensor([np.inf, 0.0])
    before = p.detach().numpy().copy()
    scaler.step(opt)
    scaler.update()
    assert scaler.skipped_steps == 1 and np.array_equal(p.detach().numpy(), before)
    assert scaler.get_scale() == pytest.approx(4.0)


def _scaled_pair(dtype=dg.float64):
    dg.manual_seed(0)
    make = lambda: nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))  # noqa: E731
    a, b = make(), make()
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        for p in m.parameters():
            p.data = p.detach().to(dtype)
    return a, b


def test_compiled_step_with_a_grad_scaler_equals_the_eager_scaler_recipe():
    model, ref = _scaled_pair()
    rng = np.random.default_rng(0)
    x, y = dg.tensor(rng.standard_normal((16, 8))), dg.tensor(np.arange(16) % 3)
    opt, ref_opt = dg.optim.SGD(model.parameters(), lr=0.1), dg.optim.SGD(ref.parameters(), lr=0.1)
    scaler, ref_scaler = (
        GradScaler(init_scale=2.0**10, growth_interval=2),
        GradScaler(init_scale=2.0**10, growth_interval=2),
    )
    step = dg.compile(model, (x, y), loss_fn=nn.functional.cross_entropy, optimizer=opt, grad_scaler=scaler)
    for _ in range(4):
        loss = step(x, y)
        ref_opt.zero_grad()
        ref_loss = nn.functional.cross_entropy(ref(x), y)
        ref_scaler.scale(ref_loss).backward()
        ref_scaler.step(ref_opt)
        ref_scaler.update()
        np.testing.assert_allclose(loss.array, ref_loss.array, rtol=1e-12)
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.array, q.array, rtol=1e-12, atol=1e-14)
    assert scaler.get_scale() == ref_scaler.get_scale() == 2.0**12  # grew twice (every 2 clean steps)


def test_amp_graph_with_a_grad_scaler_skips_and_counts_overflowing_steps():
    """float16 matmuls in the graph and a scale large enough to overflow them: the step is skipped
    and counted, the parameters stay finite and unchanged, the scale backs off until steps go through
    (before, the amp graph had no loss scaling: NaN went into the parameters)."""
    model, _ = _scaled_pair(dg.float32)
    rng = np.random.default_rng(0)
    x, y = dg.tensor(rng.standard_normal((16, 8)).astype(np.float32)), dg.tensor(np.arange(16) % 3)
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    scaler = GradScaler(init_scale=2.0**30)
    step = dg.compile(model, (x, y), loss_fn=nn.functional.cross_entropy, optimizer=opt, grad_scaler=scaler,
                      passes=(amp, *DEFAULT))  # fmt: skip
    assert any(n.spec.dtype == "float16" for n in step.graph.nodes)
    before = [p.array.copy() for p in model.parameters()]
    step(x, y)
    assert scaler.skipped_steps == 1 and scaler.get_scale() == 2.0**29
    assert all(np.array_equal(p.array, b) for p, b in zip(model.parameters(), before))
    losses = [float(step(x, y).item()) for _ in range(30)]
    assert 1 < scaler.skipped_steps < 30 and all(np.isfinite(p.array).all() for p in model.parameters())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
