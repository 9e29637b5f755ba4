"""The one place where an op is applied to tensors, and the Node that remembers how to differentiate it.

`apply(op, inputs, attrs)` runs the op's array forward on the device's namespace, wraps the result in a Tensor
and, when grad mode is on and an input requires grad, attaches a Node. The Node fixes its edges (`next`: the
producer Node or the leaf Tensor of each input) at forward time, so later in-place rebinding of a tensor cannot
reroute gradients. Graph capture hooks in here too (`set_tracer`), so an op defined once serves eager autograd,
capture and every executor; an elementwise op's result takes torch's TensorIterator layout here (memory_format.py).
"""

import functools
import traceback

import numpy as np

from distgraph.autograd import grad_mode, layout
from distgraph.autograd import tensor as tensor_module
from distgraph.autograd.layout import view_base
from distgraph.autograd.memory_format import follow_operands
from distgraph.autograd.nodes import GraphNode
from distgraph.autograd.saved import Packed, pack, read_only_for_unneeded, stand_in, unpack
from distgraph.autograd.saved import open_blocks as _saved_hooks_open
from distgraph.autograd.tensor import INFERENCE_VERSION, Tensor, View, view_root
from distgraph.backend import on
from distgraph.errors import AutogradError, DeviceError, DistgraphError, DTypeError, IndexOutOfRangeError, ShapeError

_EMPTY = {}
_ELEMENTWISE = "elementwise"  # Op.kind of the ops whose result takes TensorIterator's layout
_tracer = None


def set_tracer(tracer):
    """Install (None: remove) graph capture's recorder, which also hears host reads (`tensor.host_reads`) → the last."""
    global _tracer
    prev, _tracer = _tracer, tracer
    tensor_module.host_reads = getattr(tracer, "host_read", None)
    return prev


def get_tracer():
    return _tracer


def records(inputs):
    """Whether eager autograd records an op on `inputs` (grad mode in force, no tracer): where a `_saving` op pays."""
    return _grad_state.grad_enabled and _tracer is None and any(t.requires_grad for t in inputs)


class Node(GraphNode):
    """A recorded op application: what backward needs to turn the output's grad into input grads.
    (What user code sees of it, `name()`, `next_functions`, hooks: nodes.py.)"""

    __slots__ = (
        "op",
        "inputs",
        "attrs",
        "saved",
        "next",
        "versions",
        "out_ref",
        "hooks",
        "stack",
        "epoch",  # the layout epoch it was recorded in (see inputs_as_recorded), or its packed saved tensors (saved.py)
        "__weakref__",
    )

    @property
    def out(self):
        """The op's output as a Tensor whose grad_fn is this node (for rules like exp's `g * out`).

        The node keeps the output's array and version counter, not the Tensor, so no reference cycle
        forms and the output can be checked against in-place changes like a saved input.
        """
        array = self.out_array
        vc = self.out_ref[1]
        out = Tensor.__new__(Tensor)
        out.array, out.device, out._grad, out.grad_fn = array, self.inputs[0].device, None, self
        out._own_requires_grad, out._vc = True, vc
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


def inputs_as_recorded(node):
    """`node`'s inputs as it recorded them, for backward: freed ones refused; a tensor given a new layout
    in place since (ops/inplace_shape.py) replaced, for good, by the alias of the layout the node saw
    (autograd/layout.py), or refused where the change left a gradient into that tensor meaningless."""
    inputs = node.inputs
    if inputs is None:
        raise AutogradError(_freed_message(node))
    epoch = node.epoch
    if type(epoch) is Packed:  # what it saved went through saved_tensors_hooks: unpacked on each backward
        return unpack(node)
    if epoch is _FREED:  # it saved nothing: its inputs' metadata stands in for them (see release)
        node.inputs = inputs = tuple([stand_in(*meta) for meta in inputs])
    elif epoch.aliases:
        seen = []
        for t, edge in zip(inputs, node.next):
            entry = epoch.aliases.get(id(t))
            if entry is not None and entry[1] is not None and edge is t:
                raise AutogradError(entry[1])
            seen.append(t if entry is None else entry[0])
        node.inputs = inputs = tuple(seen)
    node.epoch = _layout_current[0]
    return inputs


FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after they have already "
    "been freed). Saved intermediate values of the graph are freed when you call .backward() or autograd.grad(). "
    "Specify retain_graph=True if you need to backward through the graph a second time or if you need to access "
    "saved tensors after calling backward."
)
_FREED = object()  # a Node's epoch once `release` kept only its inputs' metadata


def _freed_message(node):
    return f"{FREED_MESSAGE} (op: {node.name()})"


def release(node):
    """After `node` ran without retain_graph: what it saved is freed, as torch's, so that a second backward
    through it raises. A Node that saved nothing keeps only its inputs' shape, dtype and device (their
    arrays are freed), which stand in for them if a second backward runs it, as torch's does. A custom
    Function's Node frees its ctx's saved tensors: only reading them raises then, as torch's."""
    saved = node.saved
    if saved is not None and node.op.kind == "custom":
        node.op.release(saved)
    elif node.versions or node.out_ref is not None or saved is not None or type(node.epoch) is Packed:
        node.inputs = node.saved = node.out_ref = None
        node.epoch = _FREED  # (a Packed one holds what the pack hook made)
        return
    if node.epoch is not _FREED:
        node.inputs = tuple([(t.array.shape, t.array.dtype, t.device) for t in node.inputs])
        node.epoch = _FREED


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
            return apply(op, _scalars_moved(op, inputs, attrs), attrs)
        arrays = (first.array, second.array)
        needs_grad = first.requires_grad or second.requires_grad
    else:
        for t in inputs:
            if t.device is not dev:
                return apply(op, _scalars_moved(op, inputs, attrs), attrs)
        arrays = [t.array for t in inputs]
        needs_grad = any(t.requires_grad for t in inputs)
    try:
        if dev.index is None:  # cpu (the one test the hot path pays for devices)
            result = op.forward(dev.xp, *arrays, **attrs) if attrs else op.forward(dev.xp, *arrays)
        else:  # cupy allocates and runs on its current GPU: the tensors' one, then
            with on(dev):
                result = op.forward(dev.xp, *arrays, **attrs)
    except Exception as exc:
        raise op_error(op.name, inputs, attrs, exc) from exc
    saved = None
    if op.saves_extra:
        result, saved = result
    if isinstance(result, _np_scalar):  # numpy ops on 0-d arrays return immutable scalars, which
        result = _np_asarray(result)  # in-place ops and setitem could not write into: keep an ndarray
    elif n > 1 and op.kind == _ELEMENTWISE and not arrays[0].flags.c_contiguous:
        if dev.index is None:  # torch's layout where numpy's may differ (on a GPU: made on the tensors' one)
            result = follow_operands(dev.xp, result, arrays)
        else:
            with on(dev):
                result = follow_operands(dev.xp, result, arrays)
    if op.view:  # shares memory and version with its input, which it keeps (`_view_of`), and how
        out = _new_tensor(View)  # it views it (for writes through the view: ops/views.py)
        out._vc = vc = first._vc
        out._view_of = first
        if _grad_state.grad_enabled and (type(first) is not View or len(first._view_fn) < 3):
            out._view_fn = (op, attrs)
        else:  # made in no_grad mode, or a view of such a view: writes through it are refused (views.py)
            out._view_fn = _with_creation(first, op, attrs)
        out._view_version = vc[0] if vc is not INFERENCE_VERSION else 0
        out._view_epoch = _layout_current[0]
        _set_grad_fn(out, None)
    else:
        out = _new_tensor(Tensor)
        out._vc = [0]
        out.grad_fn = None
    out.array = result
    out.device = dev
    out._grad = None
    out._epoch = _layout_now[0]
    if needs_grad and op.backward is not None and _grad_state.grad_enabled:
        _record(op, inputs, attrs, saved, out)
    else:
        out._own_requires_grad = False
        if _inference_depth[0] and _grad_state.inference and not op.view:  # not on the recording path;
            out._vc = INFERENCE_VERSION  # one list read (a view keeps its base's counter: an inference
            # tensor only if its base is one, as torch)
    if _tracer is not None:
        _tracer.record(op, inputs, attrs, out)
    return out


