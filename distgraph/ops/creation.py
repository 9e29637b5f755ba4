"""Tensor creation: dg.tensor, zeros/ones/full/arange/linspace/eye and random tensors.

dtype rules follow torch: Python floats give the default dtype (float32), Python ints int64, bools
bool; a numpy array keeps its dtype. Random numbers come from each device's generator, reseeded by
`manual_seed`, or from the dg.Generator passed as `generator=` (both in ops/rng.py).

A cuda tensor is made on its own GPU: cupy allocates on its current GPU, so each factory makes its array
inside `backend.on(device)` (after one `device.index is None` test, so cpu pays nothing more).
"""

import functools
import inspect
import math
import re

import numpy as np

from distgraph import dtypes
from distgraph.autograd import memory_format as memory_format_rules
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device as as_device
from distgraph.backend import device_of_array, from_dlpack_capsule, on, to_device
from distgraph.errors import DTypeError, InputRangeError, ShapeError
from distgraph.ops.rng import drawing_from, generator


def factory(fn):
    """`fn` (a creation function) taking torch's factory keywords besides its own: `layout` (torch.strided, the
    one layout distgraph's tensors have: another is refused), `pin_memory` (accepted with no effect: cupy copies
    a host array to the GPU the same way pinned or not) and `memory_format` (the result laid out so: channels_last
    is a real layout here, autograd/formats.py; preserve_format leaves it row-major, but for a *_like function,
    which takes memory_format itself: `_like`)."""

    signature = inspect.signature(fn)
    takes_format = "memory_format" in signature.parameters
    sized = any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values())  # zeros(*size)...

    @functools.wraps(fn)
    def call(*args, layout=None, pin_memory=False, memory_format=None, **kwargs):
        if layout is not None and layout != "strided":
            raise DTypeError(f"{fn.__name__}: layout {layout!r} is not supported: distgraph's tensors are strided only")
        if sized:
            args = size_keyword(args, kwargs)
        if takes_format:
            return fn(*args, memory_format=memory_format, **kwargs)
        if memory_format in (None, "contiguous_format", "preserve_format"):
            return fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)  # (laid out first, then made a leaf: no step of its graph)
        grad = bound.arguments.pop("requires_grad", False)
        out = fn(*bound.args, **bound.kwargs).contiguous(memory_format=memory_format)
        return out.requires_grad_() if grad else out

    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d)
             for n, d in (("layout", None), ("pin_memory", False), ("memory_format", None))
             if n not in signature.parameters]  # fmt: skip
    call.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    return call


def _infer_np_dtype(data):
    """torch's dtype inference for Python data: float -> default float, int -> int64, bool -> bool; a
    sequence holding numpy scalars: those and the Python numbers promoted together, as torch infers it
    (`[np.float64(0.1)]` is float64, `[np.int32(1)]` int32, `[1.0, np.float16(2)]` the default float)."""
    if isinstance(data, list | tuple):
        kinds = _scalar_types(data)
        if any(issubclass(t, np.generic) for t in kinds) and all(t in _PY_SCALARS or issubclass(t, np.number | np.bool_)
                                                                 for t in kinds):  # fmt: skip
            found = [
                dtypes.get_default_dtype() if t is float else dtypes.from_numpy(np.dtype(_PY_SCALARS.get(t) or t))
                for t in kinds
            ]
            promoted = found[0]
            for dt in found[1:]:
                promoted = dtypes.promote_types(promoted, dt)
            return promoted.np
    arr = _host_array(data)
    if arr.dtype.kind == "f" and not isinstance(data, np.ndarray | np.generic):
        return dtypes.get_default_dtype().np
    if arr.dtype.kind == "f" and isinstance(data, np.generic):
        return arr.dtype
    if arr.dtype.kind == "i" and not isinstance(data, np.ndarray | np.generic):
        return np.dtype(np.int64)
    if arr.dtype.kind in "OUS":
        raise DTypeError(f"tensor(): could not infer a numeric dtype from {type(data).__name__} data")
    return arr.dtype


