"""The op table: every differentiable op is defined here once, as an array forward and a backward rule.

An Op's forward takes the device's array namespace (`xp`: numpy or cupy) and arrays, plus keyword
attributes, and returns an array (or `(array, extra)` when `saves_extra`, `extra` being kept for
backward). Its backward rule takes the Node (`ctx.inputs`, `ctx.attrs`, `ctx.out`, `ctx.saved`) and
the output gradient as a Tensor, and returns one Tensor (or None) per input, written with
differentiable ops so higher-order gradients and captured backward graphs come for free. Gradients
are reduced to each input's shape by the engine, so rules may return broadcast gradients.

An op may also carry an array rule (`@op.array_grad`): the same derivative on raw arrays, `rule(ctx,
g) -> one array (or None) per input`, with `g` an array and the inputs read as `ctx.inputs[i].array`
(the output as `ctx.out_array`). The engine uses it whenever no graph of the backward is wanted
(create_graph=False, no capture), which skips building a Tensor and a Node per backward step; the
differentiable rule stays the definition, and tests/autograd/test_fast_backward.py holds the two equal.

An elementwise op whose forward is not one numpy ufunc may carry a writer (`@op.writer`, all of
them in ops/writers.py): `factory(xp) -> f(*arrays, out=None, **attrs)` computing the forward's exact
bits into `out` (or None where `xp` has no such function). Compiled graphs then write it into
preallocated buffers (graph/passes/fusion.py); `out` may be one of its inputs (in-place execution).

`kind` tells graph passes what the op is: "elementwise" (fusable), "reduction", "view", "matmul",
"index", "other". `save` lists the inputs whose values backward reads (checked against in-place
changes); `view` marks outputs that may share the input's memory (they share its version counter).
"""

from distgraph.autograd.function import apply

REGISTRY = {}


class Op:
    __slots__ = (
        "name",
        "forward",
        "backward",
        "array_backward",
        "kind",
        "save",
        "saves_output",
        "saves_extra",
        "view",
        "saved_for",
        "writer_factory",
        "__dict__",
    )

    def __init__(self, name, forward, kind, save, saves_output, saves_extra, view, saved_for=None):
        self.name = name
        self.forward = forward
        self.backward = None
        self.array_backward = None
        self.kind = kind
        self.save = tuple(save)
        self.saves_output = saves_output
        self.saves_extra = saves_extra
        self.view = view
        self.saved_for = saved_for or {}
        self.writer_factory = None

    def writer(self, factory):
        """Decorator: attach `factory(xp) -> f(*arrays, out=None, **attrs)` (see module docstring)."""
        self.writer_factory = factory
        return factory

    def grad(self, rule):
        """Decorator: attach the backward rule `rule(ctx, grad) -> grads per input`."""
        self.backward = rule
        return rule

    def array_grad(self, rule):
        """Decorator: attach the array rule `rule(ctx, g_array) -> arrays per input` (see module docstring)."""
        self.array_backward = rule
        return rule

    def __call__(self, *inputs, **attrs):
        return apply(self, inputs, attrs)

    def __repr__(self):
        return f"Op({self.name}, kind={self.kind})"


def defop(name, *, kind="other", save=(0,), saves_output=False, saves_extra=False, view=False, saved_for=None):
    """Decorator registering `forward(xp, *arrays, **attrs)` as op `name`. `saved_for` {i: j}: saved input
    i is read only for input j's gradient (mul's a, for b's), so when j needs none, a write into i
    after the op does not stop backward (torch saves it only then)."""

    def register(forward):
        if name in REGISTRY:
            raise ValueError(f"op {name!r} is defined twice")
        op = Op(name, forward, kind, save, saves_output, saves_extra, view, saved_for)
        REGISTRY[name] = op
        return op

    return register


def get_op(name):
    """Look an op up by name (used by graph deserialization and remote workers)."""
    try:
        return REGISTRY[name]
    except KeyError:
        from distgraph.errors import DistgraphError

        raise DistgraphError(f"unknown op {name!r}: not in distgraph's op registry") from None
