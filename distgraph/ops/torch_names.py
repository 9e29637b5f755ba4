"""torch's top-level names that are another op under another spelling, or process-wide switches.

- The `*_copy` functions (view_copy, t_copy, permute_copy, ...): torch's functionalization gives each view op
  a form that returns a fresh tensor instead of a view. They are made here by one rule, `_copy_of(view)`:
  the view op, then `clone` — differentiable through both, so the gradient is the view's.
- unsafe_chunk / unsafe_split / split_with_sizes: torch's versions of chunk / split that skip a view
  check distgraph does not make; the same ops.
- Switches distgraph has no kernel choice for (deterministic algorithms and their debug mode, float32 matmul
  precision, inter-op threads, warn-always) are kept and read back as torch's are, with torch's checks, and change nothing else:
  every distgraph kernel is deterministic and computes float32 matmuls in float32.
- is_anomaly_enabled / set_anomaly_enabled are `autograd.detect_anomaly`'s switch.
- igamma / igammac are special.gammainc / gammaincc; constant_pad_nd is F.pad's constant mode; fill is fill_'s
  out-of-place form (views.overwrite: zero gradient to the input, the sum to a tensor value).
- resolve_neg / resolve_conj return their input: distgraph has no lazy negation or conjugation bits to resolve.
- get_default_device / set_default_device are backend's (the device factories create on when given none).
- Size is torch.Size (autograd/size.py says why `.size()` returns one and `.shape` a plain tuple).
"""

import builtins
import math

from distgraph import dtypes
from distgraph.autograd import grad_mode
from distgraph.autograd.printing import set_printoptions
from distgraph.autograd.size import Size
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device as _as_device
from distgraph.backend import get_default_device, set_default_device
from distgraph.errors import ConfigError, InputRangeError, ShapeError
from distgraph.ops import regions, views
from distgraph.ops import shape as _shape
from distgraph.ops.creation import as_tensor, tensor
from distgraph.ops.histogram import histogram, histogramdd
from distgraph.ops.indexing import nonzero
from distgraph.ops.linalg_norms import vector_norm
from distgraph.ops.math_names import clone
from distgraph.ops.numeric_gradient import gradient
from distgraph.ops.promotion import cast
from distgraph.ops.same_dtype import scalar_name
from distgraph.ops.special_fns import gammainc as igamma
from distgraph.ops.special_fns import gammaincc as igammac
from distgraph.ops.strided import as_strided, empty_strided
from distgraph.ops.torch_names_more import *  # noqa: F403  (range, cond, while_loop, ...: its __all__)
from distgraph.ops.torch_names_more import __all__ as _MORE

_STATE = {"deterministic": False, "warn_only": False, "matmul_precision": "highest", "interop_threads": None,
          "warn_always": False}  # fmt: skip
_DEBUG_MODES = ("default", "warn", "error")


def _copy_of(view, name):
    def copy(input, *args, **kwargs):
        out = view(input, *args, **kwargs)
        return type(out)(clone(t) for t in out) if isinstance(out, tuple | list) else clone(out)

    copy.__name__ = copy.__qualname__ = name
    copy.__doc__ = f"torch.{name}: `{name[:-5]}` as a new tensor, not a view (gradient as the view's)."
    return copy


def _method(name):
    return lambda input, *args, **kwargs: getattr(input, name)(*args, **kwargs)


_VIEWS = ("view", "t", "permute", "expand", "transpose", "squeeze", "unsqueeze", "diagonal", "select", "unbind",
          "split", "split_with_sizes", "unfold", "detach", "alias", "narrow", "slice")  # fmt: skip


def _view_op(name):
    if name == "alias":
        return lambda input: input[...]
    if name == "split_with_sizes":
        return lambda input, split_sizes, dim=0: _shape.split(input, list(split_sizes), dim)
    if name == "slice":  # aten's slice(input, dim, start, end, step)
        return lambda input, dim=0, start=None, end=None, step=1: input[
            (builtins.slice(None),) * (dim % input.ndim) + (builtins.slice(start, end, step),)
        ]
    return _method(name)


COPIES = {f"{name}_copy": _copy_of(_view_op(name), f"{name}_copy") for name in _VIEWS}
globals().update(COPIES)
pi = math.pi
e = math.e
inf = math.inf
nan = math.nan
newaxis = None


def unsafe_chunk(input, chunks, dim=0):
    return _shape.chunk(input, chunks, dim)


def unsafe_split(tensor, split_size_or_sections, dim=0):
    return _shape.split(tensor, split_size_or_sections, dim)


def split_with_sizes(input, split_sizes, dim=0):
    return _shape.split(input, list(split_sizes), dim)


# ---- predicates and small constructors ----------------------------------------------------------------------
def is_tensor(obj):
    return isinstance(obj, Tensor)


def is_storage(obj):
    """distgraph has no storage objects (a tensor owns a numpy/cupy array): always False."""
    return False


