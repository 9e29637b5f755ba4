"""dg.autograd.Function: user-defined ops with a forward and a backward, as in PyTorch.

`MyFn.apply(*args)` runs `forward(ctx, *args)` (or `forward(*args)` then `setup_context(ctx, args,
output)`) under no_grad and records one Node whose backward calls `backward(ctx, *grads)`; the
user's ctx rides along in the Node's `saved` slot.

The engine's Nodes have one output each. A forward that returns a tuple therefore records the
Function's Node on a hidden 0-d "anchor" output, and each differentiable output gets a small
`_CustomOutput` Node whose backward parks that output's gradient in the ctx and sends a dummy zero
to the anchor; the Function's Node, which runs after all of them, hands the parked gradients to the
user's backward (None, or zeros under `set_materialize_grads(True)`, for outputs that got none).
"""

from distgraph.autograd import grad_mode, saved
from distgraph.autograd.function import FREED_MESSAGE, _record, mark_custom_output, set_history
from distgraph.autograd.tensor import Tensor, View
from distgraph.errors import AutogradError


class FunctionCtx:
    """The `ctx` a custom Function's forward fills and its backward reads."""

    def __init__(self):
        self._saved = ()
        self._versions = ()
        self._unpack = None  # (unpack hook, which saved ones it packed) under saved_tensors_hooks: saved.py
        self.needs_input_grad = ()
        self.non_differentiable = set()
        self.dirty = set()
        self.materialize_grads = True
        self._outputs = None  # multi-output forwards: (shape, dtype, device) per output, None for non-Tensors
        self._grads = None  # ... and the gradients parked by the outputs' Nodes during backward

    def save_for_backward(self, *tensors):
        self._saved = tensors
        self._versions = tuple(t._vc[0] if isinstance(t, Tensor) else None for t in tensors)

    @property
    def saved_tensors(self):
        if self._saved is None:
            raise AutogradError(FREED_MESSAGE)
        if self._unpack is not None:  # (as torch's, tensors from an unpack hook are not version-checked)
            return saved.unpack_saved(self)
        for i, (t, v) in enumerate(zip(self._saved, self._versions)):
            if isinstance(t, Tensor) and t._vc[0] != v:
                raise AutogradError(
                    f"one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: saved tensor {i} is at version {t._vc[0]}; expected version {v} instead."
                )
        return self._saved

    def mark_non_differentiable(self, *tensors):
        """These outputs come back with requires_grad=False; backward still gets a (zero) grad slot for them."""
        self.non_differentiable.update(id(t) for t in tensors)

    def mark_dirty(self, *tensors):
        """These inputs were modified in place by forward: apply returns them (not copies) with new history."""
        self.dirty.update(id(t) for t in tensors)

    def set_materialize_grads(self, value):
        """False: backward gets None (not zeros) for outputs that received no gradient."""
        self.materialize_grads = bool(value)


def _node_name(fn_cls):
    return f"{fn_cls.__name__}Backward"


class _EngineOp:
    """The attributes of the Op interface the engine reads, as a Function's Nodes need them: no saved
    inputs or output of the engine's own (the ctx holds what backward needs), not a view."""

    kind = "custom"
    array_backward = None  # the engine runs `backward` on Tensors (no array rule)
    save = ()
    saves_output = False
    saves_extra = False
    view = False

    def release(self, ctx):
        """After a backward that keeps no graph: free what the Node saved (function.release)."""