_PY_SCALARS = {bool: np.bool_, int: np.int64, float: None}  # None: the default float dtype, read at the call


def _scalar_types(data):
    """The types of the scalars in a nested list/tuple (one pass of C-level `map(type, ...)` per level)."""
    found, stack = set(), [data]
    while stack:
        seq = stack.pop()
        for t in set(map(type, seq)):
            if t is list or t is tuple:
                stack.extend(x for x in seq if type(x) is t)
            else:
                found.add(t)
    return found


def _host_array(data, dtype=None):
    """np.asarray, with a ragged nested list said as torch says it rather than numpy's inhomogeneous-shape error."""
    try:
        return np.asarray(data, dtype=dtype)
    except ValueError as e:
        found = re.search(r"inhomogeneous shape after (\d+) dimension", str(e))
        if found:
            raise ShapeError(
                f"tensor(): the nested sequences differ in length at dimension {found.group(1)}; a tensor must be "
                "rectangular (pad the shorter ones)"
            ) from None
        raise


def _to_array(data, dtype, device):
    dev = as_device(device) if device is not None else None
    if isinstance(data, Tensor):
        arr = data.array
        dev = dev or data.device
    elif isinstance(data, list | tuple) and data and any(isinstance(d, Tensor) for d in data):
        arr = np.asarray([np.asarray(d) for d in data])
    elif type(data).__module__.startswith("cupy"):
        arr = data
        dev = dev or device_of_array(data)
    else:
        if dtype is None:
            np_dtype = _infer_np_dtype(data)
        else:
            np_dtype = dtypes.from_any(dtype).np
        arr = _host_array(data, np_dtype)
    dev = dev or as_device(None)
    if dtype is not None and isinstance(arr, np.ndarray):
        arr = arr.astype(dtypes.from_any(dtype).np, copy=False)
    elif dtype is not None:
        with on(device_of_array(arr)):  # (a cupy array's cast: on its own GPU)
            arr = arr.astype(dtypes.from_any(dtype).np, copy=False)
    return to_device(arr, dev), dev


@factory
def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of `data` (list, scalar, numpy/cupy array or Tensor)."""
    arr, dev = _to_array(data, dtype, device)
    if isinstance(data, Tensor) or isinstance(data, np.ndarray):
        if dev.index is None:
            arr = arr.copy()
        else:
            with on(dev):
                arr = arr.copy()
    return Tensor(arr, requires_grad=requires_grad, device=dev)


def as_tensor(data, dtype=None, device=None):
    """Like `tensor` but shares memory with a numpy/cupy array when dtype and device allow."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    arr, dev = _to_array(data, dtype, device)
    return Tensor(arr, device=dev)


def from_numpy(ndarray):
    """A tensor sharing memory with `ndarray` (as torch.from_numpy)."""
    if not isinstance(ndarray, np.ndarray):
        raise DTypeError(f"from_numpy expects a numpy.ndarray, got {type(ndarray).__name__}")
    dtypes.from_numpy(ndarray.dtype)
    return Tensor(ndarray)


def from_dlpack(ext):
    """A tensor from any DLPack producer (torch, cupy, jax, ...) or a DLPack capsule (what to_dlpack returns),
    zero-copy: host memory as a cpu tensor, CUDA memory as a cuda one."""
    if type(ext).__name__ == "PyCapsule":
        return Tensor(from_dlpack_capsule(ext))
    if hasattr(ext, "__dlpack_device__") and ext.__dlpack_device__()[0] == 2:  # kDLCUDA
        cp = as_device("cuda").xp
        return Tensor(cp.from_dlpack(ext))
    return Tensor(np.from_dlpack(ext))


def size_keyword(args, kwargs):
    """`args` with torch's `size=` keyword of the *size factories (zeros(size=(2, 3)), x.new_ones(size=(2,)))
    popped from `kwargs` and put last, where the size goes positionally."""
    return (*args, kwargs.pop("size")) if "size" in kwargs else args


def _shape(size):
    shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], list | tuple) else tuple(size)
    if any(d < 0 for d in shape if isinstance(d, int)):
        raise ShapeError(f"Trying to create tensor with negative dimension: {list(shape)}")
    return shape


