"""In-place writes through views: what torch's CopySlices does, so `c[0].mul_(2)` is seen by `c`'s gradient.

A view (reshape, permute, slice, basic indexing...) shares memory and the version counter with its
base. When an in-place op is recorded on a view, its new value reached the base's memory, so the
base's graph must change too: base_new = where(covered, place(view_new), base_old), where `place` is
the view op's own backward rule (linear: it puts a view-shaped tensor where the view sits in the base)
and `covered = place(ones)` marks those positions; composed down the chain of views, it gives the graph
of the root, the tensor owning the memory. Every other view of that memory, the ones in the chain
included, rebuilds its graph from the root's when next used (autograd.tensor.View). Writes into an
expanded view (several elements on one memory location) are refused, as torch refuses them, but for
those that write one value to all the aliases of a location; recorded, their backward refuses, as torch's.
A view torch marks with how it was made (in no_grad or inference mode, one of several views an op or a
custom Function returned) refuses a write autograd would record (check_view_write), as torch's.
"""

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd.function import Node, _record, set_history, view_write_error
from distgraph.autograd.layout import current as layout_current
from distgraph.autograd.layout import view_base
from distgraph.autograd.tensor import Tensor, View
from distgraph.errors import AutogradError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops.registry import defop
from distgraph.ops.subscript import memory_overlap

OVERLAP_MESSAGE = (
    "unsupported operation: more than one element of the written-to tensor refers to a single memory location. "
    "Please clone() the tensor before performing the operation."
)


def is_basic_index(index):
    """True when `x[index]` is a view (ints, slices, None, Ellipsis), not an advanced-indexing copy."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, slice | int | np.integer) for i in items)


def _view_node(t):
    """How `t` views its base, as a Node whose op's backward rule puts a view-shaped tensor where the view
    sits (None when `t` is not a view sharing memory). Read from the view's recipe (`_view_fn`), not its
    grad_fn: a write through the view replaces its grad_fn, and a view of a tensor outside the graph
    has none, yet both still place later writes into the base."""
    if not _shares_memory(t):
        return None
    recipe = t._view_fn
    node = Node.__new__(Node)
    node.op, node.attrs, node.inputs, node.next = recipe[0], recipe[1], (view_base(t),), (None,)
    node.saved = node.hooks = node.out_ref = node.stack = None
    node.epoch = layout_current[0]
    node.versions = ()
    return node


def _shares_memory(t):
    """Whether `t` is a view (has a base and a recipe) that shares memory with its base."""
    base = getattr(t, "_view_of", None)
    if base is None or getattr(t, "_view_fn", None) is None:
        return False
    # a reshape that copied is no view (an empty view shares no bytes, yet its writes belong to its base)
    return not t.array.size or bool(t.device.xp.may_share_memory(t.array, base.array))


def check_view_write(t, operands, op):
    """torch's check before an in-place write under grad mode (check_inplace): a view marked with how it
    was made (in no_grad or inference mode, one of several views an op returned) may not be written when
    the write would be recorded: when the view's memory or an operand requires grad. `operands`: the
    op's other arguments."""
    if type(t) is not View or len(t._view_fn) < 3 or not grad_mode.state.grad_enabled or not _shares_memory(t):
        return
    root = t
    while getattr(root, "_view_of", None) is not None:
        root = root._view_of
    if t.requires_grad or root.requires_grad or any(isinstance(a, Tensor) and a.requires_grad for a in operands):
        raise view_write_error(t, op=op)


def snapshot(t):
    """A Tensor holding `t`'s current value and graph position, immune to later writes into `t`. For a
    view, its position is its view op applied afresh to its base's graph, not its own grad_fn: as torch's
    CopySlices, a write through the view sends the old value's gradient straight to the base, past
    the hooks registered on the view (they are on the graph of a value the view no longer holds)."""
    s = Tensor.__new__(Tensor)
    s.array, s.device, s._grad, s.grad_fn = t.array.copy(), t.device, None, t.grad_fn
    s._own_requires_grad, s._vc = t.requires_grad, [t._vc[0]]
    if type(t) is View and s.grad_fn is not None and _shares_memory(t) and t._view_of.requires_grad:
        _record(t._view_fn[0], (view_base(t),), t._view_fn[1], None, s)
    return s