class _CustomOp(_EngineOp):
    """Duck-types the Op interface the engine needs, for one Function subclass."""

    def __init__(self, fn_cls, tensor_positions):
        self.name = fn_cls.__name__
        self.fn_cls = fn_cls
        self.positions = tensor_positions

    def release(self, ctx):
        if ctx._saved:
            ctx._saved = None  # (saved_tensors then raises, as torch's)

    def backward(self, node, grad):
        ctx = node.saved
        grads_out = (grad,) if ctx._outputs is None else _take_parked_grads(ctx)
        grads = self.fn_cls.backward(ctx, *grads_out)
        if not isinstance(grads, tuple):
            grads = (grads,)
        name = _node_name(self.fn_cls)
        if len(grads) > ctx.num_args and all(g is None for g in grads[ctx.num_args :]):
            grads = grads[: ctx.num_args]  # as torch: trailing Nones beyond the inputs are ignored
        if len(grads) != ctx.num_args:
            raise AutogradError(
                f"function {name} returned an incorrect number of gradients (expected {ctx.num_args}, got {len(grads)})"
            )
        if len(self.positions) != ctx.num_args:
            for pos, g in enumerate(grads):
                if g is not None and pos not in self.positions:
                    raise AutogradError(
                        f"function {name} returned a gradient different than None at position {pos + 1}, but the "
                        "corresponding forward input was not a Variable"
                    )
        out = []
        for k, pos in enumerate(self.positions):
            g = grads[pos]
            if g is not None:
                if not isinstance(g, Tensor):
                    raise AutogradError(f"{name}: backward must return Tensors or None, got {type(g).__name__}")
                want = node.inputs[k].shape
                if g.shape != want and not _expandable(want, g.shape):
                    raise AutogradError(
                        f"Function {name} returned an invalid gradient at index {pos} - got {list(g.shape)} "
                        f"but expected shape compatible with {list(want)}"
                    )
            out.append(g)
        return tuple(out)


def _expandable(shape, to):
    """Whether `shape` broadcasts to `to` (so the engine can sum a gradient of shape `to` back to it)."""
    if len(shape) > len(to):
        return False
    return all(s == t or s == 1 for s, t in zip(reversed(shape), reversed(to)))


def _take_parked_grads(ctx):
    """The per-output gradients the output Nodes parked (zeros for missing ones when materializing)."""
    grads, ctx._grads = ctx._grads, [None] * len(ctx._outputs)
    for i, meta in enumerate(ctx._outputs):
        if grads[i] is None and meta is not None and ctx.materialize_grads:
            shape, dtype, device = meta
            grads[i] = Tensor(device.xp.zeros(shape, dtype=dtype), device=device)
    return grads


class _CustomOutput(_EngineOp):
    """The Node op of output `index` of a multi-output Function (see the module docstring)."""

    def __init__(self, fn_cls, index):
        self.name = fn_cls.__name__
        self.index = index

    def backward(self, node, grad):
        ctx = node.saved
        prev = ctx._grads[self.index]
        ctx._grads[self.index] = grad if prev is None else prev + grad
        anchor = node.inputs[0].array
        return Tensor(node.inputs[0].device.xp.zeros((), dtype=anchor.dtype), device=node.inputs[0].device)


