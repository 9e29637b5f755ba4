"""What user code sees of the autograd graph (torch.autograd.graph.Node): `grad_fn.name()`, its
`next_functions`, `metadata`, and the hooks registered on it.

A Node's edge to a leaf is the leaf Tensor itself (function.py); `next_functions` shows it as torch
does, as an `AccumulateGrad` holding the leaf (`.variable`). One is made on demand and kept, weakly,
for as long as someone holds it, so asking twice gives the same object and the graph holds no extra
object or reference cycle.

Node hooks, as torch runs them (engine.py calls `call_pre_hooks` / `call_post_hooks`): after the
tensor hooks of the Node's output, the pre-hooks `fn(grad_outputs)`; then the Node's backward; then
the hooks `fn(grad_inputs, grad_outputs)`. Each may return a tuple replacing what it was given. The
engine looks for them only once some Node has had one (`hooks_registered`), so plain backward passes
pay one list read per pass. An AccumulateGrad's pre-hook is a hook of its leaf's, as torch's.
"""

import weakref

from distgraph.autograd.accumulate import wrap
from distgraph.autograd.node_names import torch_name
from distgraph.autograd.tensor import _RemovableHandle
from distgraph.backend import device_of_array
from distgraph.errors import AutogradError

hooks_registered = [0]  # how many Node hooks were ever registered (the engine's one check per pass)


class GraphNode:
    """torch.autograd.graph.Node: the base of the engine's Nodes and of AccumulateGrad."""

    # unset until used (read with getattr): recording a Node writes none of them
    # (`_torch_name`: set by a composite op on its last Node, node_names.named)
    __slots__ = ("_pre_hooks", "_post_hooks", "_metadata", "_torch_name")

    def name(self):
        return torch_name(self)

    @property
    def next_functions(self):
        return tuple((_edge(n), 0) for n in self.next)

    @property
    def metadata(self):
        """A dict of the user's, kept with the Node (torch's `grad_fn.metadata`)."""
        meta = getattr(self, "_metadata", None)
        if meta is None:
            meta = self._metadata = {}
        return meta

    def register_prehook(self, fn):
        """`fn(grad_outputs)` before the Node's backward runs; a tuple it returns replaces grad_outputs."""
        return _register(self, "_pre_hooks", fn)

    def register_hook(self, fn):
        """`fn(grad_inputs, grad_outputs)` after the Node's backward ran; a tuple it returns replaces
        grad_inputs (None where the input needs no gradient)."""
        return _register(self, "_post_hooks", fn)

    def __repr__(self):
        return f"<{self.name()} object at {id(self):#x}>"


def _register(node, slot, fn):
    hooks = getattr(node, slot, None)
    if hooks is None:
        hooks = []
        setattr(node, slot, hooks)
    hooks.append(fn)
    hooks_registered[0] += 1
    return _RemovableHandle(hooks, fn)


class AccumulateGrad(GraphNode):
    """torch's Node that accumulates a leaf's gradient into `.grad`: what `next_functions` shows for a
    leaf that requires grad (the engine accumulates leaves itself: accumulate.py)."""

    __slots__ = ("variable", "__weakref__")
    next = ()

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "torch::autograd::AccumulateGrad"

    def register_prehook(self, fn):
        """`fn(grad_outputs)` before the leaf's gradient is accumulated: as torch's, a hook of the leaf's."""
        return self.variable.register_hook(lambda grad: _run((fn,), (grad,), ())[0])

    def register_hook(self, fn):
        raise NotImplementedError(
            "distgraph runs no hooks after an AccumulateGrad; register_post_accumulate_grad_hook on the leaf "
            "(AccumulateGrad.variable) is called once its .grad is accumulated"
        )

    def __repr__(self):
        return f"<AccumulateGrad object at {id(self):#x}>"


_accumulators = weakref.WeakValueDictionary()  # id(leaf) -> its AccumulateGrad, while someone holds it


def _edge(n):
    """What next_functions shows for edge `n`: a Node, None (a constant), or a leaf's AccumulateGrad.
    (Keyed by id: the AccumulateGrad holds its leaf, so the id is not reused while the entry exists.)"""
    if n is None or isinstance(n, GraphNode):
        return n
    acc = _accumulators.get(id(n))
    if acc is None:
        acc = _accumulators[id(n)] = AccumulateGrad(n)
    return acc


def call_pre_hooks(node, grad, as_array):
    """Run `node`'s pre-hooks on its output gradient `grad` (an array when `as_array`); returns it."""
    hooks = getattr(node, "_pre_hooks", None)
    if not hooks:
        return grad
    (out,) = _run(hooks, (_tensor(grad, as_array),), ())
    return out.array if as_array else out


def call_post_hooks(node, in_grads, grad, as_array):
    """Run `node`'s hooks on the gradients it made for its inputs (None for inputs needing none) and on
    its output gradient `grad`; returns the input gradients, in the engine's form."""
    hooks = getattr(node, "_post_hooks", None)
    if not hooks:
        return in_grads
    grad_inputs = tuple(
        None if g is None or edge is None else _tensor(g, as_array) for g, edge in zip(in_grads, node.next)
    )
    new = _run(hooks, grad_inputs, ((_tensor(grad, as_array),),))
    return tuple(None if g is None else g.array if as_array else g for g in new)


def _run(hooks, values, extra):
    """Each hook on `values` (+ `extra`: a post-hook's grad_outputs); a tuple returned replaces `values`,
    once checked as torch checks it (the count, None stays None, the shapes)."""
    for hook in list(hooks):
        new = hook(values, *extra)
        if new is None:
            continue
        if not isinstance(new, tuple):
            raise TypeError(f"expected tuple, but hook returned '{type(new).__name__}'")
        name = getattr(hook, "__name__", "<unknown>")
        if len(new) != len(values):
            raise AutogradError(
                f"hook '{name}' has returned an incorrect number of values (got {len(new)}, but expected {len(values)})"
            )
        for old, g in zip(values, new):
            if old is None and g is not None:
                raise AutogradError("can't replace a None gradient with a non-None value")
            if g is not None and g.shape != old.shape:
                raise AutogradError(f"hook '{name}' has changed the size of value")
        values = new
    return values


def _tensor(grad, as_array):
    return wrap(grad, device_of_array(grad)) if as_array else grad