def _fill(fill, size, dtype, device, requires_grad, default=None):
    dev = as_device(device)
    dt = dtypes.from_any(dtype) if dtype is not None else (default or dtypes.get_default_dtype())
    if dev.index is None:
        arr = np.full(_shape(size), fill, dtype=dt.np)
    else:
        with on(dev):
            arr = dev.xp.full(_shape(size), fill, dtype=dt.np)
    return Tensor(arr, requires_grad=requires_grad, device=dev)


@factory
def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _fill(0, size, dtype, device, requires_grad)


@factory
def ones(*size, dtype=None, device=None, requires_grad=False):
    return _fill(1, size, dtype, device, requires_grad)


@factory
def empty(*size, dtype=None, device=None, requires_grad=False):
    return _fill(0, size, dtype, device, requires_grad)


@factory
def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if isinstance(fill_value, Tensor):  # a 0-d tensor counts as its Python number (torch: int8 fills int64)
        if fill_value.ndim:
            raise TypeError(
                f"full(): argument 'fill_value' (position 2) must be Number, not a {fill_value.ndim}-d Tensor"
            )
        fill_value = fill_value.item()
    default = None
    if dtype is None:
        default = (  # a numpy int counts as a Python int (torch's full((2,), np.int32(1)) is int64)
            dtypes.bool_
            if isinstance(fill_value, bool)
            else dtypes.int64
            if isinstance(fill_value, int | np.integer)
            else None
        )
    return _fill(fill_value, (tuple(size),), dtype, device, requires_grad, default)


def _like(input, out, requires_grad, memory_format):
    """`out` (new, of input's shape) laid out as torch's *_like: preserve_format (the default) keeps a dense
    input's strides (a transpose's result is transposed), else dense strides in the input's dim order;
    contiguous_format row-major; channels_last(_3d) so. Made a leaf after: no step of its graph."""
    if memory_format in (None, "preserve_format"):
        arr = memory_format_rules.like(out.device.xp, out.array, input.array)
        out = out if arr is out.array else Tensor(arr, device=out.device)
    elif memory_format != "contiguous_format":
        out = out.contiguous(memory_format=memory_format)
    return out.requires_grad_() if requires_grad else out


@factory
def zeros_like(input, dtype=None, device=None, requires_grad=False, *, memory_format=None):
    return full_like(input, 0, dtype, device, requires_grad, memory_format=memory_format)


@factory
def ones_like(input, dtype=None, device=None, requires_grad=False, *, memory_format=None):
    return full_like(input, 1, dtype, device, requires_grad, memory_format=memory_format)


@factory
def empty_like(input, dtype=None, device=None, requires_grad=False, *, memory_format=None):
    return full_like(input, 0, dtype, device, requires_grad, memory_format=memory_format)


@factory
def full_like(input, fill_value, dtype=None, device=None, requires_grad=False, *, memory_format=None):
    out = _fill(fill_value, input.shape, dtype or input.dtype, device or input.device, False)
    return _like(input, out, requires_grad, memory_format)


@factory
def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """torch.arange: [start, end) by step, as ATen computes it: the values start + i·step in int64 or float64
    (an integer dtype truncates the bounds and step first), their count ceil((end - start) / step) (for int64
    in integers, from the truncated bounds; for the other integer dtypes from the bounds as given)."""
    if end is None:
        start, end = 0, start
    dev = as_device(device)
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, end, step))
        dt = dtypes.get_default_dtype() if is_float else dtypes.int64
    else:
        dt = dtypes.from_any(dtype)
    if not all(math.isfinite(v) for v in (start, end, step)):
        raise InputRangeError(f"arange: unsupported range: {start} -> {end} (step {step})")
    integral = dt.np.kind in "iub"
    a, b, s = (int(v) if integral else float(v) for v in (start, end, step))  # the values' terms
    # the checks and the count: int64's in those integers, every other dtype's in float64 from the bounds given
    ca, cb, cs = (a, b, s) if dt is dtypes.int64 else (float(start), float(end), float(step))
    if cs == 0:
        raise InputRangeError("arange: step must be nonzero")
    if (cs > 0 and cb < ca) or (cs < 0 and cb > ca):
        raise InputRangeError(
            f"arange: upper bound and lower bound inconsistent with step sign (start {start}, end {end}, step {step})"
        )
    n = (cb - ca + cs - (1 if cs > 0 else -1)) // cs if dt is dtypes.int64 else math.ceil((cb - ca) / cs)
    with on(dev):
        i = dev.xp.arange(n, dtype=np.int64 if integral else np.float64)
        return Tensor((a + i * s).astype(dt.np), requires_grad=requires_grad, device=dev)