class Function:
    """Subclass with static `forward(ctx, *args)` and `backward(ctx, *grads)`; call `Cls.apply(*args)`.

    Or, as torch 2: `forward(*args)` plus `setup_context(ctx, inputs, output)` that fills the ctx.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        if kwargs:  # torch 2's: keywords bound to forward's parameters (its defaults filled), passed by position
            args = _bound_to_forward(cls, args, kwargs)
        ctx = FunctionCtx()
        ctx.num_args = len(args)
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        with grad_mode.no_grad():
            if cls.setup_context is Function.setup_context:
                out = cls.forward(ctx, *args)
            else:
                out = cls.forward(*args)
                cls.setup_context(ctx, args, out)
        # as torch, saved tensors are versioned when forward returns (after its own in-place changes)
        ctx._versions = tuple(t._vc[0] if isinstance(t, Tensor) else None for t in ctx._saved)
        multi = isinstance(out, tuple)
        outs = out if multi else (out,)
        if not multi and not isinstance(out, Tensor):
            raise AutogradError(f"{cls.__name__}.forward must return a Tensor or a tuple, got {type(out).__name__}")
        positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        inputs = tuple(args[i] for i in positions)
        record = grad_mode.state.grad_enabled and any(t.requires_grad for t in inputs)
        if record and saved.open_blocks[0] and ctx._saved:
            saved.pack_saved(ctx)
        results = [_output(o, inputs, ctx, record) for o in outs]
        if record:
            diff = [  # (an integer or bool output is never differentiable, as torch's)
                i
                for i, o in enumerate(outs)
                if isinstance(o, Tensor) and id(o) not in ctx.non_differentiable and o.array.dtype.kind in "fc"
            ]
            if not multi:
                if diff:
                    _attach(_CustomOp(cls, positions), inputs, ctx, results[0])
            elif diff:
                ctx._outputs = [(o.shape, o.array.dtype, o.device) if isinstance(o, Tensor) else None for o in outs]
                ctx._grads = [None] * len(outs)
                first = results[diff[0]]
                anchor = Tensor(first.device.xp.zeros((), dtype=first.array.dtype), device=first.device)
                _record(_CustomOp(cls, positions), inputs, {}, ctx, anchor)
                for i in diff:
                    _attach(_CustomOutput(cls, i), (anchor,), ctx, results[i])
        for i, (o, r) in enumerate(zip(outs, results)):
            if isinstance(r, View) and id(o) not in ctx.dirty:
                mark_custom_output(r, cls.__name__, i, record and len(diff) > 1)
        return tuple(results) if multi else results[0]


def _bound_to_forward(cls, args, kwargs):
    import inspect

    params = list(inspect.signature(cls.forward).parameters.values())
    if cls.setup_context is Function.setup_context:
        params = params[1:]  # (ctx)
    bound = inspect.Signature(params).bind(*args, **kwargs)
    bound.apply_defaults()
    return tuple(bound.args) + tuple(bound.kwargs.values())


def _output(o, inputs, ctx, record):
    """The Tensor apply returns for forward's output `o`, not yet attached to the graph.

    A fresh tensor made by forward is returned itself (so a saved output shares its version counter
    with what the user holds); an input returned unmodified, or a tensor with history, becomes a new
    tensor on the same array; an input marked dirty is returned itself, its history to be rebased.
    """
    if not isinstance(o, Tensor):
        return o
    is_input = any(o is t for t in inputs)
    if id(o) in ctx.dirty:
        if record and o.grad_fn is None and o.requires_grad:
            raise AutogradError("a leaf Variable that requires grad has been used in an in-place operation.")
        return o
    if is_input and record:  # a view of it, which `apply` marks as the Function's: a write into it is refused,
        from distgraph.ops.shape import view  # as torch's (it would bypass the Function's backward)

        with grad_mode.no_grad():
            return view(o, tuple(o.shape))
    if is_input or o.grad_fn is not None:
        new = Tensor(o.array, device=o.device)
        new._vc = o._vc
        return new
    return o


def _attach(op, inputs, ctx, out):
    """Record `op`'s Node with output `out`. An input marked dirty that is a view gets its new history as an
    in-place op on a view does (ops/views.py): the tensor owning its memory is rebased through it, so that
    the base's gradient goes through the Function too, as torch's."""
    if type(out) is not View or id(out) not in ctx.dirty:
        _record(op, inputs, {}, ctx, out)
        return
    from distgraph.ops import views  # (the layer above, imported when needed: as engine.py's sum_to)

    new = Tensor(out.array, device=out.device)  # the written value, recorded before the view's history moves
    new._vc = out._vc
    _record(op, inputs, {}, ctx, new)
    rebased = views.rebase(out, new)
    set_history(out, new.grad_fn)
    views.commit(rebased)


class DelayedError(Function):
    """The graph once_differentiable (function.py) puts on a backward's results: differentiating it raises."""

    @staticmethod
    def forward(ctx, *grads):
        return grads if len(grads) > 1 else grads[0]

    @staticmethod
    def backward(ctx, *grads):
        raise AutogradError("trying to differentiate twice a function that was marked with @once_differentiable")
