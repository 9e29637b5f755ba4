"""How the engine's gradients reach the user: tensor hooks, and leaves' `.grad` (torch's AccumulateGrad).

Policy: a leaf's gradients are summed first (`add_leaf`) and handed over once (`finish_leaf`), so its
hooks see the total; then it becomes autograd.grad's result or the leaf's `.grad`. A first `.grad` is a
tensor of its own: never memory another `.grad` or the caller's seed holds (`hand_over`), nor a tensor
a hook returned (copied); under create_graph a recorded clone, as torch's. Later gradients are added into
`.grad` in place outside create_graph, as torch's, so `g = x.grad` stays `x.grad` and a `.grad` viewing a
bucket fills the bucket; under create_graph, or into a `.grad` that cannot take them in place (read-only,
another shape, dtype or device, an inference tensor), they make a new `.grad`, the sum.
"""

import numpy as np

from distgraph.autograd import layout
from distgraph.autograd.grad_mode import INFERENCE_VERSION
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device_of_array, writeable
from distgraph.errors import AutogradError

_new_tensor = Tensor.__new__
_layout_current = layout.current


def wrap(array, device):
    """A grad-less Tensor around `array` without Tensor.__init__'s checks (the backward hot path).
    An array rule on 0-d arrays may return a numpy scalar: user code (hooks, `autograd.grad`) gets an
    ndarray, which in-place ops can write into."""
    if isinstance(array, np.generic):
        array = np.asarray(array)
    out = _new_tensor(Tensor)
    out.array, out.device, out._grad, out.grad_fn, out._own_requires_grad, out._vc = (
        array,
        device,
        None,
        None,
        False,
        [0],
    )
    out._epoch = _layout_current[0].seq  # (autograd/layout.py)
    return out


def accumulate(prev, g, create_graph):
    """prev + g; outside create_graph the sum needs no graph, so add the arrays directly."""
    if prev is None:
        return g
    if create_graph:
        return prev + g
    return wrap(prev.array + g.array, g.device)  # 0-d arrays sum to a numpy scalar: `wrap` keeps an ndarray


def hand_over(array, owned, share, like=None):
    """Fast mode: the Tensor handed to the user for gradient `array`, as torch's. Each .grad gets its own
    writeable memory: not the caller's seed, nor memory another .grad holds (an op's rule may return a
    view of its gradient, sent on elsewhere too: `owned` also files the arrays owning the memory handed
    out). autograd.grad's results (`share`) that are one gradient are one Tensor (the caller's
    grad_outputs included), so a write into one moves the version autograd checks wherever another was
    saved. `owned`: id(array) -> the Tensor already handed out around it. `like`: the leaf's array, whose
    layout a new gradient takes (`in_layout`)."""
    t = owned.get(id(array))
    if share and t is not None:
        return t
    if like is not None:
        laid = in_layout(array, like)
        if laid is not array:  # a copy: memory of its own
            t = owned[id(laid)] = wrap(laid, device_of_array(laid))
            return t
    if share:
        if not writeable(array):
            array = device_of_array(array).xp.array(array)
        t = owned[id(array)] = wrap(array, device_of_array(array))
        return t
    base = array.base
    if t is not None or not writeable(array) or (base is not None and id(base) in owned):
        array, base = device_of_array(array).xp.array(array), None
    t = owned[id(array)] = wrap(array, device_of_array(array))
    if base is not None:
        owned[id(base)] = t
    return t


def in_layout(g, a, copy=False):
    """Gradient array `g` laid out as torch's AccumulateGrad lays out a new `.grad` of leaf array `a`
    (its layout contract): with a's strides where a is dense (its elements fill its memory: row-major,
    channels_last, transposed), else row-major; so `.grad.view(...)` works where the parameter's does,
    and an optimizer or a bucket meets the parameter's layout. `g` itself where it is laid out so (unless
    `copy`; one flag read each in the common case, both row-major), else a copy, which also lets go of a
    larger buffer `g` was a view of (the padded gradient of pad, conv, avg_pool). autograd.grad's
    results take the input's layout too: torch's rules mostly compute them so (its mm's gradient of a
    transposed input is transposed), where distgraph's rules often give a view of another layout."""
    order = _wanted_order(g, a)
    if order is None:
        return device_of_array(g).xp.array(g) if copy else g  # (xp.array keeps g's strides: order "K")
    return (
        device_of_array(g).xp.ascontiguousarray(g.transpose(order)).transpose([order.index(d) for d in range(g.ndim)])
    )


