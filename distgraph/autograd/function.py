"""The one place where an op is applied to tensors, and the Node that remembers how to differentiate it.

`apply(op, inputs, attrs)` runs the op's array forward on the device's namespace, wraps the result in
a Tensor and, when grad mode is on and an input requires grad, attaches a Node. The Node fixes its
edges (`next`: the producer Node or the leaf Tensor of each input) at forward time, so later in-place
rebinding of a tensor cannot reroute gradients. Graph capture hooks in here too (`set_tracer`), so an
op defined once serves eager autograd, capture and every executor.
"""

import traceback

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd import tensor as tensor_module
from distgraph.autograd.tensor import INFERENCE_VERSION, Tensor, View
from distgraph.errors import (
    AutogradError,
    DeviceError,
    DistgraphError,
    DTypeError,
    IndexOutOfRangeError,
    ShapeError,
)

_EMPTY = {}
_tracer = None


def set_tracer(tracer):
    """Install (or remove with None) the recorder graph capture uses; returns the previous one. The
    tracer also hears every read of a tensor's value on the host (`tensor.host_reads`)."""
    global _tracer
    prev, _tracer = _tracer, tracer
    tensor_module.host_reads = getattr(tracer, "host_read", None)
    return prev


def get_tracer():
    return _tracer


class Node:
    """A recorded op application: what backward needs to turn the output's grad into input grads."""

    __slots__ = ("op", "inputs", "attrs", "saved", "next", "versions", "out_ref", "hooks", "stack", "__weakref__")

    def name(self):
        if self.op.kind == "custom":  # a user's Function keeps its class name's case: MyFnBackward
            return f"{self.op.name}Backward"
        return f"{self.op.name.title().replace('_', '')}Backward"

    @property
    def next_functions(self):
        return tuple((n if isinstance(n, Node) else None, 0) for n in self.next)

    @property
    def out(self):
        """The op's output as a Tensor whose grad_fn is this node (for rules like exp's `g * out`).

        The node keeps the output's array and version counter, not the Tensor, so no reference cycle
        forms and the output can be checked against in-place changes like a saved input.
        """
        array = self.out_array
        vc = self.out_ref[1]
        out = Tensor.__new__(Tensor)
        out.array, out.device, out.grad, out.grad_fn = array, self.inputs[0].device, None, self
        out.requires_grad, out._vc = True, vc
        return out

    @property
    def out_array(self):
        """The op's output array, for array rules (same freed/in-place checks as `out`)."""
        if self.out_ref is None:
            raise AutogradError(_freed_message(self))
        array, vc, version = self.out_ref
        if vc[0] != version:
            raise AutogradError(
                f"one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: the output of {self.name()} is at version {vc[0]}; expected version {version} instead."
            )
        return array

    def __repr__(self):
        return f"<{self.name()}>"


def _freed_message(node):
    return (
        "Trying to backward through the graph a second time (or directly access saved tensors after they "
        "have already been freed). Saved intermediate values of the graph are freed when you call "
        ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through the "
        f"graph a second time. (op: {node.name()})"
    )


def _describe(inputs, attrs):
    parts = [f"{tuple(t.shape)} {t.dtype.name} on {t.device}" for t in inputs]
    extra = ", ".join(f"{k}={v!r}" for k, v in attrs.items() if k != "ctx")
    return "inputs " + "; ".join(parts) + (f" ({extra})" if extra else "")


def op_error(op_name, inputs, attrs, exc):
    """Translate a backend failure into a distgraph error naming the op, shapes, dtypes and devices."""
    if isinstance(exc, DistgraphError):
        return exc
    msg = f"{op_name}: {exc} — {_describe(inputs, attrs)}"
    if isinstance(exc, IndexError):
        return IndexOutOfRangeError(msg)
    if isinstance(exc, TypeError):
        return DTypeError(msg)
    if isinstance(exc, ValueError | AttributeError | ArithmeticError):
        return ShapeError(msg)
    return exc


def apply(op, inputs, attrs=_EMPTY):
    """Run `op` on Tensors `inputs` with keyword `attrs`; return the output Tensor (with grad_fn when recorded).

    This is the hot path of eager execution, so it is written out flat: one and two inputs (almost
    every op) avoid building lists, and the grad check stops at the first input that needs grad.
    """
    first = inputs[0]
    dev = first.device
    n = len(inputs)
    if n == 1:
        arrays = (first.array,)
        needs_grad = first.requires_grad
    elif n == 2:
        second = inputs[1]
        if second.device is not dev:
            raise DeviceError(f"{op.name}: expected all tensors on one device, got {_describe(inputs, attrs)}")
        arrays = (first.array, second.array)
        needs_grad = first.requires_grad or second.requires_grad
    else:
        for t in inputs:
            if t.device is not dev:
                raise DeviceError(f"{op.name}: expected all tensors on one device, got {_describe(inputs, attrs)}")
        arrays = [t.array for t in inputs]
        needs_grad = any(t.requires_grad for t in inputs)
    try:
        result = op.forward(dev.xp, *arrays, **attrs) if attrs else op.forward(dev.xp, *arrays)
    except Exception as exc:
        raise op_error(op.name, inputs, attrs, exc) from exc
    saved = None
    if op.saves_extra:
        result, saved = result
    if isinstance(result, _np_scalar):  # numpy ops on 0-d arrays return immutable scalars, which
        result = _np_asarray(result)  # in-place ops and setitem could not write into: keep an ndarray
    if op.view:  # shares memory and version with its input, which it keeps (torch's `_base`), and how
        out = _new_tensor(View)  # it views it (for writes through the view: ops/views.py)
        out._vc = vc = first._vc
        out._base = first
        out._view_fn = (op, attrs) if type(first) is not View or len(first._view_fn) < 3 else _multi(op, attrs)
        out._view_version = vc[0] if vc is not INFERENCE_VERSION else 0
        _set_grad_fn(out, None)
    else:
        out = _new_tensor(Tensor)
        out._vc = [0]
        out.grad_fn = None
    out.array = result
    out.device = dev
    out.grad = None
    if needs_grad and op.backward is not None and _grad_state.grad_enabled:
        _record(op, inputs, attrs, saved, out)
    else:
        out.requires_grad = False
        if _inference_depth[0] and _grad_state.inference:  # not on the recording path; one list read
            out._vc = INFERENCE_VERSION
    if _tracer is not None:
        _tracer.record(op, inputs, attrs, out)
    return out