def _scalars_moved(op, inputs, attrs):
    """`inputs`, their 0-d cpu tensors copied (differentiably) to the others' one device: torch takes a 0-d cpu
    tensor beside cuda ones for a scalar. Any other mix of devices is refused."""
    others = {t.device for t in inputs if not (t.device.index is None and t.ndim == 0)}
    if len(others) != 1:
        raise DeviceError(f"{op.name}: expected all tensors on one device, got {_describe(inputs, attrs)}")
    return tuple(t if t.device in others else t.to(*others) for t in inputs)


_new_tensor = Tensor.__new__
_set_grad_fn = Tensor.grad_fn.__set__  # the slot itself (View's property also marks its graph current)
_np_scalar = np.generic
_np_asarray = np.asarray
_new_node = object.__new__
_grad_state = grad_mode.state  # mutated in place, never rebound: one attribute load per op
_anomaly = grad_mode.anomaly
_inference_depth = grad_mode.inference_depth
_layout_current = layout.current
_layout_now = layout.now


def _record(op, inputs, attrs, saved, out):
    node = _new_node(Node)
    node.op = op
    node.inputs = inputs
    node.attrs = attrs
    node.saved = saved
    node.hooks = None
    node.epoch = _layout_current[0]
    a = inputs[0]
    n = len(inputs)
    if n == 1:
        node.next = (a.grad_fn or (a if a._own_requires_grad else None),)
    elif n == 2:
        b = inputs[1]
        node.next = (
            a.grad_fn or (a if a._own_requires_grad else None),
            b.grad_fn or (b if b._own_requires_grad else None),
        )
    else:
        node.next = tuple(t.grad_fn or (t if t._own_requires_grad else None) for t in inputs)
    save = op.save
    try:
        if not save:
            node.versions = ()
        elif len(save) == 1:
            node.versions = (inputs[save[0]]._vc[0],)
        elif len(save) == 2 and save[1] < n:
            node.versions = (inputs[save[0]]._vc[0], inputs[save[1]]._vc[0])
        else:
            node.versions = tuple([inputs[i]._vc[0] for i in save if i < n])
    except AutogradError:  # an inference tensor, which has no version: refused where a gradient reads it
        node.versions = tuple([_saved_version(op, inputs, node.next, i) for i in save if i < n])
    node.out_ref = (out.array, out._vc, out._vc[0]) if op.saves_output else None
    node.stack = traceback.format_stack()[:-3] if _anomaly["enabled"] else None
    out.grad_fn = node
    out._own_requires_grad = True
    if _saved_hooks_open[0] and _tracer is None:  # saved_tensors_hooks in force (capture reads the inputs themselves)
        pack(node, out)


def _saved_version(op, inputs, edges, i):
    """The version of saved input `i`, or None where only the gradient of an input that gets none reads
    it (`op.saved_for`): as torch, which then saves nothing, an inference tensor is fine there."""
    return None if read_only_for_unneeded(op, i, edges) else inputs[i]._vc[0]


def mark_view(out, base, op, attrs):
    """Make `out`, just computed from `base` by `op` with `attrs` (an op that is a view only for some
    attrs, as getitem), a View of `base`: it shares base's version and keeps how it was made."""
    out.__class__ = View  # the same slots: only the grad_fn/requires_grad properties differ
    out._vc = base._vc
    out._view_of = base
    if _grad_state.grad_enabled and (type(base) is not View or len(base._view_fn) < 3):
        out._view_fn = (op, attrs)
    else:
        out._view_fn = _with_creation(base, op, attrs)
    out._view_version = base._vc[0] if base._vc is not INFERENCE_VERSION else 0
    out._view_epoch = _layout_current[0]


