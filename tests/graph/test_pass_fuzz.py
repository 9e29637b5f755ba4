"""Random programs through capture, every graph pass and both executors: outputs and gradients equal eager.

Each seed builds a small program from a menu of ops (elementwise with broadcasting, identities the
simplifier removes, repeated subexpressions CSE merges, constants folding evaluates, reductions,
matmuls, shape ops, softmax, where), runs it eagerly with backward, then captures the same program
with `grad_of` and runs the graph after each pass alone, after the default pipeline, with and without
memory planning and generated code. Every result must equal eager's within float64 rounding.
"""

import numpy as np
import pytest

import distgraph as dg
from distgraph.graph.capture import capture
from distgraph.graph.executor import LocalExecutor, Runner
from distgraph.graph.ir import Graph
from distgraph.graph.partition import independent, pipeline
from distgraph.graph.passes import DEFAULT, checkpoint, cse, dce, fold, fuse, optimize, simplify

ROWS, COLS = 4, 5
_FULL, _ROW, _COL = (ROWS, COLS), (ROWS, 1), (1, COLS)


def _unary(rng):
    return rng.choice(
        [
            lambda a: a.exp().tanh(),
            lambda a: a.sin(),
            lambda a: a.tanh(),
            lambda a: a.sigmoid(),
            lambda a: a.relu(),
            lambda a: a.abs(),
            lambda a: -a,
            lambda a: -(-a),  # neg(neg) — simplify drops both
            lambda a: a * a,
            lambda a: (a.abs() + 1.0).sqrt(),
            lambda a: (a.abs() + 1.0).log(),
            lambda a: a * 1.0,  # identities simplify removes
            lambda a: a + 0.0,
            lambda a: a / 1.0,
            lambda a: a * 2.5 - 0.5,
            lambda a: a.clamp(-0.5, 0.7),
            lambda a: a.pow(3),
        ]
    )


def _binary(rng):
    return rng.choice(
        [
            lambda a, b: a + b,
            lambda a, b: a - b,
            lambda a, b: a * b,
            lambda a, b: a / (b.abs() + 1.0),
            lambda a, b: dg.maximum(a, b),
            lambda a, b: dg.minimum(a, b),
            lambda a, b: dg.where(a > b, a, b * 0.5),
        ]
    )


