"""Tensor: an array on a device plus what autograd needs (requires_grad, grad, grad_fn, version).

The backing array is `t.array` (a numpy or cupy ndarray, never copied). Op methods (`t.exp()`,
`t @ u`, `t[idx]`, ...) are installed from the op table in `distgraph.ops.methods`, so this module
holds only state and the few methods that are not ops.
"""

import copy
import warnings
from operator import attrgetter

import numpy as np

from distgraph import dtypes
from distgraph.autograd.formats import strided
from distgraph.autograd.grad_mode import INFERENCE_VERSION
from distgraph.autograd.grad_mode import state as _grad_state
from distgraph.autograd.layout import now as _layout_now
from distgraph.autograd.printing import tensor_repr
from distgraph.autograd.size import Size, new_size
from distgraph.autograd.storage import deepcopy_array
from distgraph.backend import CPU, device_of_array, to_device
from distgraph.backend import device as as_device
from distgraph.errors import AutogradError, DTypeError

# Graph capture listens here (installed by `autograd.function.set_tracer`): a tensor's value read on the
# host while a function is traced (`item()`, `bool()`, `numpy()`...) is Python acting on data, which a
# graph cannot represent, so capture must hear of it and fall back to eager instead of baking it in.
host_reads = None


class Tensor:
    """A multi-dimensional array that can record the ops applied to it for backward."""

    __slots__ = (
        "array",
        "device",
        "_own_requires_grad",  # what requires_grad reads (a View's: or its base's); assignments are checked
        "_grad",  # what .grad reads; assignments to .grad are checked (see grad's setter)
        "grad_fn",
        "_vc",
        "_hooks",
        "_post_hooks",
        "_retains",
        "_view_of",  # on views only (unset slots read as None through getattr): the tensor viewed (its parent)
        "_view_fn",  # on views only: (op, attrs) that made it from _view_of, so a write through it reaches it
        "_view_version",  # on views only: the shared version its grad_fn was recorded at (View)
        "_view_epoch",  # on views only: the layout epoch its recipe was made in (autograd/layout.py)
        "_epoch",  # the layout epoch since which it has its layout (an int: autograd/layout.py)
        "__weakref__",
    )
    __array_priority__ = 1000  # numpy defers `ndarray * Tensor` to Tensor.__rmul__

    def __init__(self, array, requires_grad=False, device=None):
        self.array = array
        self.device = device if device is not None else device_of_array(array)
        self._grad = None
        self._epoch = _layout_now[0]
        self.grad_fn = None
        self._vc = INFERENCE_VERSION if _grad_state.inference else [0]
        self._own_requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ---- metadata ---------------------------------------------------------------------------
    @property
    def shape(self):  # torch's: a Size (a tuple printing as torch.Size); distgraph's hot paths read array.shape
        return new_size(Size, self.array.shape)

    @property
    def dtype(self):
        return dtypes.from_numpy(self.array.dtype)

    @property
    def ndim(self):
        return self.array.ndim

    @property
    def layout(self):
        return strided  # (torch's only dense layout; distgraph has no sparse tensors)

    def dim(self):
        return self.array.ndim

    def size(self, dim=None):
        return new_size(Size, self.array.shape) if dim is None else self.array.shape[dim]

    def numel(self):
        return self.array.size

    def element_size(self):
        return self.array.itemsize

    @property
    def nbytes(self):
        return self.array.nbytes

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def _is_view(self):
        """Whether this tensor was made by a view op (reshape, permute, slicing, basic indexing...) and
        shares memory with the tensor it views (a reshape that had to copy is not a view, as in torch;
        nor is a view of an inference tensor, which, as torch's, tracks no views)."""
        base = getattr(self, "_view_of", None)
        if base is None or self._vc is INFERENCE_VERSION:
            return False
        return bool(self.device.xp.may_share_memory(self.array, base.array))

    @property
    def _base(self):
        """torch's: the tensor owning the memory this view shares, the root of a chain of views (not the
        view it was made of: `x[1:].view(-1)._base is x`); None for a tensor that is no view (_is_view)."""
        if not self._is_view():
            return None
        root = self._view_of
        while root._is_view():
            root = root._view_of
        return root

    def is_inference(self):
        """Made inside `inference_mode` (or a view of such a tensor): see InferenceVersion."""
        return self._vc is INFERENCE_VERSION

    @property
    def is_cuda(self):
        return self.device.type == "cuda"

    def is_floating_point(self):
        return self.array.dtype.kind == "f"

    @property
    def _version(self):
        return self._vc[0]

    def __len__(self):
        if self.array.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.array.shape[0]

    # ---- autograd state ---------------------------------------------------------------------
    @property
    def grad(self):
        if self._grad is None and _grad_fn_slot.__get__(self) is not None and not self.retains_grad:
            warnings.warn(_NON_LEAF_GRAD, UserWarning, stacklevel=2)  # (a likely mistake)
        return self._grad

    @grad.setter
    def grad(self, value):
        """As torch, a gradient assigned by hand must be None or fit (see _check_assigned_grad)."""
        if value is not None:
            _check_assigned_grad(self, value)
        self._grad = value

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.array.dtype.kind != "f":
            raise DTypeError(f"only floating point tensors can require gradients, got {self.dtype}")
        if requires_grad and self._vc is INFERENCE_VERSION and not _grad_state.inference:
            raise AutogradError("Setting requires_grad=True on inference tensor outside InferenceMode is not allowed.")
        if not requires_grad and _grad_fn_slot.__get__(self) is not None:  # (its own: see retain_grad)
            raise AutogradError(_LEAF_ONLY + _USE_DETACH)
        self._own_requires_grad = bool(requires_grad)
        return self

    def _set_requires_grad(self, value):
        """`t.requires_grad = value` (read: the slot's C-level get, as every op reads it; code building a
        tensor writes the slot, `_own_requires_grad`), checked as torch's: as requires_grad_, and refused on
        any non-leaf."""
        if value and _grad_fn_slot.__get__(self) is not None:
            raise AutogradError(_LEAF_ONLY)
        self.requires_grad_(value)

    requires_grad = property(attrgetter("_own_requires_grad"), _set_requires_grad)

    def detach(self):
        """A tensor sharing this one's array and version counter, outside the graph."""
        out = Tensor(self.array, device=self.device)
        out._vc = self._vc
        return out

    def detach_(self):
        """Detach in place; refused on a view, as torch: the view would leave its base's graph while
        still sharing its memory (use detach(), which makes a new tensor)."""
        if self._is_view():
            raise AutogradError(
                "detach_: Can't detach views in-place. Use detach() instead (the tensor is a view of another "
                f"tensor of shape {tuple(self._base.shape)})."
            )
        if self.grad_fn is not None:
            non_leaves_detached[0] += 1
        self.grad_fn = None
        self._own_requires_grad = False
        return self

    @property
    def data(self):
        """The array outside the graph with its own version counter (unlike detach()): as torch,
        changes made through `.data` are not seen by autograd's in-place checks."""
        return Tensor(self.array, device=self.device)

    @data.setter
    def data(self, other):
        self.array = other.array if isinstance(other, Tensor) else other
        self.device = device_of_array(self.array)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        from distgraph.autograd.engine import backward

        backward([self], [gradient], retain_graph=retain_graph, create_graph=create_graph, inputs=inputs)

    def register_hook(self, hook):
        """Call `hook(grad)` when this tensor's gradient is computed; a non-None return replaces it."""
        if not self.requires_grad:
            raise AutogradError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            if self.grad_fn.hooks is None:
                self.grad_fn.hooks = []
            hooks = self.grad_fn.hooks
            keep = getattr(self, "_retains", None)
            if keep in hooks:  # as torch, retain_grad's hook runs last, so .grad is what the hooks made of it
                hooks.insert(hooks.index(keep), hook)
            else:
                hooks.append(hook)
        else:
            if getattr(self, "_hooks", None) is None:
                self._hooks = []
            self._hooks.append(hook)
            hooks = self._hooks
        return _RemovableHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call `hook(tensor)` on this leaf as soon as backward has accumulated its `.grad` — during
        backward, not after it (torch's hook of the same name): what lets a data-parallel worker start
        reducing the last layers' gradients while the first layers' are still being computed."""
        if self.grad_fn is not None:
            raise AutogradError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self.requires_grad:
            raise AutogradError("cannot register a hook on a tensor that doesn't require gradient")
        if getattr(self, "_post_hooks", None) is None:
            self._post_hooks = []
        self._post_hooks.append(hook)
        post_hooks_registered[0] += 1
        return _RemovableHandle(self._post_hooks, hook)

    def retain_grad(self):
        """Keep `.grad` for a non-leaf tensor after backward. A no-op on a leaf, as torch; whether it is
        one is read from its own grad_fn, not rebuilt (a view made in no_grad mode is a leaf even after
        its memory was written, when reading its grad_fn would raise)."""
        if not self.requires_grad:
            raise AutogradError("can't retain_grad on Tensor that has requires_grad=False")
        if _grad_fn_slot.__get__(self) is None or getattr(self, "_retains", None):
            return
        import weakref

        ref = weakref.ref(self)

        def keep(grad):
            t = ref()
            if t is not None:
                t.grad = grad.clone() if t.grad is None else t.grad + grad  # (a copy, as torch: the
                # same gradient may be handed on, to autograd.grad's caller or a later hook)
            return None

        self.register_hook(keep)
        self._retains = keep  # the hook itself, so later hooks are put before it

    @property
    def retains_grad(self):
        return getattr(self, "_retains", None) is not None

    # ---- conversion -------------------------------------------------------------------------
    def numpy(self, force=False):
        if host_reads is not None:
            host_reads(self, "numpy()")
        if self.requires_grad and not force:
            raise AutogradError("Can't call numpy() on a tensor that requires grad. Use tensor.detach().numpy()")
        if self.device is not CPU:
            if not force:
                raise AutogradError(f"can't convert {self.device} tensor to numpy: use .cpu() first")
            return self.array.get()
        return self.array

    def __array__(self, dtype=None, copy=None):
        if host_reads is not None:
            host_reads(self, "a numpy conversion")
        arr = self.array if self.device is CPU else self.array.get()
        if copy is False and self.device is not CPU:
            raise ValueError(f"a {self.device} tensor cannot be viewed as a numpy array without a copy")
        return arr if dtype is None and not copy else arr.astype(arr.dtype if dtype is None else dtype, copy=bool(copy))

    def __dlpack__(self, *args, **kwargs):
        return self.array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

    def item(self):
        if host_reads is not None:
            host_reads(self, "item()")
        if self.array.size != 1:
            raise AutogradError(f"a Tensor with {self.array.size} elements cannot be converted to Scalar")
        return self.array.reshape(()).item()

    def tolist(self):
        return np.asarray(self.__array__()).tolist()

    def to(self, *args, **kwargs):
        """`.to(device)`, `.to(dtype)`, `.to(device, dtype)` or `.to(other_tensor)` as in PyTorch (and its
        `memory_format=`: contiguous() in that format, autograd/formats.py)."""
        dev = kwargs.pop("device", None)
        dt = kwargs.pop("dtype", None)
        copy = kwargs.pop("copy", False)
        memory_format = kwargs.pop("memory_format", None)
        for a in args:
            if isinstance(a, Tensor):
                dev, dt = a.device, a.dtype
            elif isinstance(a, dtypes.DType) or (isinstance(a, str) and a.removeprefix("torch.") in dtypes._BY_NAME):
                dt = a
            else:
                dev = a
        out = self
        if dt is not None:
            dt = dtypes.from_any(dt)
            if dt.np != self.array.dtype or copy:
                from distgraph.ops.elementwise import cast

                out = cast(out, dt)
        if dev is not None:
            dev = as_device(dev)
            if dev is not out.device:
                from distgraph.ops.movement import to_device_op

                out = to_device_op(out, dev)
        if memory_format is not None and memory_format != "preserve_format":
            out = out.contiguous(memory_format)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)

    # ---- printing ---------------------------------------------------------------------------
    def __repr__(self):
        return tensor_repr(self)

    def __bool__(self):
        if host_reads is not None:
            host_reads(self, "bool()")
        if self.array.size != 1:
            raise AutogradError(f"Boolean value of Tensor with {self.array.size} values is ambiguous")
        return bool(self.array.reshape(()))

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.array.dtype.kind not in "iu" or self.array.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    __hash__ = object.__hash__

    def __deepcopy__(self, memo):
        """torch's deepcopy: a leaf's data (views of one storage stay views of one copy: autograd/storage.py),
        flags and .grad copied; a tensor computed by an op is refused, as torch refuses it."""
        if id(self) in memo:
            return memo[id(self)]
        if self.grad_fn is not None:
            raise AutogradError(
                "Only Tensors created explicitly by the user (graph leaves) support the deepcopy protocol at the "
                "moment (torch's words); deepcopy its .detach() instead"
            )
        new = memo[id(self)] = Tensor(deepcopy_array(self.array, memo), self.requires_grad, self.device)
        if self.grad is not None:
            new.grad = copy.deepcopy(self.grad, memo)
        return new

    def __reduce__(self):  # Ray/in-flight serialization only (files use msgpack via dg.save): array + flags
        array = to_device(self.array, "cpu") if self.device is not CPU else self.array
        return (_rebuild, (array, str(self.device), self.requires_grad))


_LEAF_ONLY = "you can only change requires_grad flags of leaf variables."
_NON_LEAF_GRAD = (  # torch's words
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad attribute won't be "
    "populated during autograd.backward(). If you indeed want the .grad field to be populated for a non-leaf Tensor, "
    "use .retain_grad() on the non-leaf Tensor. If you access the non-leaf Tensor by mistake, make sure you access the"
    " leaf Tensor instead. See github.com/pytorch/pytorch/pull/30531 for more information."
)
_USE_DETACH = (
    " If you want to use a computed variable in a subgraph that doesn't require differentiation use "
    "var_no_grad = var.detach()."
)


def _check_assigned_grad(t, value):
    """A Tensor of t's dtype, device and shape, or the optimizer's update fails later, far from the mistake."""
    if not isinstance(value, Tensor):
        raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of type {type(value).__name__}")
    if value is t:
        raise AutogradError("can't assign Variable as its own grad")
    if value.array.dtype != t.array.dtype:
        problem = "of a different type"
    elif value.device is not t.device:
        problem = "located on a different device"
    elif value.shape != t.shape:
        problem = "of a different size"
    else:
        return
    raise AutogradError(
        f"assigned grad has data {problem}: grad {tuple(value.shape)} {value.dtype.name} on {value.device}, "
        f"tensor {tuple(t.shape)} {t.dtype.name} on {t.device}"
    )


def _rebuild(array, device, requires_grad):
    return Tensor(to_device(array, device), requires_grad=requires_grad)


# Installed by autograd.function (which records nodes; this module cannot import it): rebuilds a stale
# View's grad_fn as its view op applied to its base's current graph.
regenerate_view = None
_grad_fn_slot = Tensor.grad_fn  # the slots themselves, which View's properties wrap
# The slot requires_grad reads, under a name View does not override: the own flag (torch's `requires_grad_`),
# which alone gives a leaf gradients; a View may require grad through its base alone.
_requires_grad_slot = Tensor._own_requires_grad


class View(Tensor):
    """A tensor made by a view op (reshape, permute, expand, slicing...): torch's rule for the views of a
    memory written in place. A write through one view (or into the base) gives the written tensor and
    its base a new graph, but the other views of that memory made before keep the graph of the old
    values. So, as torch, a view remembers the shared version its graph was recorded at, and reading its
    grad_fn or requires_grad (what an op, backward or the user does) after the version moved rebuilds
    its graph from its base's. Only views pay for this: a plain Tensor's attributes are bare slots. So
    `type(view) is View`, not Tensor (isinstance holds, as for torch's subclasses): these properties on
    Tensor itself, with a None check for plain tensors, made plain ops 5-15 % slower (bench ops)."""

    __slots__ = ()

    @property
    def grad_fn(self):
        vc = self._vc
        if vc is not INFERENCE_VERSION and vc[0] != self._view_version:
            regenerate_view(self)
        return _grad_fn_slot.__get__(self)

    @grad_fn.setter
    def grad_fn(self, node):  # set after a write through this view: its graph is current again
        _grad_fn_slot.__set__(self, node)
        vc = self._vc
        self._view_version = vc[0] if vc is not INFERENCE_VERSION else 0

    def _requires_grad(self):
        """As torch's views: its own flag (set by recording or requires_grad_), or its root's (the tensor
        owning the memory, torch's `_base`). So a view made in no_grad mode of a tensor that requires grad
        requires grad, with no grad_fn: a leaf no gradient reaches (unless requires_grad_(True) gave it
        its own flag, `_own_requires_grad`) and that a write with grad mode on may not change."""
        vc = self._vc
        if vc is not INFERENCE_VERSION and vc[0] != self._view_version:
            regenerate_view(self, strict=False)
        if _requires_grad_slot.__get__(self):
            return True
        root = self._view_of  # (view_root, inlined: read by every op on a view)
        while type(root) is View:
            root = root._view_of
        return root.requires_grad

    requires_grad = property(_requires_grad, Tensor._set_requires_grad)  # set: checked, as a plain tensor's


def view_root(view):
    """The first tensor down `view`'s chain of views that is no View: the tensor whose graph a view's
    graph is rebuilt from (torch's `_base`, but for a reshape that copied, which stays in the chain)."""
    root = view._view_of
    while type(root) is View:
        root = root._view_of
    return root


TENSOR_TYPES = (Tensor, View)  # the exact types ops' fast paths take unchecked (not Parameter: the general path)


non_leaves_detached = [0]  # how many detach_ took a tensor out of a graph (the engine checks saved ones only then)
post_hooks_registered = [0]  # post-accumulate hooks ever registered (none: the engine skips early-leaf bookkeeping)


class _RemovableHandle:
    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)