_new_tensor = Tensor.__new__
_set_grad_fn = Tensor.grad_fn.__set__  # the slot itself (View's property also marks its graph current)
_np_scalar = np.generic
_np_asarray = np.asarray
_new_node = object.__new__
_grad_state = grad_mode.state  # mutated in place, never rebound: one attribute load per op
_anomaly = grad_mode.anomaly
_inference_depth = grad_mode.inference_depth


def _record(op, inputs, attrs, saved, out):
    node = _new_node(Node)
    node.op = op
    node.inputs = inputs
    node.attrs = attrs
    node.saved = saved
    node.hooks = None
    a = inputs[0]
    n = len(inputs)
    if n == 1:
        node.next = (a.grad_fn or (a if a.requires_grad else None),)
    elif n == 2:
        b = inputs[1]
        node.next = (a.grad_fn or (a if a.requires_grad else None), b.grad_fn or (b if b.requires_grad else None))
    else:
        node.next = tuple(t.grad_fn or (t if t.requires_grad else None) for t in inputs)
    save = op.save
    if not save:
        node.versions = ()
    elif len(save) == 1:
        node.versions = (inputs[save[0]]._vc[0],)
    elif len(save) == 2 and save[1] < n:
        node.versions = (inputs[save[0]]._vc[0], inputs[save[1]]._vc[0])
    else:
        node.versions = tuple([inputs[i]._vc[0] for i in save if i < n])
    node.out_ref = (out.array, out._vc, out._vc[0]) if op.saves_output else None
    node.stack = traceback.format_stack()[:-3] if _anomaly["enabled"] else None
    out.grad_fn = node
    out.requires_grad = True


def mark_view(out, base, op, attrs):
    """Make `out`, just computed from `base` by `op` with `attrs` (an op that is a view only for some
    attrs, as getitem), a View of `base`: it shares base's version and keeps how it was made."""
    out.__class__ = View  # the same slots: only the grad_fn/requires_grad properties differ
    out._vc = base._vc
    out._base = base
    out._view_fn = (op, attrs) if type(base) is not View or len(base._view_fn) < 3 else _multi(op, attrs)
    out._view_version = base._vc[0] if base._vc is not INFERENCE_VERSION else 0


def _regenerate_view(view, strict=True):
    """torch's rule for a View whose memory was written since its graph was recorded: its view op is
    applied again to its base's current graph (a stale base regenerates first, as reading its grad_fn
    does). A reshape that had to copy holds no view of the memory: its graph stays. One of the views an
    op returned together (split, chunk, unbind) has no graph to rebuild, as in torch: reading its grad_fn
    (`strict`, what an op does, not reading requires_grad) raises."""
    base = view._base
    if len(view._view_fn) > 2 and base.requires_grad:  # one of several views an op returned (split)
        if strict:
            raise multi_output_error(view, "its base or another view of its base has been modified inplace")
        view.requires_grad = True  # it has no graph, but it requires grad (torch)
        return
    view._view_version = view._vc[0]
    if view.array.size and not view.device.xp.may_share_memory(view.array, base.array):
        return
    if base.requires_grad:
        _record(view._view_fn[0], (base,), view._view_fn[1], None, view)
    elif _grad_fn_slot.__get__(view) is not None:  # the base left the graph (detach_ of a leaf base)
        _grad_fn_slot.__set__(view, None)
        view.requires_grad = False


def mark_multi_output(views, fn_name):
    """Mark `views`, returned together by `fn_name` (torch's name: Split, SplitWithSizes, Unbind), as torch
    does: neither a write into one of them nor, after a write into their memory, their use in autograd is
    allowed (multi_output_error)."""
    for k, v in enumerate(views):
        if isinstance(v, View):
            v._view_fn = (*v._view_fn[:2], (fn_name, k))
    return views


def _multi(op, attrs):
    """The recipe of a view of one of several views returned together: as in torch, it is bound the same."""
    return (op, attrs, (op.name.title(), 0))


def multi_output_error(view, what):
    name, k = view._view_fn[2]
    return AutogradError(
        f"Output {k} of {name} is a view and {what}. This view is the output of a function that returns multiple "
        "views. Such functions do not allow the output views to be modified inplace. You should replace the "
        "inplace operation by an out-of-place one."
    )


_grad_fn_slot = Tensor.grad_fn
tensor_module.regenerate_view = _regenerate_view
