"""Shape ops: views (reshape, permute, expand, ...), joins and splits (cat, stack, split, chunk).
Reordering (flip, roll) lives in `reorder`, padding and triangular/diagonal selection in `regions`.

Views share memory with their input on numpy/cupy when the backend can, so they share its version
counter (`view=True`): an in-place write through a view is seen by autograd's saved-tensor checks.
"""

import builtins
import functools

import numpy as np

from distgraph import dtypes
from distgraph.autograd.engine import sum_to_array
from distgraph.autograd.function import apply, mark_multi_output
from distgraph.autograd.node_names import named
from distgraph.autograd.tensor import Tensor
from distgraph.backend import namespace
from distgraph.errors import ShapeError
from distgraph.ops import elementwise as ew
from distgraph.ops.int_args import as_int, as_ints, is_single
from distgraph.ops.reduction import normalize_dim, normalize_dims
from distgraph.ops.registry import defop

VIEW = "view"


def _dim(d, ndim, op, whole=False):
    """normalize_dim; `whole`: the op takes a slice of a dim (narrow, split, unbind, ...), which a 0-d
    tensor lacks, so (as in torch) it is refused rather than read as one element."""
    if whole and not ndim:
        raise ShapeError(f"{op}() cannot be applied to a 0-dim tensor (dim {d}): it needs at least 1 dimension")
    return normalize_dim(d, ndim, op)


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = shape[0]
    return tuple(map(int, shape))


# ---- reshape family -------------------------------------------------------------------------------
@defop("reshape", kind=VIEW, save=(), view=True)
def _reshape(xp, x, shape):
    return x.reshape(shape)


_reshape.grad(lambda ctx, g: reshape(g, ctx.inputs[0].shape))
_reshape.array_grad(lambda ctx, g: g.reshape(ctx.inputs[0].array.shape))


@defop("reshape_copy", kind="other", save=())
def _reshape_copy(xp, x, shape):
    return x.reshape(shape)  # only called where no view of `x` has the shape: numpy copies


_reshape_copy.grad(lambda ctx, g: reshape(g, ctx.inputs[0].shape))
_reshape_copy.array_grad(lambda ctx, g: g.reshape(ctx.inputs[0].array.shape))


