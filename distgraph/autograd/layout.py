"""Layout epochs: how the Nodes and Views made before an in-place shape change (t_, squeeze_, resize_...,
ops/inplace_shape.py) keep seeing the tensor as it was, without any search for them.

A Node keeps its input Tensors (backward reads their shape) and a View the Tensor it views (its recipe
places writes in that tensor's layout). An in-place shape change gives the same Tensor object a new
layout, so those holders must be pointed at an alias holding the old one, as torch's Nodes and views
keep their own metadata. Finding them by scanning the heap cost milliseconds a change; noting every
holder in the tensor (weak references) cost 5-8 % of every eager op. Instead time is cut into epochs
at each change: a Node or View keeps the epoch it was made in (one pointer store), and a change of
tensor `t` files `t`'s alias under `id(t)` in the live epochs since `t` took its layout (`t._epoch`, an
int). A holder resolves itself lazily, when it next acts (a Node when backward runs it, a View when
its recipe is applied): while no change happened since it was made, that is one identity check.

Memory: an epoch lives while a holder made in it does, so an alias lives while a holder that may need
it does; a tensor's `_epoch` is an int and pins nothing. An `id` filed in an epoch cannot be reused by
a tensor that a holder of that epoch holds (both would have been alive together).
"""

import weakref


class Epoch:
    """The time between two in-place shape changes; `aliases`: {id(t): (alias, refusal)} for the tensors
    changed since it began that existed in it (`refusal`: an error for a gradient into `t` itself)."""

    __slots__ = ("seq", "aliases", "__weakref__")

    def __init__(self, seq):
        self.seq = seq
        self.aliases = {}


current = [Epoch(0)]  # the epoch now (one list read per op)
now = [0]  # its seq, what a tensor stamps as its `_epoch`
_live = [weakref.ref(current[0])]  # the epochs a holder may still keep (some dead), oldest first
_pruned = [1]  # len(_live) after its dead were last dropped: they are again once it doubled (O(1) a change)


def changed(t, alias, refusal=None):
    """`t` is about to take a new layout; `alias` holds its old state. Files the alias for the holders
    made since `t` took its layout, and starts a new epoch. Returns the epoch for the alias's recipe (it
    views `t`, or what `t` viewed): its own, where neither `t`'s entries (a cycle) nor those of tensors
    made later are filed, so aliases of tensors made and reshaped one after another do not keep each
    other (and each other's epochs) alive."""
    since = getattr(t, "_epoch", 0)  # (0 for a tensor made without a stamp: filed everywhere, once)
    for ref in reversed(_live):
        epoch = ref()
        if epoch is not None:
            if epoch.seq < since:
                break
            epoch.aliases[id(t)] = (alias, refusal)
    own = Epoch(current[0].seq + 1)
    current[0] = Epoch(own.seq + 1)
    t._epoch = own.seq
    now[0] = current[0].seq
    _live.extend((weakref.ref(own), weakref.ref(current[0])))
    if len(_live) > 2 * _pruned[0]:
        _live[:] = [r for r in _live if r() is not None]
        _pruned[0] = len(_live)
    return own


def as_seen(t, epoch):
    """`t` as a holder made in `epoch` saw it: the alias of its first change since, or `t` itself."""
    entry = epoch.aliases.get(id(t))
    return t if entry is None else entry[0]


def view_base(view):
    """The tensor `view` views, in the layout its recipe was made for (and points it there for good)."""
    epoch = view._view_epoch
    if epoch is not current[0]:
        view._view_of = as_seen(view._view_of, epoch)
        view._view_epoch = current[0]
    return view._view_of