def typename(obj):
    """torch.typename: 'torch.DoubleTensor'-style names for tensors (of the CPU or CUDA namespace), else the
    object's qualified type name."""
    if isinstance(obj, Tensor):
        return f"torch.{'cuda.' if obj.device.type == 'cuda' else ''}{scalar_name(obj.dtype.name)}Tensor"
    module = getattr(type(obj), "__module__", "")
    name = type(obj).__qualname__
    return name if module in ("builtins", "") else f"{module}.{name}"


def scalar_tensor(s, dtype=None, device=None, requires_grad=False):
    """A 0-d tensor holding the number `s`, of the default dtype unless `dtype` is given (torch's rule: even an
    int or bool makes a floating tensor)."""
    from distgraph.dtypes import get_default_dtype

    return tensor(s, dtype=dtype or get_default_dtype(), device=device, requires_grad=requires_grad)


def asarray(obj, *, dtype=None, device=None, copy=None, requires_grad=False):
    """torch.asarray: shares memory with `obj` (a Tensor or a numpy/cupy array) when dtype and device allow and
    copy is not True; copy=False refuses a conversion that must copy; copy=True always copies."""
    if copy:
        out = tensor(obj, dtype=dtype, device=device)
    else:
        out = as_tensor(obj, dtype=dtype, device=device)
        source = obj.array if isinstance(obj, Tensor) else obj
        if copy is False and hasattr(source, "shape") and out.array is not source and out.array.base is not source:
            raise ConfigError(
                f"asarray: copy=False, but the conversion to dtype={out.dtype}, device={out.device} needs a copy"
            )
    if requires_grad and not out.requires_grad:
        out.requires_grad_(True)
    return out


def frombuffer(buffer, *, dtype, count=-1, offset=0, requires_grad=False):
    """A 1-d tensor sharing memory with a Python buffer (bytes are read only: torch warns, numpy refuses writes)."""
    import numpy as np

    from distgraph.dtypes import from_any

    arr = np.frombuffer(buffer, dtype=from_any(dtype).np, count=count, offset=offset)
    out = as_tensor(arr)
    return out.requires_grad_(True) if requires_grad else out


# ---- functional forms of Tensor methods and small ops ------------------------------------------------------
def fill(input, value):
    """torch.fill: a new tensor of `input`'s shape and dtype holding `value` (a number or a 0-dim tensor)."""
    if isinstance(value, Tensor) and value.ndim:
        raise ShapeError(f"fill only supports 0-dimension value tensor but got tensor with {value.ndim} dimensions.")
    out = views.overwrite(input, value)
    return out if out.array.dtype == input.array.dtype else cast(out, input.dtype)


def resolve_neg(input):
    return input


def resolve_conj(input):
    return input


def constant_pad_nd(input, pad, value=0):
    """torch.constant_pad_nd: pad (last dim first, a (before, after) pair per dim; negative crops) with `value`."""
    if len(pad) % 2:
        raise ShapeError(f"constant_pad_nd: Length of pad must be even but instead it equals {len(pad)}")
    return regions.pad(input, list(pad), "constant", value)


def nonzero_static(input, *, size, fill_value=-1):
    """torch.nonzero_static: nonzero's (n, ndim) indices cut or padded with `fill_value` rows to `size` rows, so
    the result's shape does not depend on the values."""
    if isinstance(size, builtins.bool) or not isinstance(size, builtins.int):
        raise TypeError(f"nonzero_static(): argument 'size' must be int, not {type(size).__name__}")
    if size < 0:
        raise InputRangeError("nonzero_static: 'size' must be an non-negative integer")
    found = nonzero(input).array[:size]
    xp = input.device.xp
    rows = xp.full((size, found.shape[1]), fill_value, dtype=found.dtype)
    rows[: found.shape[0]] = found
    return Tensor(rows, device=input.device)


def empty_permuted(size, physical_layout, *, dtype=None, layout=None, device=None, pin_memory=False,
                   requires_grad=False):  # fmt: skip
    """torch.empty_permuted: an uninitialized tensor of `size` whose memory holds its dims in the order
    `physical_layout` (so `empty_permuted((N, C, H, W), (0, 2, 3, 1))` is channels-last)."""
    size, order = tuple(size), tuple(physical_layout)
    if len(size) != len(order):
        raise ShapeError(
            "Number of dimensions in size does not match the length of the physical_layout; i.e. len(size) = "
            f"{len(size)} is not equal to len(physical_layout) = {len(order)}"
        )
    if sorted(order) != list(builtins.range(len(order))):
        raise ShapeError(f"empty_permuted: Duplicate dim not allowed (physical_layout {order})")
    dev = _as_device(device)
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.get_default_dtype()
    memory = dev.xp.zeros([size[d] for d in order], dtype=dt.np)
    inverse = [order.index(d) for d in builtins.range(len(order))]
    return Tensor(memory.transpose(inverse), requires_grad=requires_grad, device=dev)


