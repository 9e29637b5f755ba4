"""Capture: run a function eagerly once with a tracer installed and record every op into a Graph.

Every op goes through `distgraph.autograd.function.apply`, which reports `(op, inputs, attrs, out)`
to the tracer, so the IR is built from the same registry eager mode runs: no op exists twice.

Values are tracked by tensor identity. A tensor the tracer has not seen is either *lifted* into a
graph input that is read from the tensor at each call — a leaf that requires grad (a parameter, from a
module or a closure), or one of the `state` tensors (the compiled module's parameters and buffers,
frozen or not, also when reached through `.detach()` or `.data`), so optimizer updates, running
statistics and loaded weights are seen — or a constant (scalars, masks), whose array the graph keeps.
Constants taken from tensors that outlive the capture (a closure's frozen tensor) are reported in
`sources`, so the caller can guard them (graph/guards.py).

What a graph cannot represent raises CaptureError: a tensor changed in place after it was recorded, an
op with no tensor output, a traced value or lifted tensor read on the host (`host_read`), and a write
into an input, a lifted tensor or a constant's tensor that nothing reads afterwards (`acc.add_(y)`,
`w.clamp_()` under no_grad): it would be recorded as an out-of-place node that no output needs, so the
compiled function would silently skip the write. The optimizer capture writes nothing during the trace
(its update is traced out of place and written back by the runner), so it is unaffected.

Backward is captured by walking the autograd Nodes in reverse and calling each op's rule while the
tracer records (the rules are written with differentiable ops). The engine is not reused because
capture must see rule boundaries: an op whose rule reads raw arrays it saved in forward
(`saves_extra`, e.g. fused cross-entropy) would bake batch data into constants, so its gradient is
recorded as one opaque `vjp` node that recomputes forward and applies the rule at run time.
"""

from distgraph.autograd import grad_mode
from distgraph.autograd.engine import dependencies, sum_to_shape, topological_order
from distgraph.autograd.function import Node as AutogradNode
from distgraph.autograd.function import set_tracer
from distgraph.autograd.grad_mode import INFERENCE_VERSION
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device_of_array
from distgraph.errors import CaptureError, DistgraphError  # noqa: F401  (CaptureError: its old home)
from distgraph.graph.ir import Graph, Node, Spec, cost
from distgraph.ops import elementwise as ew
from distgraph.ops.registry import REGISTRY, defop, get_op


def spec_of(array):
    return Spec(tuple(array.shape), array.dtype.name, str(device_of_array(array)))


def version_of(t):
    """t's version counter; -1 for an inference tensor, whose counter reads raise outside inference_mode
    (it has none: nothing can write into it there)."""
    vc = t._vc
    return -1 if vc is INFERENCE_VERSION else vc[0]


