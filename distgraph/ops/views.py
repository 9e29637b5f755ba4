"""In-place writes through views: what torch's CopySlices does, so `c[0].mul_(2)` is seen by `c`'s gradient.

A view (reshape, permute, slice, basic indexing...) shares memory and the version counter with its
base. When an in-place op is recorded on a view, its new value reached the base's memory, so the
base's graph must change too: base_new = base_old * (1 - covered) + place(view_new), where `place` is
the view op's own backward rule (linear: it puts a view-shaped tensor where the view sits in the base)
and `covered = place(ones)` marks those positions. This repeats up the chain of views. An expanded
view (several elements on one memory location) is refused, as torch refuses it.
"""

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError
from distgraph.ops import elementwise as ew


def is_basic_index(index):
    """True when `x[index]` is a view (ints, slices, None, Ellipsis), not an advanced-indexing copy."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, slice | int | np.integer) for i in items)


class _ViewStep:
    """How a view was made from its base (the view op and its attrs), shaped like the Node the op's
    backward rule reads (`op`, `inputs`, `attrs`, `next`)."""

    __slots__ = ("op", "inputs", "attrs", "next")

    def __init__(self, op, base, attrs):
        self.op, self.inputs, self.attrs, self.next = op, (base,), attrs, (base,)


def _view_step(t):
    """How `t` views its base, or None when `t` is not a view sharing its base's memory. Read from what
    the view op left on `t` (`_base`, `_view_of`), not from its grad_fn: a view that does not require
    grad, or whose grad_fn an earlier in-place write replaced, still writes into its base's memory."""
    base = getattr(t, "_base", None)
    how = getattr(t, "_view_of", None)
    if base is None or how is None or not t.device.xp.may_share_memory(t.array, base.array):
        return None  # a reshape that had to copy is no view
    return _ViewStep(how[0], base, how[1])


def snapshot(t):
    """A Tensor holding `t`'s current value and graph position, immune to later writes into `t`."""
    s = Tensor.__new__(Tensor)
    s.array, s.device, s.grad, s.grad_fn = t.array.copy(), t.device, None, t.grad_fn
    s.requires_grad, s._vc = t.requires_grad, [t._vc[0]]
    return s


def rebase(view, new_value):
    """Before `new_value` (a recorded Tensor) is written into `view`: compute the graph each base of
    the view chain gets (a base that did not require grad starts to, as in torch). Returns [(base, its new graph Tensor)], to apply with `commit` after the write."""
    if not grad_mode.state.grad_enabled:
        return []
    out = []
    node = _view_step(view)
    while node is not None:
        base = node.inputs[0]
        if base.requires_grad and base.grad_fn is None:
            raise AutogradError(
                "a view of a leaf Variable that requires grad is being used in an in-place operation "
                f"({node.op.name} view of shape {tuple(view.shape)})."
            )
        with grad_mode.no_grad():
            covered = _place(node, ew.const(1, view, None).expand(view.shape))
        if float(covered.array.max(initial=0)) > 1:
            raise AutogradError(
                "unsupported operation: more than one element of the written-to tensor refers to a single "
                f"memory location ({node.op.name} view of shape {tuple(view.shape)}). Please clone() the "
                "tensor before performing the operation."
            )
        placed = _place(node, new_value)
        new_value = ew.add(ew.mul(snapshot(base), ew.rsub(covered, 1)), placed)
        out.append((base, new_value))
        view, node = base, _view_step(base)
    return out


def _place(node, t):
    """The view op's backward rule applied to `t`: `t` put where the view sits in its base."""
    grads = node.op.backward(node, t)
    return grads if isinstance(grads, Tensor) else grads[0]


def commit(rebased):
    for base, new_value in rebased:
        base.grad_fn, base.requires_grad = new_value.grad_fn, True