def reshape(input, *shape):
    """A view where the memory allows, else a copy. Never `input` itself, even for its own shape: as in
    torch, the result is a new tensor (its own requires_grad, grad and detach_) sharing the memory."""
    shape = _shape_arg(shape)
    if shape == input.array.shape:
        return _reshape(input, shape=shape)
    size = input.array.size
    known = 1
    infer = [i for i, s in enumerate(shape) if s == -1]
    for s in shape:
        if s != -1:
            known *= s
    if len(infer) > 1 or (infer and (known == 0 or size % known)) or (not infer and known != size):
        raise ShapeError(
            f"reshape: shape '{list(shape)}' is invalid for input of size {size} (shape {tuple(input.shape)})"
        )
    if infer:
        shape = tuple(size // known if s == -1 else s for s in shape)
    if not input.array.flags.c_contiguous and not _reshapes_in_place(input.array, shape):
        return _reshape_copy(input, shape=shape)  # as torch: no view has the shape, a copy (not a view)
    return _reshape(input, shape=shape)


def _reshapes_in_place(a, shape):
    """Whether array `a` has a view of `shape` (else reshape copies, and the result must not share
    `a`'s version counter: writes into it do not reach `a`)."""
    try:
        a.reshape(shape, copy=False)
    except ValueError:
        return False
    except TypeError:  # cupy's reshape takes no copy argument
        return a.reshape(shape).base is not None
    return True


def view(input, *shape):
    """reshape whose result shares input's memory, as torch's: a write into either shows in the other. Where
    input's strides allow no such view (a transpose flattened, say), torch refuses rather than copy silently,
    and so does this."""
    out = reshape(input, *shape)
    if out.array.size and not namespace(input.array).may_share_memory(out.array, input.array):
        raise ShapeError(
            f"view: shape {list(_shape_arg(shape))} is not compatible with the strides of the input (shape "
            f"{tuple(input.shape)}, not contiguous): no view can hold it; use .reshape(...), which copies"
        )
    return out


def flatten(input, start_dim=0, end_dim=-1):
    s = _dim(start_dim, builtins.max(input.ndim, 1), "flatten")  # a 0-d tensor takes dims 0 and -1, as torch
    e = _dim(end_dim, builtins.max(input.ndim, 1), "flatten")
    if input.ndim == 0:
        return reshape(input, (1,))
    if s > e:
        raise ShapeError(f"flatten() has invalid args: start_dim {start_dim} cannot come after end_dim {end_dim}")
    if s == e:  # torch returns the tensor itself here (unlike reshape to the same shape)
        return input
    shape = input.array.shape
    n = 1
    for d in shape[s : e + 1]:
        n *= d
    return reshape(input, shape[:s] + (n,) + shape[e + 1 :])


def unflatten(input, dim, sizes):
    d = _dim(dim, input.ndim, "unflatten")
    sizes = tuple(sizes)
    if -1 in sizes:
        known = int(np.prod([s for s in sizes if s != -1]))
        sizes = tuple(input.shape[d] // known if s == -1 else s for s in sizes)
    if int(np.prod(sizes)) != input.shape[d]:
        raise ShapeError(f"unflatten: sizes {sizes} don't multiply up to the size of dim {dim} ({input.shape[d]})")
    return reshape(input, input.shape[:d] + sizes + input.shape[d + 1 :])


def squeeze(input, dim=None):
    dims = range(input.ndim) if dim is None else normalize_dims(dim, input.ndim, "squeeze")
    out = reshape(input, tuple(s for i, s in enumerate(input.shape) if not (i in dims and s == 1)))
    return named(out, "SqueezeBackward" + ("0" if dim is None else "2" if isinstance(dim, tuple | list) else "1"))


def unsqueeze(input, dim):
    n = input.ndim + 1
    if not -n <= dim < n:
        raise ShapeError(
            f"unsqueeze: Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})"
        )
    d = dim % n
    return named(reshape(input, input.array.shape[:d] + (1,) + input.array.shape[d:]), "UnsqueezeBackward0")


# ---- permutations -----------------------------------------------------------------------------------
@defop("permute", kind=VIEW, save=(), view=True)
def _permute(xp, x, dims):
    return x.transpose(dims)


_permute.grad(lambda ctx, g: permute(g, tuple(np.argsort(ctx.attrs["dims"]).tolist())))
_permute.array_grad(lambda ctx, g: g.transpose(tuple(np.argsort(ctx.attrs["dims"]).tolist())))


def permute(input, *dims):
    dims = _shape_arg(dims)
    if len(dims) != input.ndim:
        raise ShapeError(
            f"permute(sparse_coo): number of dimensions in the tensor input does not match the length of the "
            f"desired ordering of dimensions i.e. input.dim() = {input.ndim} is not equal to len(dims) = {len(dims)}"
        )
    dims = tuple(d % input.ndim for d in dims) if input.ndim else ()
    if sorted(dims) != list(range(input.ndim)):
        raise ShapeError(f"permute: dims {dims} are not a permutation of {input.ndim} dims")
    return _permute(input, dims=dims)


def transpose(input, dim0, dim1):
    if input.ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
        return _reshape(input, shape=input.shape)  # a new view, as torch's
    a, b = _dim(dim0, input.ndim, "transpose"), _dim(dim1, input.ndim, "transpose")
    order = list(range(input.ndim))
    order[a], order[b] = order[b], order[a]
    return named(permute(input, tuple(order)), "TransposeBackward0")


swapaxes = swapdims = transpose


def t(input):
    if input.ndim > 2:
        raise ShapeError(f"t() expects a tensor with <= 2 dimensions, but self is {input.ndim}D")
    return named(transpose(input, 0, 1) if input.ndim == 2 else _reshape(input, shape=input.shape), "TBackward0")


def movedim(input, source, destination):
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    n = input.ndim
    src = [_dim(s, n, "movedim") for s in src]  # checked: `s % n` wrapped any dim (and divided by 0 on 0-d)
    dst = [_dim(d, n, "movedim") for d in dst]
    if len(src) != len(dst):  # (zip would drop the extra dims, and permute's error name none of these)
        raise ShapeError(f"movedim: source {src} and destination {dst} should contain the same number of dims")
    for what, dims in (("source", src), ("destination", dst)):
        if len(set(dims)) != len(dims):
            raise ShapeError(f"movedim: repeated dim in `{what}` ({dims})")
    if not n:
        return _reshape(input, shape=())
    order = [i for i in range(n) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return permute(input, tuple(order))


# ---- expand / repeat ----------------------------------------------------------------------------------
@defop("expand", kind=VIEW, save=(), view=True)
def _expand(xp, x, shape):
    if x.shape == shape:  # nothing broadcast: a plain view, writable as torch's
        return x.view()
    # writable, as torch's (not np.broadcast_to's): in-place ops check it (views.refuse_internal_overlap)
    if xp is np and x.flags.c_contiguous and x.size:
        # the zero-stride view built directly: np.broadcast_to's generic checks cost several times more
        return np.ndarray(shape, x.dtype, x, 0, _broadcast_strides(x.shape, x.itemsize, shape))
    if xp is np:
        lead = len(shape) - x.ndim
        strides = (0,) * lead + tuple(0 if n == 1 else s for n, s in zip(x.shape, x.strides))
        return np.lib.stride_tricks.as_strided(x, shape, strides)
    return xp.broadcast_to(x, shape)


@functools.lru_cache(maxsize=1024)
def _broadcast_strides(have, itemsize, shape):
    """Strides of a C-contiguous array of shape `have` viewed as `shape`: 0 on every broadcast dim."""
    strides, step = [0] * len(shape), itemsize
    for i in range(1, len(have) + 1):
        if have[-i] != 1:
            strides[-i] = step
        step *= have[-i]
    return tuple(strides)


@_expand.grad
def _(ctx, g):
    from distgraph.ops.reduction import sum_to

    return sum_to(g, ctx.inputs[0].shape)


_expand.array_grad(lambda ctx, g: sum_to_array(g, ctx.inputs[0].array.shape))


def expand(input, *sizes):
    if len(sizes) == 1 and isinstance(sizes[0], tuple | list):
        sizes = tuple(sizes[0])
    have = input.array.shape
    try:
        shape = _expanded_shape(have, sizes)
    except TypeError:  # an unhashable size (a list inside, a 0-d array): checked without the cache
        shape = _expanded_shape.__wrapped__(have, sizes)
    return apply(_expand, (input,), {"shape": shape})


@functools.lru_cache(maxsize=1024)
def _expanded_shape(have, sizes):
    """The target shape of expanding `have` to `sizes` (-1 keeps a dim), checked as torch checks it;
    cached, as a training loop expands the same shapes every step."""
    sizes = _shape_arg(sizes)
    lead = len(sizes) - len(have)
    if lead < 0:
        raise ShapeError(
            f"expand: the number of sizes provided ({len(sizes)}) must be >= the number of dims ({len(have)})"
        )
    shape = tuple([have[i - lead] if s == -1 else s for i, s in enumerate(sizes)]) if -1 in sizes else sizes
    for i, s in enumerate(have):
        if s != 1 and s != shape[i + lead]:
            raise ShapeError(
                f"expand: the expanded size of the tensor ({shape[i + lead]}) must match the existing size ({s}) "
                f"at non-singleton dimension {i + lead}. Target sizes: {list(sizes)}. Tensor sizes: {list(have)}"
            )
    return shape


def expand_as(input, other):
    return expand(input, other.shape)


def broadcast_to(input, shape):
    return expand(input, shape)


def broadcast_tensors(*tensors):
    shape = np.broadcast_shapes(*[t.shape for t in tensors])
    return tuple(t if t.shape == shape else expand(t, shape) for t in tensors)  # torch keeps such a t itself


@defop("repeat", kind="other", save=())
def _repeat(xp, x, repeats):
    return xp.tile(x, repeats)


@_repeat.grad
def _(ctx, g):
    x = ctx.inputs[0]
    reps = ctx.attrs["repeats"]
    lead = len(reps) - x.ndim
    shape = (1,) * lead + x.shape
    split = []
    for r, s in zip(reps, shape):
        split += [r, s]
    from distgraph.ops.reduction import sum

    g = reshape(g, tuple(split))
    g = sum(g, dim=tuple(range(0, 2 * len(reps), 2)))
    return reshape(g, x.shape)


def repeat(input, *repeats):
    repeats = _shape_arg(repeats)
    if len(repeats) < input.ndim:
        raise ShapeError(
            f"repeat: Number of dimensions of repeat dims ({len(repeats)}) can not be smaller than number of dimensions of tensor ({input.ndim})"
        )
    return _repeat(input, repeats=repeats)


def tile(input, dims):
    dims = tuple(dims)
    if len(dims) < input.ndim:
        dims = (1,) * (input.ndim - len(dims)) + dims
    return repeat(input, dims)


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """torch.repeat_interleave; given only a 1-d integer tensor of counts, each index i counts[i] times."""
    from distgraph.ops.counting import repeated_index
    from distgraph.ops.indexing import index_select

    if repeats is None:
        return repeated_index(input, len(input), output_size, input)
    if dim is None:
        input, dim = flatten(input), 0
    d = _dim(dim, input.ndim, "repeat_interleave", whole=True)
    return index_select(input, d, repeated_index(repeats, input.shape[d], output_size, input))


# ---- cat / stack / split --------------------------------------------------------------------------------
@defop("cat", kind="other", save=())
def _cat(xp, *xs, axis):
    return xp.concatenate([x for x in xs if not _legacy_empty(x)] or xs[:1], axis=axis)


def _legacy_empty(x):
    """A 1-D tensor of size 0, which torch's cat skips whatever the others' shapes (its dtype counts)."""
    return x.ndim == 1 and x.shape[0] == 0


@_cat.grad
def _(ctx, g):
    axis = ctx.attrs["axis"]
    grads, start = [], 0
    for x in ctx.inputs:
        if _legacy_empty(x):
            grads.append(Tensor(g.device.xp.zeros((0,), g.array.dtype), device=g.device))
            continue
        n = x.shape[axis]
        grads.append(narrow(g, axis, start, n))
        start += n
    return tuple(grads)


@_cat.array_grad
def _(ctx, g):
    axis, index = ctx.attrs["axis"], [slice(None)] * g.ndim
    grads, start = [], 0
    for x in ctx.inputs:
        if _legacy_empty(x.array):
            grads.append(x.device.xp.zeros((0,), g.dtype))
            continue
        index[axis] = slice(start, start + x.array.shape[axis])
        grads.append(g[tuple(index)])
        start += x.array.shape[axis]
    return tuple(grads)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ShapeError("cat(): expected a non-empty list of Tensors")
    mixed = builtins.any(t.array.dtype != tensors[0].array.dtype for t in tensors)
    dt = dtypes.result_np_dtype(tensors) if mixed else None
    ref = next((t for t in tensors if not _legacy_empty(t)), None)  # all of shape (0,): torch takes any dim
    d = _dim(dim, ref.ndim, "cat") if ref is not None else 0
    for i, t in enumerate(tensors):
        if _legacy_empty(t):
            continue
        if t.ndim != ref.ndim or builtins.any(a != b for j, (a, b) in enumerate(zip(t.shape, ref.shape)) if j != d):
            raise ShapeError(
                f"cat: Sizes of tensors must match except in dimension {d}. Expected {tuple(ref.shape)} "
                f"but got {tuple(t.shape)} for tensor number {i} in the list."
            )
    if dt is not None:
        tensors = [t if t.array.dtype == dt else ew.cast(t, dt) for t in tensors]
    return _cat(*tensors, axis=d)


concat = concatenate = cat


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ShapeError("stack expects a non-empty TensorList")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ShapeError(
                f"stack expects each tensor to be equal size, but got {tuple(tensors[0].shape)} at entry 0 "
                f"and {tuple(t.shape)} at entry {i}"
            )
    return named(cat([unsqueeze(t, dim) for t in tensors], dim), "StackBackward0")


def hstack(tensors):
    tensors = [t if t.ndim else reshape(t, 1) for t in tensors]  # torch.atleast_1d first
    return cat(tensors, 0 if tensors[0].ndim == 1 else 1)


def vstack(tensors):
    return cat([t if t.ndim > 1 else reshape(t, 1, -1) for t in tensors], 0)  # torch.atleast_2d first


@defop("slice", kind=VIEW, save=(), view=True)
def _slice(xp, x, axis, start, stop):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


@_slice.grad
def _(ctx, g):
    x = ctx.inputs[0]
    axis, start, stop = ctx.attrs["axis"], ctx.attrs["start"], ctx.attrs["stop"]
    widths = [(0, 0)] * x.ndim
    widths[axis] = (start, x.shape[axis] - stop)
    from distgraph.ops.regions import pad_nd

    return pad_nd(g, tuple(widths))


@_slice.array_grad
def _(ctx, g):
    x = ctx.inputs[0]
    xp = x.device.xp
    out = xp.zeros(x.array.shape, g.dtype)
    _slice.forward(xp, out, **ctx.attrs)[...] = g  # the forward's view of `out` is where the slice sits
    return out


def narrow(input, dim, start, length):
    d = _dim(dim, input.ndim, "narrow", whole=True)
    if start < 0:
        start += input.shape[d]
    if not 0 <= start <= start + length <= input.array.shape[d]:
        raise ShapeError(f"narrow: start ({start}) + length ({length}) exceeds dimension size ({input.shape[d]})")
    return _slice(input, axis=d, start=start, stop=start + length)


def split(tensor, split_size_or_sections, dim=0):
    d = _dim(dim, tensor.ndim, "split", whole=True)
    n = tensor.array.shape[d]
    if single := is_single(split_size_or_sections):
        step = as_int(split_size_or_sections, "split", "split_size")
        if step <= 0 and n:
            raise ShapeError(f"split: split_size must be positive, got {step}")
        sizes = [builtins.min(step, n - i) for i in range(0, n, step)] if n else [0]
    else:
        sizes = list(as_ints(split_size_or_sections, "split", "split_sizes"))
        if builtins.sum(sizes) != n:
            raise ShapeError(
                f"split: split_with_sizes expects split_sizes to sum exactly to {n} (input shape {tuple(tensor.shape)} at dim {d}), but got split_sizes={sizes}"
            )
    out, start = [], 0
    for s in sizes:
        out.append(named(narrow(tensor, d, start, s), "SplitBackward0" if single else "SplitWithSizesBackward0"))
        start += s
    return mark_multi_output(tuple(out), "Split" if single else "SplitWithSizes")


def chunk(input, chunks, dim=0):
    d = _dim(dim, input.ndim, "chunk", whole=True)
    if (chunks := as_int(chunks, "chunk", "chunks")) <= 0:
        raise ShapeError(f"chunk expects `chunks` to be greater than 0, got: {chunks} (input {tuple(input.shape)})")
    n = input.array.shape[d]
    if not n:  # torch: an empty dim gives `chunks` empty pieces (split would give one)
        return split(input, [0] * chunks, d)
    return split(input, -(-n // chunks), d)


def unbind(input, dim=0):
    d = _dim(dim, input.ndim, "unbind", whole=True)
    if not input.shape[d]:  # none, as torch (split gives one empty piece there)
        return ()
    return mark_multi_output(tuple(named(squeeze(s, d), "UnbindBackward0") for s in split(input, 1, d)), "Unbind")