def _wanted_order(g, a):
    """None where `g` keeps the layout contract of leaf array `a` (strides equal a's where a is dense,
    size-1 dims aside; else row-major), else the dims of the layout it must take, slowest first."""
    if a.flags.c_contiguous:
        return None if g.flags.c_contiguous else list(range(g.ndim))
    dims = sorted(range(a.ndim), key=lambda d: -a.strides[d])  # (a sort that keeps ties in order)
    step = a.itemsize
    for d in reversed(dims):  # torch's is_non_overlapping_and_dense: no gap, no overlap
        if a.shape[d] != 1:
            if a.strides[d] != step:
                return None if g.flags.c_contiguous else list(range(g.ndim))
            step *= a.shape[d]
    keeps = all(n == 1 or s // g.itemsize == t // a.itemsize for n, s, t in zip(a.shape, g.strides, a.strides))
    return None if keeps else dims


def _tensor_in_layout(g, leaf, copy=False):
    """`in_layout` for a gradient Tensor that may have a history (create_graph): a recorded copy, so
    the history stays; `g` itself where it is laid out so (unless `copy`: then its clone)."""
    order = _wanted_order(g.array, leaf.array)
    if order is None:
        return g.clone() if copy else g
    return g.permute(order).contiguous().permute([order.index(d) for d in range(g.ndim)])


def call_hooks(hooks, grad, as_array):
    """Run tensor hooks on `grad` (an array when `as_array`); a hook's non-None return replaces it, once
    checked as torch checks it."""
    t = wrap(grad, device_of_array(grad)) if as_array else grad
    for hook in hooks:
        new = hook(t)
        if new is not None:
            _check_hook_result(hook, t, new)
            t = new
    return t.array if as_array else t


def _check_hook_result(hook, value, new):
    """torch's check of what a hook returned: a Tensor of the gradient's type, device and size."""
    if not isinstance(new, Tensor):
        raise TypeError(f"expected Variable, but hook returned '{type(new).__name__}'")
    name = getattr(hook, "__name__", None)
    name = name if isinstance(name, str) else "<unknown>"
    if new.array.dtype != value.array.dtype or new.device.type != value.device.type:
        raise AutogradError(
            f"hook '{name}' has changed the type of value (was {_type_name(value)} got {_type_name(new)})"
        )
    if new.shape != value.shape:
        raise AutogradError(f"hook '{name}' has changed the size of value")


def _type_name(t):
    """torch's legacy type name, with the device: distgraph.FloatTensor, distgraph.cuda.FloatTensor."""
    name = t.type()
    return name if t.device.type == "cpu" else name.replace(".", f".{t.device.type}.", 1)


def add_leaf(leaf_grads, leaf, g, create_graph=False):
    """Sum gradient `g` into what leaf_grads ({id(leaf): [leaf, grad]}) holds for `leaf`."""
    entry = leaf_grads.get(id(leaf))
    if entry is None:
        leaf_grads[id(leaf)] = [leaf, g]
    elif isinstance(g, Tensor):
        entry[1] = accumulate(entry[1], g, create_graph)
    else:
        entry[1] = entry[1] + g


def finish_leaf(leaf, g, owned, fast, create_graph, captured, capture):
    """Leaf hooks, then the captured gradient (autograd.grad) or `.grad` and the post-accumulate hooks."""
    if fast:
        g = given = hand_over(g, owned, capture is not None, leaf.array)
    elif capture is not None:
        g = _tensor_in_layout(g, leaf)
    hooks = getattr(leaf, "_hooks", None)
    if hooks:
        g = call_hooks(hooks, g, False)
    if capture is not None:
        captured[id(leaf)] = g
        return
    if not leaf._own_requires_grad:  # it left the graph (detach_, requires_grad_(False)) after this
        return  # graph was recorded: as torch's AccumulateGrad, no .grad for it
    prev = leaf._grad
    if prev is None:
        if create_graph:
            leaf._grad = _tensor_in_layout(g, leaf, copy=True)  # (recorded: its own tensor, still differentiable)
        elif fast:
            leaf._grad = g if g is given else wrap(in_layout(g.array, leaf.array, copy=True), g.device)  # (a hook's)
        else:
            leaf._grad = _tensor_in_layout(g, leaf).detach()
    elif not create_graph and _adds_in_place(prev, g):
        prev.array += g.array
        prev._vc[0] += 1
    else:
        leaf._grad = accumulate(prev, g, create_graph)
    for hook in getattr(leaf, "_post_hooks", None) or ():
        hook(leaf)


def _adds_in_place(prev, g):
    """Whether gradient `g` can be added into `.grad` `prev` in place (see the module docstring)."""
    a = prev.array
    return (
        a.shape == g.array.shape
        and a.dtype == g.array.dtype
        and prev.device is g.device
        and prev._vc is not INFERENCE_VERSION
        and writeable(a)
        and not (0 in a.strides and a.size > 1)  # (an expanded one: several elements on one location)
    )