def _regenerate_view(view, strict=True):
    """torch's rule for a View whose memory was written since its graph was recorded: its view op is
    applied again to its base's current graph (a stale base regenerates first, as reading its grad_fn
    does). A reshape that had to copy holds no view of the memory: its graph stays. A view torch marks
    with how it was made (one of the views an op returned together, as split, chunk, unbind; one made in
    no_grad or inference mode) has no graph to rebuild, as in torch: reading its grad_fn (`strict`, what
    an op does, not reading requires_grad) raises, whether or not its root still requires grad. A
    retain_grad() follows the view to its new graph. As torch, a view with no graph whose root (the
    tensor owning the memory, not the view it was made of) is outside the graph has nothing to rebuild
    and stays stale (it must rebuild, or refuse, once its root requires grad)."""
    base = view_base(view)
    old = _grad_fn_slot.__get__(view)
    if old is None and not view_root(view).requires_grad:
        return
    if view.array.size and not view.device.xp.may_share_memory(view.array, base.array):
        view._view_version = view._vc[0]
        return
    if len(view._view_fn) > 2:
        if strict:
            raise view_write_error(view, indirect=True)
        return  # it keeps no graph; it requires grad through its own flag or its root (View.requires_grad)
    view._view_version = view._vc[0]
    # (as torch, a view whose root left the graph with detach_ gets a graph reaching nothing, which keeps
    # it requiring grad)
    _record(view._view_fn[0], (_fresh_chain(base),), view._view_fn[1], None, view)
    move_retained_grad(view, old)


def _fresh_chain(t):
    """`t` (the view a view was made of) as a graph rebuilt from the tensor owning the memory, as torch's
    regenerated view, whose view ops are composed from there: the views in between get fresh Nodes, so
    hooks and a retain_grad() on them see only what reaches their own graph, not this one. (A loop, not
    a recursion: a tensor reshaped in place a thousand times leaves a chain of a thousand aliases.)"""
    chain = []
    while type(t) is View and (not t.array.size or t.device.xp.may_share_memory(t.array, view_base(t).array)):
        chain.append(t)  # (else the root: no view, or a reshape that copied)
        t = t._view_of
    for view in reversed(chain):
        fresh = _new_tensor(Tensor)
        fresh.array, fresh.device, fresh._vc, fresh._grad = view.array, view.device, view._vc, None
        _record(view._view_fn[0], (t,), view._view_fn[1], None, fresh)
        t = fresh
    return t


def move_retained_grad(t, old):
    """After `t`'s grad_fn changed from node `old` (an in-place write into it, its view graph rebuilt),
    as torch: its retain_grad() hook moves to the new node, so `t.grad` is the gradient of its new
    value; the hooks registered with register_hook stay on `old` (they see the gradient of the value
    they were registered on, where a backward still reaches it)."""
    if old is None or not old.hooks:  # (most often: checked first, without reading t's unset slots)
        return
    keep = getattr(t, "_retains", None)
    if keep is None or old is t.grad_fn or keep not in old.hooks:
        return
    old.hooks.remove(keep)
    new = t.grad_fn
    if new.hooks is None:
        new.hooks = []
    new.hooks.append(keep)


def set_history(t, node):
    """`t`, just written in place, gets `node` (the write's) as its grad_fn."""
    old = _grad_fn_slot.__get__(t)
    t.grad_fn = node
    t._own_requires_grad = True
    move_retained_grad(t, old)


def mark_multi_output(views, fn_name):
    """Mark `views`, returned together by `fn_name` (torch's name: Split, SplitWithSizes, Unbind), as torch
    does: neither a write into one of them nor, after a write into their memory, their use in autograd is
    allowed (view_write_error). Made in no_grad mode, they keep that mark instead, as torch's."""
    if not _grad_state.grad_enabled:
        return views
    for k, v in enumerate(views):
        if isinstance(v, View):
            v._view_fn = (*v._view_fn[:2], ("multi", fn_name, k))
    return views