def norm_except_dim(v, pow=2, dim=0):  # noqa: A002  (torch's parameter name)
    """torch.norm_except_dim (weight_norm's): the `pow`-norm over every dim but `dim`, kept as size-1 dims; dim=-1
    means no dim is kept apart (the norm of the whole tensor, 0-dim)."""
    if dim == -1:
        return vector_norm(v, pow)
    if not -v.ndim <= dim < v.ndim:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-v.ndim}, {v.ndim - 1}], but got {dim})"
        )
    dim %= v.ndim
    return vector_norm(v, pow, tuple(d for d in builtins.range(v.ndim) if d != dim), keepdim=True)


# ---- process-wide switches -----------------------------------------------------------------------------------
def use_deterministic_algorithms(mode, *, warn_only=False):
    if not isinstance(mode, bool):
        raise TypeError(f"use_deterministic_algorithms expects a bool, but got {type(mode).__name__}")
    _STATE.update(deterministic=mode, warn_only=bool(warn_only))


def are_deterministic_algorithms_enabled():
    return _STATE["deterministic"]


def is_deterministic_algorithms_warn_only_enabled():
    return _STATE["warn_only"]


def set_deterministic_debug_mode(debug_mode):
    """torch's other spelling of use_deterministic_algorithms: 0 / "default" off, 1 / "warn" on with warn_only,
    2 / "error" on."""
    if isinstance(debug_mode, str):
        if debug_mode not in _DEBUG_MODES:
            raise InputRangeError(
                f"invalid value of debug_mode, expected one of `default`, `warn`, `error`, but got {debug_mode}"
            )
        debug_mode = _DEBUG_MODES.index(debug_mode)
    elif not isinstance(debug_mode, builtins.int):
        raise TypeError(f"debug_mode must be str or int, but got {type(debug_mode)}")
    if debug_mode not in (0, 1, 2):
        raise InputRangeError(f"invalid value of debug_mode, expected 0, 1, or 2, but got {debug_mode}")
    use_deterministic_algorithms(debug_mode > 0, warn_only=debug_mode == 1)


def get_deterministic_debug_mode():
    return 0 if not _STATE["deterministic"] else 1 if _STATE["warn_only"] else 2


def set_warn_always(b):
    """torch's switch to repeat warnings it gives once; kept and read back (distgraph's warnings follow
    Python's `warnings` filters, which decide repeats)."""
    if not isinstance(b, bool):
        raise TypeError(f"setWarnOnlyOnce expects a bool, but got {type(b).__name__}")
    _STATE["warn_always"] = b


def is_warn_always_enabled():
    return _STATE["warn_always"]


def set_float32_matmul_precision(precision):
    if precision not in ("highest", "high", "medium"):
        raise InputRangeError(f"Invalid precision {precision!r}: expected one of 'highest', 'high', 'medium'")
    _STATE["matmul_precision"] = precision


def get_float32_matmul_precision():
    return _STATE["matmul_precision"]


def set_num_interop_threads(int):  # noqa: A002  (torch's parameter name)
    if isinstance(int, bool) or not isinstance(int, builtins.int) or int < 1:
        raise InputRangeError(f"set_num_interop_threads: expected a positive number of threads, got {int!r}")
    if _STATE["interop_threads"] is not None:
        raise RuntimeError(
            "Error: cannot set number of interop threads after parallel work has started or set_num_interop_threads "
            "called"
        )
    _STATE["interop_threads"] = int


def get_num_interop_threads():
    from distgraph.ops.random_extra import get_num_threads

    return _STATE["interop_threads"] or get_num_threads()


def is_anomaly_enabled():
    return grad_mode.anomaly["enabled"]


def set_anomaly_enabled(enabled, check_nan=True):
    """torch.set_anomaly_enabled: `detect_anomaly`'s switch for the rest of the process."""
    grad_mode.set_detect_anomaly(enabled and check_nan)


__all__ = [*COPIES, "pi", "e", "inf", "nan", "newaxis", "unsafe_chunk", "unsafe_split", "split_with_sizes", "is_tensor",
           "is_storage", "typename", "scalar_tensor", "asarray", "frombuffer", "use_deterministic_algorithms",
           "are_deterministic_algorithms_enabled", "is_deterministic_algorithms_warn_only_enabled",
           "set_float32_matmul_precision", "get_float32_matmul_precision", "set_num_interop_threads",
           "get_num_interop_threads", "is_anomaly_enabled", "set_anomaly_enabled", "histogram", "histogramdd", "gradient",
           "set_printoptions", "as_strided", "empty_strided", "Size", "fill", "resolve_neg", "resolve_conj",
           "constant_pad_nd", "nonzero_static", "empty_permuted", "norm_except_dim", "igamma", "igammac",
           "get_default_device", "set_default_device", "set_deterministic_debug_mode",
           "get_deterministic_debug_mode", "set_warn_always", "is_warn_always_enabled", *_MORE]  # fmt: skip
