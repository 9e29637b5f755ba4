"""What a Node saves for backward, and the saved_tensors_hooks it saves it through (torch.autograd.graph).

An op's `save` names the inputs whose values its backward reads; `saves_output`, whether it reads its
output. While a `saved_tensors_hooks(pack_hook, unpack_hook)` is in force (the innermost one, as
torch's), recording a Node passes each of them, as torch would save it, to `pack_hook` (under no_grad),
and keeps what it returns in their place: the Node's `epoch` slot holds a `Packed` record, which is
never the current layout epoch, so backward's `inputs_as_recorded` (function.py) comes here first and
`unpack` hands the rule `unpack_hook`'s tensors, on every backward through it, as torch's. Not packed,
as torch does not save them: an input read only for the gradient of an input that needs none, and a
0-d tensor that requires no grad (a Python number becomes one: torch keeps a number as a scalar). As
torch's, tensors unpacked are not checked against in-place changes since.

A custom Function's `ctx.save_for_backward` tensors go through the hooks in force when it is applied
(`pack_saved` / `unpack_saved`, from custom.py).
"""

import threading

from distgraph.autograd.grad_mode import INFERENCE_VERSION, no_grad, state
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError

OUTPUT = -1  # the key of a packed output in Packed.packed


class _Hooks(threading.local):
    """What graph.py's context managers set, per thread (as torch's)."""

    def __init__(self):
        self.stack = []  # the (pack_hook, unpack_hook) pairs in force, innermost last
        self.disabled = None  # the error message while disable_saved_tensors_hooks is in force


local = _Hooks()
open_blocks = [0]  # saved_tensors_hooks blocks open in any thread: what a recorded op checks (one list read)


class Packed:
    """A Node's saved tensors as the pack hook made them: `packed` {input index or OUTPUT: object},
    `inputs` the Node's inputs with stand-ins for the packed ones, `unpack_hook` the hook to undo it."""

    __slots__ = ("unpack_hook", "packed", "inputs")

    def __init__(self, unpack_hook, packed, inputs):
        self.unpack_hook, self.packed, self.inputs = unpack_hook, packed, inputs


def read_only_for_unneeded(op, i, edges):
    """Whether saved input `i` is read only for gradients that no input needs: `op.saved_for[i]` names the
    input (or a tuple of the inputs, as einsum's operands, each read for every other's) whose gradient
    reads it; custom Functions have no `saved_for`."""
    j = op.saved_for.get(i) if hasattr(op, "saved_for") else None
    if j is None:
        return False
    return all(k >= len(edges) or edges[k] is None for k in ((j,) if isinstance(j, int) else j))


def stand_in(shape, dtype, device):
    """A Tensor of `shape` and `dtype` on `device` holding one element (zero strides): a freed input's metadata."""
    return Tensor(device.xp.broadcast_to(device.xp.zeros((), dtype), shape), device=device)


def pack(node, out):
    """Pass what `node`, just recorded with output `out`, saves to the innermost pack hook (see the
    module docstring); a Node that saves nothing is left as it is."""
    if not local.stack:  # (the hooks are another thread's)
        return
    pack_hook, unpack_hook = local.stack[-1]
    op, inputs, edges = node.op, node.inputs, node.next
    packed = {}
    with no_grad():
        for i in op.save:
            if i < len(inputs) and not read_only_for_unneeded(op, i, edges) and not _number(inputs[i]):
                packed[i] = _pack_one(pack_hook, inputs[i])
        if op.saves_output:
            packed[OUTPUT] = _pack_one(pack_hook, out)
    if not packed:
        return
    kept = tuple(stand_in(t.array.shape, t.array.dtype, t.device) if i in packed else t for i, t in enumerate(inputs))
    node.inputs, node.versions, node.out_ref = kept, (), None
    node.epoch = Packed(unpack_hook, packed, kept)


def unpack(node):
    """`node`'s inputs for its backward rule, the packed ones (and its output) as the unpack hook gives
    them back; under create_graph a packed input keeps its place in the graph, so double backward
    differentiates through it."""
    record = node.epoch
    inputs = list(record.inputs)
    for key, obj in record.packed.items():
        t = _unpack_one(record.unpack_hook, obj)
        if key == OUTPUT:
            node.out_ref = (t.array, [0], 0)
        else:
            inputs[key] = _in_graph(t, node.next[key]) if state.grad_enabled else t
    node.inputs = inputs = tuple(inputs)
    return inputs


def pack_saved(ctx):
    """A custom Function's saved tensors through the hooks in force (non-Tensors are kept as they are)."""
    if not local.stack:
        return
    pack_hook, unpack_hook = local.stack[-1]
    saved = ctx._saved
    ctx._unpack = (unpack_hook, [isinstance(t, Tensor) for t in saved])
    with no_grad():
        ctx._saved = tuple(_pack_one(pack_hook, t) if isinstance(t, Tensor) else t for t in saved)


def unpack_saved(ctx):
    unpack_hook, packed = ctx._unpack
    return tuple(_unpack_one(unpack_hook, s) if p else s for s, p in zip(ctx._saved, packed))


def _number(t):
    return t.array.ndim == 0 and not t.requires_grad


def _pack_one(pack_hook, t):
    """pack_hook(t), refused (as torch) where it wrote into `t`."""
    version = None if t._vc is INFERENCE_VERSION else t._vc[0]
    packed = pack_hook(t)
    if version is not None and t._vc[0] != version:
        raise AutogradError(
            "A saved tensor pack hook is modifying its input in place. Tensors provided as input to pack hook "
            "cannot be modified by in-place operations as this can lead to unexpected side-effects. Please open "
            "an issue if you need to perform in-place operations on the input to a pack hook."
        )
    return packed


def _unpack_one(unpack_hook, obj):
    with no_grad():
        t = unpack_hook(obj)
    if not isinstance(t, Tensor):
        kind = type(t)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        raise TypeError(f"Output of saved tensor unpack_hook expected to be a Tensor but got result of type {name}")
    return t


def _in_graph(t, edge):
    """Unpacked `t` where the saved tensor came from along `edge`: the producer Node's output, or the leaf
    plus a zero that carries the gradient to it (its value stays t's)."""
    if edge is None:
        return t
    if isinstance(edge, Tensor):
        return edge - edge.detach() + t.detach()
    out = Tensor(t.array, device=t.device)
    out.grad_fn, out._own_requires_grad = edge, True
    return out