def mark_custom_output(view, fn_name, k, multi):
    """Mark `view`, output `k` of custom Function `fn_name`, as torch does: a write into it, or its use
    after its memory was written, is refused (it would bypass the Function's backward); `multi`: one of
    several differentiable outputs, refused in the words of the ops returning several views."""
    view._view_fn = (*view._view_fn[:2], ("multi" if multi else "custom", fn_name, k))


def _with_creation(base, op, attrs):
    """The recipe of a view torch marks with how it was made (its CreationMeta), as a third item
    (kind, name, k): made in no_grad or inference mode (name None), or a view made in grad mode of a
    marked view (it inherits the kind; name, k: its own op), as torch propagates the mark."""
    prev = base._view_fn[2] if type(base) is View and len(base._view_fn) > 2 else None
    if _grad_state.grad_enabled:
        return (op, attrs, (prev[0], op.name.title(), 0))
    if prev is not None and prev[0] == "inference":
        return (op, attrs, prev)
    return (op, attrs, ("inference" if _grad_state.inference else "no_grad", None, 0))


_MULTI = (
    " This view is the output of a function that returns multiple views. Such functions do not allow the output "
    "views to be modified inplace. You should replace the inplace operation by an out-of-place one."
)
_CUSTOM = (
    " This view was created inside a custom Function (or because an input was returned as-is) and the autograd "
    "logic to handle view+inplace would override the custom backward associated with the custom Function, leading "
    "to incorrect gradients. This behavior is forbidden. You can fix this by cloning the output of the custom "
    "Function."
)
_AMBIGUOUS = (
    " Given that this use case is ambiguous and error-prone, it is forbidden. You can clarify your code by moving "
    "both the view and the inplace either both inside the {} block (if you don't want the inplace to be tracked) "
    "or both outside (if you want the inplace to be tracked)."
)


def view_write_error(view, indirect=False, op=None):
    """torch's refusal (handle_view_on_rebase) of an in-place write, with grad, into a view marked with how
    it was made (_with_creation), or (`indirect`) of its use in autograd after its memory was written."""
    kind, name, k = view._view_fn[2]
    what = "its base or another view of its base has been" if indirect else "is being"
    head = f"{op}: " if op else ""
    tail = _MULTI if kind == "multi" else _CUSTOM
    if kind in ("multi", "custom") and _grad_fn_slot.__get__(view) is not None:
        return AutogradError(f"{head}Output {k} of {name} is a view and {what} modified inplace.{tail}")
    made = "A view was created in" if name is None else f"Output {k} of {name} is a view of a view which was created in"
    if kind in ("multi", "custom"):  # a view outside the graph: torch words it so
        msg = f"A view was created in no_grad mode and {what} modified inplace with grad mode enabled.{tail}"
    elif kind == "inference":
        msg = f"{made} inference mode and {what} modified inplace in normal mode.{_AMBIGUOUS.format('inference_mode')}"
    else:
        msg = f"{made} no_grad mode and {what} modified inplace with grad mode enabled.{_AMBIGUOUS.format('no_grad')}"
    return AutogradError(head + msg)


_grad_fn_slot = Tensor.grad_fn
tensor_module.regenerate_view = _regenerate_view


def once_differentiable(backward):
    """torch.autograd.function.once_differentiable: decorate a custom Function's backward that is not
    itself differentiable. It runs under no_grad; with grad mode on (create_graph) and an input requiring
    grad, its results come back with a graph whose backward raises, so a double backward through it fails
    then, not silently with a wrong (zero) gradient."""

    @functools.wraps(backward)
    def wrapper(ctx, *args, **kwargs):
        with grad_mode.no_grad():
            outputs = backward(ctx, *args, **kwargs)
        if not grad_mode.is_grad_enabled() or not any(isinstance(a, Tensor) and a.requires_grad for a in args):
            return outputs
        from distgraph.autograd.custom import DelayedError  # (custom.py builds on this module)

        outs = outputs if isinstance(outputs, tuple) else (outputs,)
        fresh = [None if o is None else o.detach().requires_grad_() for o in outs]
        return DelayedError.apply(*fresh)

    return wrapper