class _Program:
    """A recipe drawn once from a seed, replayed on eager tensors and under capture alike."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.n_ops = int(rng.integers(4, 14))
        self.steps = []
        for _ in range(self.n_ops):
            kind = rng.choice(["unary", "binary", "reduce", "matmul", "shape", "softmax", "const", "repeat"])
            self.steps.append((str(kind), int(rng.integers(1 << 30))))
        self.n_outputs = int(rng.integers(1, 3))
        self.weights = [rng.standard_normal(_FULL) for _ in range(self.n_outputs)]
        self.constant = rng.standard_normal(_COL)

    def __call__(self, x, w, b):
        pool = [x, b.reshape(1, COLS), (x @ w)]
        for kind, seed in self.steps:
            rng = np.random.default_rng(seed)
            pick = lambda: pool[int(rng.integers(len(pool)))]  # noqa: E731
            a = pick()
            if kind == "unary":
                out = _unary(rng)(a)
            elif kind == "binary":
                out = _binary(rng)(a, pick())
            elif kind == "reduce":
                red = rng.choice(["sum", "mean", "amax"])
                dim = int(rng.integers(2))
                out = getattr(a.expand(*_FULL), str(red))(dim, keepdim=True)
            elif kind == "matmul":
                full = a.expand(*_FULL)
                out = full @ w if rng.integers(2) else full @ (full.T @ full) * 0.1
            elif kind == "shape":
                full = a.expand(*_FULL)
                out = rng.choice(
                    [
                        lambda t: t.T.reshape(COLS, ROWS).T,
                        lambda t: t.reshape(ROWS * COLS).reshape(ROWS, COLS),
                        lambda t: dg.cat([t[:, :2], t[:, 2:]], dim=1),
                        lambda t: t.flip(0),
                        lambda t: t.permute(1, 0).contiguous().permute(1, 0),
                        lambda t: t[1:3].sum(0, keepdim=True),
                    ]
                )(full)
            elif kind == "softmax":
                out = a.expand(*_FULL).softmax(int(rng.integers(2))) if rng.integers(2) else a.log_softmax(-1)
            elif kind == "const":  # constants fold and broadcast
                c = dg.tensor(self.constant) * 2.0 + 1.0
                out = a * c.exp().tanh()
            else:  # the same op on the same operand twice: CSE merges them
                f = _unary(rng)
                out = f(a) + f(a)
            pool.append(out)
        picks = pool[-self.n_outputs :]
        loss = sum((p.expand(*_FULL) * dg.tensor(wt)).sum() for p, wt in zip(picks, self.weights))
        return (loss, *picks)


def _inputs(seed):
    rng = np.random.default_rng(seed + 10_000)
    return [
        dg.tensor(rng.standard_normal(_FULL), requires_grad=True),
        dg.tensor(rng.standard_normal((COLS, COLS)) * 0.5, requires_grad=True),
        dg.tensor(rng.standard_normal(COLS), requires_grad=True),
    ]


def _eager(program, inputs):
    outs = program(*inputs)
    outs[0].backward()
    grads = [np.zeros_like(t.array) if t.grad is None else t.grad.array.copy() for t in inputs]  # unused: zeros
    return [o.detach().array.copy() for o in outs] + grads


PASS_SETS = {
    "none": (),
    "fold": (fold,),
    "simplify": (simplify,),
    "cse": (cse,),
    "dce": (dce,),
    "fuse": (fuse,),
    "default": DEFAULT,
    "default twice": DEFAULT + DEFAULT,
    "checkpoint": (checkpoint,),
    "checkpoint + default": (checkpoint, *DEFAULT),
}


@pytest.mark.parametrize("seed", range(40))
def test_every_pass_preserves_outputs_and_gradients_of_a_random_program(seed):
    program = _Program(seed)
    want = _eager(program, _inputs(seed))
    inputs = _inputs(seed)
    graph, params, _ = capture(program, inputs, grad_of=inputs)
    assert params == [] or all(any(p is t for t in inputs) for p in params)
    arrays = [t.array for t in inputs]
    for name, passes in PASS_SETS.items():
        optimized = optimize(graph, passes)
        for codegen in (True, False):
            for plan_memory in (True, False):
                got = Runner(optimized, plan_memory=plan_memory, codegen=codegen)(*arrays)
                # the graph's outputs: the loss, the extra outputs, then one gradient per input
                assert len(got) == len(want), (name, codegen, plan_memory)
                for i, (g, w) in enumerate(zip(got, want)):
                    g = np.asarray(g)
                    assert g.shape == w.shape, (name, codegen, plan_memory, i, g.shape, w.shape)
                    np.testing.assert_allclose(
                        g, w, rtol=1e-10, atol=1e-10, err_msg=f"seed {seed}, passes {name}, "
                        f"codegen={codegen}, plan_memory={plan_memory}, output {i}",
                    )  # fmt: skip
    # a pass never mutates its input graph: running the original again gives the same values
    for g, w in zip(Runner(graph)(*arrays), want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(87, 97))
def test_a_saved_random_graph_loads_and_gives_the_same_bits(seed, tmp_path):
    """Every attribute a random program's optimized graph holds (slices, fused programs, folded
    constants, dtypes) survives the file format."""
    inputs = _inputs(seed)
    graph = optimize(capture(_Program(seed), inputs, grad_of=inputs)[0])
    graph.save(tmp_path / "g.dg")
    back = Graph.load(tmp_path / "g.dg")
    assert str(back) == str(graph)
    arrays = [t.array for t in inputs]
    for a, b in zip(Runner(back)(*arrays), Runner(graph)(*arrays)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(52, 72))
def test_partitions_of_a_random_program_give_its_outputs(seed):
    """The scheduler's plans — independent subgraphs and 2- or 3-stage pipelines, forward and backward
    — executed subgraph by subgraph give the captured graph's outputs."""
    program, inputs = _Program(seed), _inputs(seed)
    graph, _, _ = capture(program, inputs, grad_of=inputs)
    graph = optimize(graph)
    arrays = [t.array for t in inputs]
    want = Runner(graph)(*arrays)
    for plan in (independent(graph), pipeline(graph, 2), pipeline(graph, 3)):
        got = LocalExecutor(plan, workers=2).run(*arrays)
        assert len(got) == len(want), plan.kind
        for i, (g, w) in enumerate(zip(got, want)):
            assert np.shape(g) == np.shape(w), (plan.kind, i)
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=f"seed {seed}, {plan.kind}, output {i}")


