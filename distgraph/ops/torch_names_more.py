"""More of torch's top-level names that old code, ported code and control-flow code call (torch_names.py's
`__all__` lists them): each is another op under torch's name or a fact about distgraph's dense tensors.

- range: torch's deprecated end-inclusive arange (its warning; float of the default dtype unless told).
- is_neg / is_distributed: distgraph has no lazy negation bit and no distributed tensor type: always False.
- unsafe_split_with_sizes: split_with_sizes (torch's form skips a view check distgraph does not make).
- cond / while_loop: torch's control-flow operators. torch traces them (torch.compile) to keep one graph;
  distgraph records eagerly, so the branch taken or the loop run is what is recorded: the same values and
  gradients as torch's, with torch's checks on the predicate and the carried values.
- to_dlpack: the tensor's DLPack capsule (numpy's or cupy's; DLPack 1.0 where the array library takes it),
  which `from_dlpack` (torch's too) reads back.
- set_default_tensor_type: torch's deprecated spelling of set_default_dtype (and set_default_device for a
  `torch.cuda.*Tensor` name), with torch's warning.
- set_flush_denormal: returns False, torch's answer where it cannot: numpy and cupy compute with denormals.
- Generator / default_generator: torch's generator objects (ops/rng.py): numpy's streams, torch's API.
- autocast / is_autocast_enabled / get_autocast_dtype: mixed precision (ops/autocast.py; float16 only).
"""

import math
import warnings

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device as as_device
from distgraph.backend import set_default_device
from distgraph.errors import DTypeError, InputRangeError, ShapeError
from distgraph.ops import shape
from distgraph.ops.autocast import autocast, get_autocast_dtype, is_autocast_enabled
from distgraph.ops.rng import Generator, default_generator

_RANGE_WARNING = (
    "torch.range is deprecated and will be removed in a future release because its behavior is inconsistent with "
    "Python's range builtin. Instead, use torch.arange, which produces values in [start, end)."
)


def range(start, end, step=1, *, dtype=None, device=None, requires_grad=False):  # noqa: A001  (torch's name)
    """torch.range: start, start + step, ... up to and including `end`; of the default dtype unless `dtype`."""
    warnings.warn(_RANGE_WARNING, UserWarning, stacklevel=2)
    if step == 0:
        raise InputRangeError("range: step must be nonzero")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise InputRangeError(f"range: unsupported range: {start} -> {end}")
    if (end - start) * step < 0:
        raise InputRangeError("range: upper bound and lower bound inconsistent with step sign")
    dev = as_device(device)
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.get_default_dtype()
    count = math.floor((end - start) / step) + 1
    values = dev.xp.arange(count, dtype="float64") * step + start
    return Tensor(values.astype(dt.np), requires_grad=requires_grad, device=dev)


def is_neg(input):
    return False


def is_distributed(input):
    return False


def unsafe_split_with_sizes(input, split_sizes, dim=0):
    return shape.split(input, list(split_sizes), dim)


def cond(pred, true_fn, false_fn, operands=()):
    """torch.cond: `true_fn(*operands)` when `pred` (a bool or a one-element tensor) holds, else `false_fn`."""
    if isinstance(pred, Tensor):
        if pred.numel() != 1:
            raise ShapeError(f"cond: Expected pred to be bool or single-element tensor, but got {pred}.")
        pred = bool(pred.item())
    elif not isinstance(pred, bool | int):
        raise TypeError(f"cond: Expected pred to be bool or tensor, but got {type(pred).__name__}.")
    for name, fn in (("true_fn", true_fn), ("false_fn", false_fn)):
        if not callable(fn):
            raise TypeError(f"cond: Expect {name} to be callable, but got {type(fn).__name__}.")
    operands = tuple(operands) if isinstance(operands, tuple | list) else (operands,)
    return (true_fn if pred else false_fn)(*operands)


def while_loop(cond_fn, body_fn, carried_inputs):
    """torch.while_loop: `carried = body_fn(*carried)` while `cond_fn(*carried)` holds (a bool or a one-element
    tensor); body_fn must return as many values as it was given. Returns the last carried values (a tuple)."""
    if not isinstance(carried_inputs, tuple | list):
        raise TypeError(f"while_loop: carried_inputs must be a tuple or list, got {type(carried_inputs).__name__}")
    carried = tuple(carried_inputs)
    while _holds(cond_fn(*carried)):
        out = body_fn(*carried)
        out = tuple(out) if isinstance(out, tuple | list) else (out,)
        if len(out) != len(carried):
            raise ShapeError(
                "while_loop: Expected body_fn_output and carried_inputs to have same number of outputs but got "
                f"{len(out)} and {len(carried)}"
            )
        carried = out
    return carried


def _holds(pred):
    if isinstance(pred, Tensor):
        if pred.numel() != 1:
            raise ShapeError(f"while_loop: cond_fn must return a bool or a one-element tensor, got shape {pred.shape}")
        return bool(pred.item())
    return bool(pred)


def to_dlpack(tensor):
    try:
        return tensor.__dlpack__(max_version=(1, 0))  # a versioned capsule: it says the memory is writable
    except TypeError:  # an array library older than DLPack 1.0 (older cupy, numpy < 2.1) takes no max_version
        return tensor.__dlpack__()


_TENSOR_TYPES = {"Double": "float64", "Float": "float32", "Half": "float16", "BFloat16": "bfloat16"}


def set_default_tensor_type(t):
    """torch.set_default_tensor_type('torch.DoubleTensor') (or the type object's name, as torch.DoubleTensor
    prints): the default dtype, and for a `torch.cuda.*` name the default device."""
    warnings.warn(
        "torch.set_default_tensor_type() is deprecated as of PyTorch 2.1, please use torch.set_default_dtype() and "
        "torch.set_default_device() as alternatives.",
        UserWarning,
        stacklevel=2,
    )
    if isinstance(t, str):
        name = t
    elif isinstance(t, type) and t.__name__.endswith("Tensor"):
        name = f"{t.__module__}.{t.__name__}"
    else:
        raise DTypeError("invalid type object: only floating-point types are supported as the default type")
    parts = name.split(".")
    if parts[0] != "torch" or not parts[-1].endswith("Tensor"):
        raise TypeError(f"set_default_tensor_type: invalid type: '{name}'")
    kind = parts[-1][: -len("Tensor")]
    if kind not in _TENSOR_TYPES:
        raise DTypeError("only floating-point types are supported as the default type")
    dtypes.set_default_dtype(_TENSOR_TYPES[kind])
    if "cuda" in parts[1:-1]:
        set_default_device("cuda")


def set_flush_denormal(mode):
    """Whether flushing denormal floats to zero could be set: never (numpy and cupy compute with them)."""
    return False


__all__ = ["range", "is_neg", "is_distributed", "unsafe_split_with_sizes", "cond", "while_loop", "to_dlpack",
           "set_default_tensor_type", "set_flush_denormal", "Generator", "default_generator",
           "autocast", "is_autocast_enabled", "get_autocast_dtype"]  # fmt: skip