class Tracer:
    """Records op applications; maps tensors (by identity, checked against their version) to value names."""

    def __init__(self, state=()):
        self.values = {}  # id(tensor) -> (name, tensor, version)
        self.arrays = {}  # id(array) -> (name, array): a rule's ctx.out is a new Tensor on a known array
        self.inputs = []  # (name, Spec)
        self.params = []  # lifted tensors, in input order after the explicit inputs
        self.constants = {}
        self.sources = {}  # "constant %c0" (or "tensor 1 read on the host") -> the tensor
        self._read = {}  # id -> tensor read on the host, not traced nor lifted
        self.state = {id(t.array): t for t in state}  # by array: `.detach()` and `.data` share it
        self.nodes = []
        self.specs = {}

    def add_input(self, t, name):
        self._bind(t, name)
        self.inputs.append((name, spec_of(t.array)))
        self.specs[name] = self.inputs[-1][1]

    def _bind(self, t, name):
        self.values[id(t)] = (name, t, version_of(t))
        self.arrays[id(t.array)] = (name, t.array, t._vc)

    def ref(self, t):
        entry = self.values.get(id(t))
        if entry is not None and entry[1] is t:
            name, _, version = entry
            if version_of(t) != version:
                raise CaptureError(
                    f"{name} ({tuple(t.shape)} {t.dtype.name}) was modified in place after it was recorded; "
                    "in-place ops on captured values cannot be represented"
                )
            return name
        known = self.arrays.get(id(t.array))
        if known is not None and known[1] is t.array and known[2] is t._vc:
            return known[0]
        owner = self._state_of(t)
        if owner is not None and owner is not t:  # a detached alias of a module tensor: the tensor itself
            name = self.ref(owner)
            self._bind(t, name)
            return name
        if owner is not None or (t.requires_grad and t.grad_fn is None):
            name = f"%p{len(self.params)}"
            self.params.append(t)
            self.add_input(t, name)
            return name
        name = f"%c{len(self.constants)}"
        self.constants[name] = t.array.copy()
        self.specs[name] = spec_of(t.array)
        self.sources[f"constant {name}"] = t
        self._bind(t, name)
        return name

    def _state_of(self, t):
        owner = self.state.get(id(t.array))
        return owner if owner is not None and owner.array is t.array else None

    def host_read(self, t, what):
        """A traced value, a lifted tensor (a parameter, a module's buffer) or an alias of one (`.detach()`)
        read on the host (`Tensor.item()`, `bool()`, `numpy()`, a tensor index...): whatever Python does
        with it (a branch, a number baked into a later op) the graph cannot redo with other values, so
        capture stops here and the caller runs eagerly. Constants may be read; a tensor of the caller's
        that is neither (a closure's) is guarded as constants are (`sources`)."""
        entry = self.values.get(id(t))
        name = entry[0] if entry is not None and entry[1] is t else None
        known = self.arrays.get(id(t.array)) if name is None else None
        if known is not None and known[1] is t.array:  # shares a recorded value's array
            name = known[0]
        if name is None and self._state_of(t) is not None:
            name = "a parameter or buffer of the module"
        elif name is None and t.requires_grad and t.grad_fn is None:
            name = "a parameter"
        elif name is None and t.grad_fn is None and id(t) not in self._read:  # a closure's: guarded like a constant
            self._read[id(t)] = t
            self.sources[f"tensor {len(self._read)} read on the host"] = t
        if name is not None and not name.startswith("%c"):
            raise CaptureError(
                f"{what} reads the value of {name} ({tuple(t.shape)} {t.dtype.name}) on the host while capturing: "
                "Python control flow or numbers computed from tensor values cannot be represented in a graph"
            )

    def record(self, op, inputs, attrs, out):
        refs = tuple(self.ref(t) for t in inputs)
        self.emit(op, refs, dict(attrs), out)

    def emit(self, op, refs, attrs, out):
        spec = spec_of(out.array)
        flops, moved = cost(op.kind, [self.specs[r] for r in refs], spec)
        name = f"%{len(self.nodes)}"
        self.nodes.append(Node(name, op.name, refs, attrs, spec, flops, moved))
        self.specs[name] = spec
        self._bind(out, name)
        return name

    def check_writes(self):
        """Raise CaptureError when an input, a lifted tensor or a constant's tensor was written in place
        during the trace (see the module docstring): the graph would not replay the write."""
        for name, t, version in self.values.values():
            if name[1].isdigit() or version_of(t) == version:  # "%3": a node's value (its writes raise on read)
                continue
            what = {"%i": "input", "%h": "input", "%p": "lifted parameter or buffer", "%c": "constant tensor"}[name[:2]]
            raise CaptureError(
                f"the function writes in place into {what} {name} ({tuple(t.shape)} {t.dtype.name}); a graph "
                "does not replay writes into its inputs, parameters, buffers or constants"
            )

    def graph(self, outputs):
        names = []
        for t in outputs:
            if not isinstance(t, Tensor):
                raise CaptureError(f"captured functions must return tensors, got {type(t).__name__}")
            names.append(self.ref(t))
        # inputs: explicit ones first, then lifted parameters (ref() may lift while naming outputs)
        return Graph(tuple(self.inputs), tuple(self.nodes), tuple(names), dict(self.constants))


def single(xs):
    """The rebuild of a result that is one Tensor (callers may test `rebuild is single`)."""
    return xs[0]


def flatten(result):
    """Tensors of a (possibly nested tuple/list) result, in order, plus a rebuild function."""
    if isinstance(result, Tensor):
        return [result], single
    if isinstance(result, tuple | list):
        parts = [flatten(r) for r in result]
        rebuilds, counts, kind = [p[1] for p in parts], [len(p[0]) for p in parts], type(result)

        def rebuild(xs):  # (holds no traced tensor: a variant keeps it for as long as it lives)
            out, i = [], 0
            for fn, n in zip(rebuilds, counts):
                out.append(fn(xs[i : i + n]))
                i += n
            return kind(out)

        return [t for p in parts for t in p[0]], rebuild
    raise CaptureError(f"captured functions must return tensors or tuples of tensors, got {type(result).__name__}")


