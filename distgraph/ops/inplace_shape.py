"""In-place shape changes: t_, transpose_, swapaxes_, swapdims_, squeeze_, unsqueeze_ (torch's in-place
view ops). The tensor object stays the same; its array becomes a view of the same memory with the new
shape, its version moves (torch's), and when grad is recorded its grad_fn is the view op's.

What makes this more than `self.array = self.array.T`: a distgraph graph Node keeps its input Tensors
(backward reads their shape and dtype), and a View keeps the Tensor it views (a write through it is
placed into that tensor by its view op's backward rule). Both were recorded against the tensor before
the change, so after it they must see that tensor, not the reshaped one, as torch's Nodes keep their
inputs' metadata. So the old state is moved to a hidden alias (`_alias`), which every Node and View made
before sees from then on (autograd/layout.py: each resolves itself when it next acts, found by no search
and paid for by no other op). The alias and the reshaped tensor stay tied as
views of one memory: a reshaped view of a base views the alias (which views the base), and a reshaped
root stays the root and the alias becomes its view by the inverse op, so writes through either reach
the other's graph, as in torch where both share one storage.

resize_/resize_as_ (torch's, for tensors that do not require grad) reinterpret the memory under the
tensor, from its first element on, as a contiguous array of the new shape: torch's storage semantics.
Growing past that memory copies it into a larger buffer; unlike torch's storage, which grows in place,
other tensors on the old memory do not follow (they keep the old buffer).

`as_strided_` is not offered: `as_strided` (ops/strided.py) is a view op like unfold, but an in-place
restride of the tensor itself would need the same recipe for the alias, which is not built.
"""

import contextlib

import numpy as np

from distgraph.autograd import grad_mode, layout
from distgraph.autograd.function import move_retained_grad
from distgraph.autograd.layout import view_base
from distgraph.autograd.tensor import Tensor, View
from distgraph.backend import address
from distgraph.errors import AutogradError, ShapeError
from distgraph.ops import shape, views
from distgraph.ops.registry import defop

_STATE = (
    "array",
    "device",
    "_own_requires_grad",
    "grad_fn",
    "_vc",
    "_view_of",
    "_view_fn",
    "_view_version",
    "_view_epoch",
)


def t_(self):
    return _inplace_view(self, "t_", shape.t)


def transpose_(self, dim0, dim1):
    return _inplace_view(self, "transpose_", shape.transpose, dim0, dim1)


def swapaxes_(self, axis0, axis1):
    return _inplace_view(self, "swapaxes_", shape.transpose, axis0, axis1)


def swapdims_(self, dim0, dim1):
    return _inplace_view(self, "swapdims_", shape.transpose, dim0, dim1)


def squeeze_(self, dim=None):
    return _inplace_view(self, "squeeze_", shape.squeeze, dim)


def unsqueeze_(self, dim):
    return _inplace_view(self, "unsqueeze_", shape.unsqueeze, dim)


