"""What torch's `out=` keyword does, given a function's result: `dg.add(a, b, out=c)`, `dg.max(x, 0, out=(v, i))`.

torch_keywords.py gives the keyword to the functions torch's bindings give it to (keyword_names.py); with `out`
the function computes its result as it would without, and `call_into` writes it into `out` as torch's out=
variants do:

- an `out` whose shape differs is resized to the result's (warned with torch's words when it held elements);
- the result is cast to `out`'s dtype where torch's casting rule allows (never floating → integer, nor to bool),
  else torch's "result type Float can't be cast to the desired output type Long";
- the write goes through `copy_`: a view writes into its base, and the version counter moves;
- autograd does not record it: with grad mode on, an argument or `out` that requires grad is refused with torch's
  message, as torch's out= functions are not differentiable;
- the creation functions (zeros, arange, randn, ...) take `out`'s dtype and device unless given their own.

Why after the fact instead of an `out` argument in every kernel: the ~340 functions then need no change. The
price is one copy of the result torch would not make. Where torch's out= variant requires `out`'s dtype to be
the result's exactly (mm, matmul, an index output), distgraph casts by the rule above instead.
"""

import warnings

from distgraph import dtypes
from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.errors import DeviceError, DTypeError
from distgraph.ops.creation import as_tensor
from distgraph.ops.namespace_extra import can_cast
from distgraph.ops.same_dtype import scalar_name

CREATION = frozenset("zeros ones empty full arange range linspace logspace eye rand randn randint randperm".split())


def call_into(fn, name, args, kwargs, out):
    """`fn(*args, **kwargs)` written into `out` (a Tensor, or a tuple of them for a function returning several)."""
    outs, inputs = _out_tensors(name, out), list(_tensors(args, kwargs))
    if grad_mode.is_grad_enabled() and any(t.requires_grad for t in (*outs, *inputs)):
        raise RuntimeError(
            f"{name}(): functions with out=... arguments don't support automatic differentiation, but one of the "
            "arguments requires grad."
        )
    if name in CREATION and not inputs:
        kwargs = _like_out(name, kwargs, outs[0])
    with grad_mode.no_grad():
        result = fn(*args, **kwargs)
        results = _results(name, result, out)
        for target, value in zip(outs, results):
            _write(name, target, value)
    if isinstance(out, Tensor):
        return out
    return type(result)(*outs) if hasattr(result, "_fields") else type(result)(outs)


def _out_tensors(name, out):
    if isinstance(out, Tensor):
        return (out,)
    if isinstance(out, (tuple, list)) and all(isinstance(t, Tensor) for t in out):
        return tuple(out)
    raise TypeError(f"{name}(): argument 'out' must be Tensor or tuple of Tensors, not {type(out).__name__}")


def _tensors(args, kwargs):
    """The tensors among the arguments, and inside a list or tuple of them (cat's)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            yield value
        elif isinstance(value, (tuple, list)):
            yield from (v for v in value if isinstance(v, Tensor))


def _results(name, result, out):
    """`result` as a sequence matching `out`: one Tensor for a Tensor, as many as the tuple holds for a tuple."""
    single = isinstance(result, Tensor)
    if isinstance(out, Tensor):
        if not single:
            raise TypeError(f"{name}(): argument 'out' must be tuple of Tensors, not Tensor: it returns several")
        return (result,)
    if single:
        raise TypeError(f"{name}(): argument 'out' must be Tensor, not {type(out).__name__}: it returns one tensor")
    if len(result) != len(out):
        raise TypeError(f"{name}(): argument 'out' must hold {len(result)} tensors, got {len(out)}")
    return result


def _like_out(name, kwargs, target):
    """A creation function makes `out`'s dtype and device unless told otherwise; a dtype that differs is refused."""
    dtype = kwargs.get("dtype")
    dtype = None if dtype is None else dtypes.from_any(dtype)
    if dtype is not None and dtype != target.dtype:
        raise DTypeError(
            f"{name}(): dtype {scalar_name(dtype.name)} does not match dtype of out parameter "
            f"({scalar_name(target.dtype.name)})"
        )
    return {**kwargs, "dtype": target.dtype, "device": kwargs.get("device") or target.device}


def _write(name, target, value):
    if not isinstance(value, Tensor):  # a Python number among a tuple's results
        value = as_tensor(value, device=target.device)
    if value.device != target.device:
        raise DeviceError(
            f"{name}(): Expected out tensor to have device {value.device}, but got {target.device} instead"
        )
    if not can_cast(value.dtype, target.dtype):  # torch's rule, its words
        raise DTypeError(
            f"{name}(): result type {scalar_name(value.dtype.name)} can't be cast to the desired output type "
            f"{scalar_name(target.dtype.name)}"
        )
    if tuple(target.shape) != tuple(value.shape):
        if target.numel():
            warnings.warn(
                f"An output with one or more elements was resized since it had shape {list(target.shape)}, which "
                f"does not match the required output shape {list(value.shape)}. This behavior is deprecated, and in "
                "a future PyTorch release outputs will not be resized unless they have zero elements. You can "
                "explicitly reuse an out tensor t by resizing it, inplace, to zero elements with t.resize_(0).",
                UserWarning,
                stacklevel=4,
            )
        target.resize_(tuple(value.shape))
    target.copy_(value)