@factory
def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    if steps < 0:
        raise InputRangeError(f"linspace: number of steps must be non-negative, got {steps}")
    dev = as_device(device)
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.get_default_dtype()
    with on(dev):
        return Tensor(dev.xp.linspace(start, end, steps).astype(dt.np), requires_grad=requires_grad, device=dev)


@factory
def logspace(start, end, steps, base=10.0, dtype=None, device=None):
    dev = as_device(device)
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.get_default_dtype()
    with on(dev):
        return Tensor(dev.xp.logspace(start, end, steps, base=base).astype(dt.np), device=dev)


@factory
def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    for name, v in (("n", n), ("m", m)):
        if v is not None and v < 0:
            raise InputRangeError(f"eye: {name} must be greater or equal to 0, got {v}")
    dev = as_device(device)
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.get_default_dtype()
    with on(dev):
        return Tensor(dev.xp.eye(n, m, dtype=dt.np), requires_grad=requires_grad, device=dev)


def _drawn(op, gen, dev, draw):
    """`draw(g)` on dev with g the numpy/cupy generator `gen` (a dg.Generator) reads, or for None dev's default."""
    with drawing_from(gen, dev, op):
        if dev.index is None:
            return draw(generator(dev))
        with on(dev):
            return draw(generator(dev))


def _random(kind, size, dtype, device, requires_grad, gen, op=None, **kw):
    dev = as_device(device)
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.get_default_dtype()
    if kind != "randint" and not dt.is_floating_point:  # (numpy's cast would give zeros)
        raise DTypeError(f"{op or kind}: draws floating point numbers, not {dt.name} (pass a float dtype)")
    arr = _drawn(kind, gen, dev, lambda g: _draw(kind, g, _shape(size), dt.np, kw))
    return Tensor(arr, requires_grad=requires_grad, device=dev)


def _draw(kind, gen, shape, dtype, kw):
    if kind == "rand":
        return gen.random(shape, dtype=np.float64).astype(dtype)
    if kind == "randn":
        return gen.standard_normal(shape, dtype=np.float64).astype(dtype)
    return gen.integers(kw["low"], kw["high"], size=shape).astype(dtype)


@factory
def rand(*size, generator=None, dtype=None, device=None, requires_grad=False):
    return _random("rand", size, dtype, device, requires_grad, generator)


@factory
def randn(*size, generator=None, dtype=None, device=None, requires_grad=False):
    return _random("randn", size, dtype, device, requires_grad, generator)


@factory
def randint(low, high=None, size=None, *, generator=None, dtype=None, device=None):
    """torch.randint(high, size) or randint(low, high, size): integers uniform in [low, high), int64 unless told."""
    if size is None and isinstance(high, list | tuple):  # the (high, size) form
        high, size = None, high
    if high is None:
        low, high = 0, low
    if size is None:
        raise DTypeError("randint: missing size, a tuple (randint(high, size) or randint(low, high, size))")
    if low >= high:
        raise InputRangeError(f"randint expects 'low' to be less than 'high', but got low={low} >= high={high}")
    return _random("randint", (tuple(size),), dtype or dtypes.int64, device, False, generator, low=low, high=high)


@factory
def rand_like(input, dtype=None, *, generator=None, device=None, requires_grad=False, memory_format=None):
    out = _random("rand", (input.shape,), dtype or input.dtype, device or input.device, False, generator, "rand_like")
    return _like(input, out, requires_grad, memory_format)