@pytest.mark.parametrize("seed", range(40, 52))
def test_compiled_function_equals_eager_on_a_random_program(seed):
    """dg.compile's inference path (guards, generated code, perturbed re-trace) gives eager's outputs,
    and a second call on new values of the same shapes too (the graph holds no data baked in)."""
    program = _Program(seed)
    fn = lambda x, w, b: program(x, w, b)  # noqa: E731
    compiled = dg.compile(fn, [t.detach() for t in _inputs(seed)])
    for shift in (0.0, 0.3):
        inputs = [t.detach() + shift for t in _inputs(seed)]
        with dg.no_grad():
            want = [o.array for o in program(*inputs)]
        got = compiled(*inputs)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.array, w, rtol=1e-10, atol=1e-10, err_msg=f"seed {seed}, shift {shift}")


class _RowProgram:
    """A program whose rows are independent (elementwise, `x @ w`, softmax and reductions along a row),
    with a loss averaged over the rows: a pipeline may cut it into micro-batches."""

    KINDS = ("unary", "binary", "rowreduce", "matmul", "softmax", "const", "repeat")

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.steps = [(str(rng.choice(self.KINDS)), int(rng.integers(1 << 30))) for _ in range(rng.integers(3, 10))]
        self.weight = rng.standard_normal(_COL)
        self.constant = rng.standard_normal(_COL)

    def __call__(self, x, w, b):
        rows = x.shape[0]
        pool = [x, b.reshape(1, COLS), x @ w]
        for kind, seed in self.steps:
            rng = np.random.default_rng(seed)
            pick = lambda: pool[int(rng.integers(len(pool)))]  # noqa: E731
            a = pick().expand(rows, COLS)
            if kind == "unary":
                out = _unary(rng)(a)
            elif kind == "binary":
                out = _binary(rng)(a, pick())
            elif kind == "rowreduce":
                out = getattr(a, str(rng.choice(["sum", "mean", "amax"])))(1, keepdim=True).expand(rows, COLS)
            elif kind == "matmul":
                out = a @ w
            elif kind == "softmax":
                out = a.softmax(1) if rng.integers(2) else a.log_softmax(1)
            elif kind == "const":
                out = a * (dg.tensor(self.constant) * 2.0).tanh()
            else:
                f = _unary(rng)
                out = f(a) + f(a)
            pool.append(out)
        last = pool[-1].expand(rows, COLS) + pool[2] * 0.1  # the loss depends on w, whatever was drawn
        return (last * dg.tensor(self.weight)).sum(1).mean(), last


@pytest.mark.parametrize("seed", range(72, 87))
def test_micro_batched_pipeline_of_a_random_program_gives_the_whole_batch_step(seed):
    """Captured at micro-batch size (2 rows), run as 2 or 3 stages over 2 micro-batches of a 4-row batch:
    the loss and the parameters' gradients (averaged), the per-row output (concatenated) and the batch's
    gradient (concatenated, divided by the micro-batches: "cat_mean") equal the 4-row graph's."""
    program = _RowProgram(seed)
    full, micro = _inputs(seed), _inputs(seed)
    micro[0] = micro[0].detach()[:2].requires_grad_()
    whole, _, _ = capture(program, full, grad_of=full)
    graph, _, _ = capture(program, micro, grad_of=micro)
    arrays = [t.array for t in full]
    want = Runner(whole)(*arrays)
    for stages in (2, 3):
        plan = pipeline(optimize(graph), stages, micro_batches=2, combine=("mean", "cat", "cat_mean", "mean", "mean"))
        got = LocalExecutor(plan, workers=2).run(*arrays)
        for i, (g, w) in enumerate(zip(got, want)):
            assert np.shape(g) == np.shape(w), (stages, i)
            np.testing.assert_allclose(
                g, w, rtol=1e-12, atol=1e-12, err_msg=f"seed {seed}, {stages} stages, output {i}"
            )