def rebase(view, new_value):
    """Before `new_value` (a recorded Tensor) is written into `view`: the graph the root of its chain of
    views (the tensor that owns the memory) gets, as torch's CopySlices. Returns [(root, its new graph)]
    (empty when `view` is no view), to apply with `commit` after the write. `view` itself, the views in
    between, like every other view of that memory, are then stale and rebuild their graph from the
    root's when next used (autograd.tensor.View), as torch's: so the hooks on `view`'s old graph see
    what reaches that graph, not the gradient of the written value."""
    if not grad_mode.state.grad_enabled:
        return []
    node = _view_node(view)
    if node is None:
        return []
    with grad_mode.no_grad():
        covered = ew.const(1, view, None).expand(view.shape)
    placed = new_value
    tracked = view.requires_grad  # (read before the loop: reading it may rebuild the view's graph)
    while node is not None:  # each view op's backward rule puts the value one level down
        base = node.inputs[0]
        # as torch: refused into a view of a leaf that requires grad, or into a view that requires grad
        # of a leaf (one that left the graph by detach_ after the view was made)
        if base.grad_fn is None and (base.requires_grad or tracked):
            raise AutogradError(
                "a view of a leaf Variable that requires grad is being used in an in-place operation "
                f"({node.op.name} view of shape {tuple(view.shape)})."
            )
        placed = _place(node, placed)
        with grad_mode.no_grad():
            covered = _place(node, covered)
        node = _view_node(base)
    with grad_mode.no_grad():
        written = cmp.ne(covered, 0)
    new_root = ew.where(written, placed, snapshot(base))  # (a where: the old value's gradient is 0 there, NaN g too)
    if internal_overlap(view.array):
        # Several elements of `view` wrote one location through a zero stride (fill_, masked_fill_ into an
        # expanded view): torch records the write, but its backward refuses to run. Windows of unfold that
        # overlap (no zero stride) backward as torch's, each location's gradient read once per element
        new_root = _overlapping_write(new_root)
    return [(base, new_root), (view, None)]


@defop("overlapping_write", kind="other", save=())
def _overlapping_write(xp, x):
    return x


@_overlapping_write.grad
def _(ctx, g):
    raise AutogradError(OVERLAP_MESSAGE)


def internal_overlap(a):
    """Whether several elements of array `a` share one memory location (torch's test: a zero stride on a
    dim longer than 1, as expand makes)."""
    return 0 in a.strides and a.size > 1 and any(s == 0 and n > 1 for s, n in zip(a.strides, a.shape))


def overwrite(old, value):
    """`value` in `old`'s place, recorded so that `old` gets a zero gradient (not old * 0 + value, which
    keeps a nan or inf of the old value)."""
    return ew.where(ew.const(True, old, np.bool_), value, old)


def refuse_internal_overlap(a, op):
    """torch refuses a write into a tensor where several elements share one memory location (an expanded
    one: a zero stride on a dim longer than 1), as the result would depend on the order of the writes;
    it lets through only those writing one value everywhere (fill_, zero_) or at chosen positions
    (masked_fill_, index_put_, tril_). `a`: the array written into."""
    if internal_overlap(a):
        strides = tuple(x // a.itemsize for x in a.strides)
        raise AutogradError(f"{op}: {OVERLAP_MESSAGE} (shape {tuple(a.shape)}, strides {strides})")


def _place(node, t):
    """The view op's backward rule applied to `t`: `t` put where the view sits in its base."""
    grads = node.op.backward(node, t)
    return grads if isinstance(grads, Tensor) else grads[0]


def commit(rebased):
    """After the write: the root gets its new graph; the written view is left to rebuild its graph from
    the root's (a version it never had marks it stale)."""
    for base, new_value in rebased:
        if new_value is None:
            base._view_version = -1
        else:
            set_history(base, new_value.grad_fn)


def refuse_partial_overlap(a, operands, op):
    """torch refuses an in-place op whose written-to array `a` shares some, not all, of its elements with
    one of its tensor `operands` (`x[1:].add_(x[:-1])`, `x.T.copy_(x)`): the result would depend on the
    order of the writes. The same elements in the same layout (`x.add_(x)`) are fine."""
    for t in operands:
        if isinstance(t, Tensor) and memory_overlap(a, t.array) == "partial":
            raise AutogradError(
                f"{op}: unsupported operation: some elements of the input tensor and the written-to tensor refer "
                "to a single memory location. Please clone() the tensor before performing the operation."
            )