def _inplace_view(self, name, view_op, *args):
    """`self` reshaped in place by `view_op(self, *args)`, under torch's autograd rules for in-place ops."""
    views.check_view_write(self, (), name)  # a view made in no_grad mode, or one of split's views
    recording = grad_mode.state.grad_enabled and self.requires_grad
    if recording:
        _refuse_leaf(self, name)
    old = _alias(self)
    with grad_mode.no_grad() if not recording else contextlib.nullcontext():
        new = view_op(old, *args)  # (checks the dims before anything changed)
    recorded = Tensor.grad_fn.__get__(new) if recording else None
    refusal = None
    if not recording and self.requires_grad and type(self) is not View:
        if Tensor.grad_fn.__get__(self) is not None:  # its graph is of the old shape: backward refuses
            with grad_mode.enable_grad():
                recorded = _unrecorded_change(view_op(old, *args), **_shapes(name, old, new)).grad_fn
        else:  # a leaf: the gradients of the ops that used it, of the old shape, must not reach its .grad
            refusal = _refusal(**_shapes(name, old, new))  # (torch fails in backward too)
    old._view_epoch = layout.changed(self, old, refusal)  # the Nodes and Views made before keep seeing `old`
    before = Tensor.grad_fn.__get__(self)
    self.array = new.array
    self._vc[0] += 1
    version = self._vc[0]
    if type(self) is View:  # it now views the alias (which views what it viewed) by the view op
        self._view_of = old
        self._view_epoch = layout.current[0]
        self._view_fn = (*new._view_fn[:2], *old._view_fn[2:])  # (it keeps how it was made)
        if recorded is not None:
            Tensor.grad_fn.__set__(self, recorded)
        self._view_version = version if recorded is not None else -1  # unrecorded: rebuilt when read
    else:  # the root stays the root; the alias becomes its view by the inverse op
        if recorded is not None:
            Tensor.grad_fn.__set__(self, recorded)
            Tensor._own_requires_grad.__set__(self, True)
        old.__class__ = View
        old._view_of = self
        old._view_fn = _inverse(new._view_fn, old.shape)
        old._view_version = version
    if recorded is not None:  # (torch leaves a retain_grad() on the old value: a .grad of the old shape)
        move_retained_grad(self, before)
    return self


@defop("unrecorded_shape_change", kind="other", save=())
def _unrecorded_change(xp, x, name, before, after):
    return x


@_unrecorded_change.grad
def _(ctx, g):
    raise AutogradError(_refusal(**ctx.attrs))


def _refusal(name, before, after):
    return (
        f"{name}: in no_grad mode it changed a tensor that requires grad from shape {before} to {after}, so "
        "the gradient recorded for one shape would reach a tensor of the other (torch fails here too); "
        "change its shape with grad enabled, or out of place"
    )


def _shapes(name, old, new):
    return {"name": name, "before": tuple(old.shape), "after": tuple(new.shape)}


def _refuse_leaf(self, name):
    """torch's refusals of an in-place op recorded on a leaf that requires grad, or on a view of one."""
    if Tensor.grad_fn.__get__(self) is None and type(self) is not View:
        raise AutogradError(f"{name}: a leaf Variable that requires grad is being used in an in-place operation.")
    base = self
    while type(base) is View and views._shares_memory(base):
        base = base._view_of
        if base.grad_fn is None and base.requires_grad:
            raise AutogradError(
                f"{name}: a view of a leaf Variable that requires grad is being used in an in-place operation "
                f"(a view of shape {tuple(self.shape)})."
            )


def _alias(self):
    """A tensor holding `self`'s state as it is now: what the Nodes and Views made before keep seeing."""
    if type(self) is View:
        view_base(self)  # (what it views in the layout its recipe was made for)
    return state_copy(self, View if type(self) is View else Tensor)


def state_copy(self, cls):
    """A new `cls` object (Tensor or a subclass) holding `self`'s state (array, graph, version counter, what it
    views), but not its identity's own things (.grad, hooks)."""
    old = Tensor.__new__(cls)
    for slot in _STATE:
        desc = Tensor.__dict__[slot]
        try:
            desc.__set__(old, desc.__get__(self))
        except AttributeError:  # an unset slot (a plain tensor's view slots)
            pass
    old._grad = None
    return old


def _inverse(recipe, old_shape):
    """The view recipe giving the old layout back from the new one: permute's inverse permutation, or a
    reshape to the old shape (squeeze, unsqueeze, and t/transpose of a tensor under 2-d)."""
    op, attrs = recipe[0], recipe[1]
    if op.name == "permute":
        return (op, {"dims": tuple(np.argsort(attrs["dims"]).tolist())})
    return (op, {"shape": tuple(old_shape)})