@factory
def randn_like(input, dtype=None, *, generator=None, device=None, requires_grad=False, memory_format=None):
    out = _random("randn", (input.shape,), dtype or input.dtype, device or input.device, False, generator, "randn_like")
    return _like(input, out, requires_grad, memory_format)


@factory
def randperm(n, *, generator=None, dtype=None, device=None):
    if n < 0:
        raise ShapeError(f"randperm: Trying to create tensor with negative dimension {n}: [{n}] (n must be >= 0)")
    dev = as_device(device)
    perm = _drawn("randperm", generator, dev, lambda g: g.permutation(n))
    with on(dev):
        return Tensor(perm.astype((dtypes.from_any(dtype) or dtypes.int64).np), device=dev)


def bernoulli(input, p=None, *, generator=None):
    """torch.bernoulli: 1 with probability `input` (each element in [0, 1]), or with probability `p`."""
    if p is None and input.array.dtype.kind != "f":  # torch: no kernel reads probabilities of another dtype
        raise DTypeError(f"bernoulli: not implemented for {input.dtype.name} probabilities (as torch)")
    if p is not None and not 0 <= p <= 1:
        raise InputRangeError(f"bernoulli expects p to be in [0, 1], but got p={p}")
    probs = input.array if p is None else p
    if p is None and not bool(((probs >= 0) & (probs <= 1)).all()):  # (nan fails both)
        raise InputRangeError(
            f"bernoulli: expected every probability in [0, 1] (as torch's p_in >= 0 && p_in <= 1), got one outside "
            f"it or nan in the tensor of shape {tuple(input.shape)}"
        )
    drawn = _drawn("bernoulli", generator, input.device, lambda g: g.random(input.shape))
    with on(input.device):
        return Tensor((drawn < probs).astype(input.array.dtype), device=input.device)


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """torch.multinomial: per row of `input` (1-d or 2-d, non-negative weights, not all zero), num_samples
    category indices drawn with probability proportional to the weights. Drawn on the host, where the
    weights are read (cupy has no `choice`), so a `generator` is a cpu one."""
    if input.array.dtype.kind != "f":
        raise DTypeError(f"multinomial only supports floating-point dtypes for input, got: {input.dtype.name}")
    if input.ndim not in (1, 2):
        raise ShapeError(f"multinomial: prob_dist must be 1 or 2 dim, got {input.ndim} dims")
    n = input.shape[-1]
    if num_samples <= 0 or (not replacement and num_samples > n):
        raise InputRangeError(
            f"multinomial: cannot sample num_samples={num_samples} from {n} categories "
            f"{'with' if replacement else 'without'} replacement (num_samples must be >= 1"
            f"{'' if replacement else ' and <= the categories'})"
        )
    rows = np.asarray(input.__array__(), dtype=np.float64).reshape(-1, n)
    if not np.isfinite(rows).all() or (rows < 0).any():
        raise InputRangeError("multinomial: probability tensor contains either `inf`, `nan` or element < 0")
    if (rows.sum(-1) <= 0).any():
        raise InputRangeError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
    out = _drawn("multinomial", generator, as_device("cpu"),
                 lambda g: np.stack([_categories(g, row, num_samples, replacement) for row in rows]))  # fmt: skip
    out = out.reshape(tuple(input.shape[:-1]) + (num_samples,)).astype(np.int64)
    return Tensor(to_device(out, input.device), device=input.device)


def _categories(gen, row, k, replacement):
    """k categories drawn by the weights of `row`. Without replacement, once every category of nonzero weight
    is drawn the zero-weight ones follow, as torch's do (here in index order; torch's order among them is its
    topk's tie order)."""
    p = row / row.sum()
    if replacement:
        return gen.choice(len(row), k, p=p)
    drawn = gen.choice(len(row), min(k, int(np.count_nonzero(row))), replace=False, p=p)
    return np.concatenate([drawn, np.flatnonzero(row == 0)[: k - len(drawn)]])