def capture(fn, example_inputs, *, grad_of=None, update=None, hyper=(), unused=None, state=(), sources=None):
    """Trace `fn(*example_inputs)`; returns (Graph, lifted parameter tensors, rebuild).

    `state` (a module's parameters and buffers) are lifted when read, like parameters; `sources`, a
    dict when given, receives the tensors constants were taken from or whose values were read on the
    host without being lifted (see the module docstring).

    With `grad_of` (a list of leaf tensors), the graph computes `fn`'s first output (a scalar loss)
    and appends the gradient of that loss with respect to each tensor in `grad_of` as extra outputs.
    The loss may not depend on some of them: their gradient output is zeros, and their indices are
    appended to the list `unused` when given (eager backward leaves such a `.grad` as it was, and an
    optimizer skips the parameter, so a compiled step must too). `update` gets None for their gradients.
    With `update` too, `update(grad_of, gradients)` (written with distgraph ops: an optimizer step)
    is traced and its results are appended instead of the gradients; `hyper` tensors it reads
    (learning rates) become graph inputs `%h0, ...` after the explicit ones, not constants.
    """
    tracer = Tracer(state)
    for i, t in enumerate(example_inputs):
        tracer.add_input(t, f"%in{i}")
    for i, t in enumerate(hyper):
        tracer.add_input(t, f"%h{i}")
    prev = set_tracer(tracer)
    try:
        with grad_mode.set_grad_enabled(grad_of is not None or grad_mode.state.grad_enabled):
            result = fn(*example_inputs)
        outputs, rebuild = flatten(result)
        if grad_of is not None:
            for p in grad_of:
                tracer.ref(p)  # lift every parameter, used or not, so grad outputs line up
            grads = _gradients(tracer, outputs[0], list(grad_of))
            missing = [i for i, g in enumerate(grads) if g is None]
            if unused is not None:
                unused += missing
            if update is not None:
                outputs = outputs + update(list(grad_of), [g for g in grads])
            else:
                zeros = [ew.mul(Tensor(p.array, device=p.device), 0.0) for p in grad_of]
                outputs = outputs + [zeros[i] if g is None else g for i, g in enumerate(grads)]
        tracer.check_writes()
    finally:
        set_tracer(prev)
    graph = tracer.graph(outputs)
    if sources is not None:
        sources.update(tracer.sources)
    return graph, tracer.params, rebuild


# ---- backward capture ----------------------------------------------------------------------------
def _gradients(tracer, loss, wrt):
    """d loss / d wrt as traced Tensors (None for tensors the loss does not depend on)."""
    if loss.grad_fn is None:
        raise CaptureError("the loss does not require grad: nothing to differentiate")
    order = _topo(loss.grad_fn)
    grads = {loss.grad_fn: Tensor(loss.device.xp.ones(loss.shape, loss.array.dtype), device=loss.device)}
    leaf = {}
    with grad_mode.no_grad():
        for node in order:
            g = grads.pop(node, None)
            if g is None:
                continue
            in_grads = _vjp_traced(tracer, node, g) if node.op.saves_extra else _rule(node, g)
            for inp, nxt, gi in zip(node.inputs, node.next, in_grads):
                if gi is None or nxt is None:
                    continue
                if gi.shape != inp.shape:
                    gi = sum_to_shape(gi, inp.shape)
                if gi.array.dtype != inp.array.dtype:
                    gi = ew.cast(gi, inp.array.dtype)
                table, key = (grads, nxt) if type(nxt) is AutogradNode else (leaf, id(nxt))
                table[key] = gi if key not in table else ew.add(table[key], gi)
    return [leaf.get(id(p)) for p in wrt]


def _rule(node, g):
    grads = node.op.backward(node, g)
    return grads if type(grads) is tuple else (grads,)


def _topo(root):
    """Autograd Nodes reachable from root, each after every Node that consumes it (the engine's order:
    a depth-first one lost the gradient a Node's later consumer sent it)."""
    return topological_order([root], dependencies([root]))


def _vjp_traced(tracer, node, g):
    """One opaque `vjp` node per input that needs a gradient (see module docstring)."""
    refs = tuple(tracer.ref(t) for t in node.inputs) + (tracer.ref(g),)
    arrays = [t.array for t in node.inputs] + [g.array]
    out = []
    for index, nxt in enumerate(node.next):
        if nxt is None:
            out.append(None)
            continue
        attrs = {"op": node.op.name, "attrs": dict(node.attrs), "index": index}
        t = Tensor(VJP.forward(g.device.xp, *arrays, **attrs), device=g.device)
        tracer.emit(VJP, refs, attrs, t)
        out.append(t)
    return out


@defop("vjp", kind="other", save=())
def _vjp_op(xp, *arrays, op, attrs, index):
    """Gradient of `op(*arrays[:-1], **attrs)` w.r.t. input `index`, given the output grad arrays[-1]."""
    fwd = REGISTRY[op] if op in REGISTRY else get_op(op)
    result = fwd.forward(xp, *arrays[:-1], **attrs)
    ctx = object.__new__(AutogradNode)
    ctx.op, ctx.attrs, ctx.versions, ctx.hooks, ctx.stack = fwd, attrs, (), None, None
    ctx.saved = None
    if fwd.saves_extra:
        result, ctx.saved = result
    ctx.inputs = tuple(Tensor(a) for a in arrays[:-1])
    ctx.out_ref = (result, [0], 0)
    ctx.next = (None,) * len(ctx.inputs)
    prev = set_tracer(None)
    try:
        with grad_mode.no_grad():
            grads = _rule(ctx, Tensor(arrays[-1]))
            gi = grads[index]
            if gi.shape != arrays[index].shape:
                gi = sum_to_shape(gi, arrays[index].shape)
    finally:
        set_tracer(prev)
    return gi.array.astype(arrays[index].dtype, copy=False)


VJP = _vjp_op