def resize_(self, *sizes, size=None, memory_format=None):
    if size is not None:
        if sizes:
            raise TypeError("resize_() got multiple values for argument 'size'")
        if not isinstance(size, tuple | list):
            raise TypeError(f"resize_(): argument 'size' must be tuple of ints, not {_typename(size)}")
        sizes = (size,)
    size = int_list("resize_", "size", sizes)
    if self.requires_grad:
        raise AutogradError("resize_: cannot resize variables that require grad")
    if any(n < 0 for n in size):
        raise ShapeError(f"resize_: numel: integer multiplication overflow (a negative size in {list(size)})")
    storage, offset = _storage(self.array)
    need = offset + int(np.prod(size))
    if need > storage.size:  # torch's storage grows; here a larger buffer takes the old memory's values
        grown = self.device.xp.empty(need, dtype=storage.dtype)
        grown[: storage.size] = storage
        storage = grown
    old = _alias(self)
    old._view_epoch = layout.changed(self, old)  # the Nodes and Views made before keep seeing the old shape
    if type(self) is View:  # no view op makes this layout: it is a tensor of its own on that memory
        self.__class__ = Tensor
        del self._view_of, self._view_fn, self._view_version, self._view_epoch
    self.array = storage[offset:need].reshape(size)
    self._vc[0] += 1
    return self


def resize_as_(self, the_template, memory_format=None):
    if not isinstance(the_template, Tensor):
        raise TypeError(
            f"resize_as_(): argument 'the_template' (position 1) must be Tensor, not {_typename(the_template)}"
        )
    return resize_(self, tuple(the_template.shape))


def int_list(op, name, args):
    """torch's parsing of an int-list parameter given as `*args`: ints (Python's, numpy's, 0-d integer tensors)
    or one tuple/list/Size of them, with torch's TypeErrors for anything else."""
    if not args:
        raise TypeError(f'{op}() missing 1 required positional arguments: "{name}"')
    if not is_int(args[0]):
        if len(args) > 1:
            raise TypeError(f"{op}() takes 1 positional argument but {len(args)} were given")
        if not isinstance(args[0], tuple | list):
            raise TypeError(f"{op}(): argument '{name}' (position 1) must be tuple of ints, not {_typename(args[0])}")
        args = args[0]
    for pos, n in enumerate(args, 1):
        if pos == 1 and not is_int(n):  # (only a sequence's first element can be no int here)
            raise TypeError(
                f"{op}(): argument '{name}' (position 1) must be tuple of ints, but found element of type "
                f"{_typename(n)} at pos 0"
            )
        if not is_int(n):
            raise TypeError(
                f"{op}(): argument '{name}' failed to unpack the object at pos {pos} with error \"type must be tuple "
                f'of ints,but got {_typename(n)}"'
            )
    return tuple(int(n) for n in args)


def is_int(n):
    """An integer torch takes as a size: a Python or numpy int (not a bool) or a 0-d integer tensor."""
    if isinstance(n, Tensor):
        return n.ndim == 0 and n.dtype.category == 1
    return isinstance(n, int | np.integer) and not isinstance(n, bool | np.bool_)


def _typename(obj):
    module = type(obj).__module__
    return type(obj).__name__ if module == "builtins" or isinstance(obj, Tensor) else f"{module}.{type(obj).__name__}"


def _storage(a):
    """The memory under array `a` as a flat array (the first array of its chain of `.base`, which owns
    it), and the index of `a`'s first element in it."""
    root = a
    while getattr(root, "base", None) is not None and hasattr(root.base, "dtype"):
        root = root.base
    if root.dtype != a.dtype or not root.flags.c_contiguous:
        raise ShapeError(
            f"resize_: the memory under this {a.dtype} tensor of shape {tuple(a.shape)} is an array of "
            f"{root.dtype} {tuple(root.shape)} that is not one contiguous run; resize a .contiguous() copy"
        )
    return root.reshape(-1), (address(a) - address(root)) // a.itemsize


METHODS = {
    "resize_": resize_,
    "resize_as_": resize_as_,
    "t_": t_,
    "transpose_": transpose_,
    "swapaxes_": swapaxes_,
    "swapdims_": swapdims_,
    "squeeze_": squeeze_,
    "unsqueeze_": unsqueeze_,
}


def install():
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)
