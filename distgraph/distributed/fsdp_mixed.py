"""FSDP's mixed precision (torch's FSDP1 `MixedPrecision`): low-precision compute and communication, full
precision at rest.

The sharded flat parameters and the optimizer stay in the parameters' own dtype. A unit's gather casts its
shard to `param_dtype` first (so the all-gather moves low-precision bytes) and its forward and backward run
in it; the full gradient, in `param_dtype`, is reduced in `reduce_dtype` (default: `param_dtype`) and cast to
the shard's dtype for `flat.grad` — or kept in `param_dtype` with `keep_low_precision_grads` (fsdp_flat.py
does these casts). Buffers are cast to `buffer_dtype` at the root's first forward and stay so; the full
state dict gives them, as the parameters, in their original dtype. The root casts the floating-point tensors
of its forward's arguments to `param_dtype` (`cast_root_forward_inputs`), any unit with parameters does with
`cast_forward_inputs`. `summon_full_params` gathers the full-precision values. With an `auto_wrap_policy`,
modules of `_module_classes_to_ignore` (batch norms) become units of their own without mixed precision.

numpy and cupy have float16 but no bfloat16, so the dtypes are float16, float32 or float64. One difference from
torch: a reduced gradient still in `flat.grad` when a no_sync backward comes (no zero_grad between) joins no_sync's
unreduced gradient (fsdp_flat.keep_grads) in `param_dtype`, where torch keeps it aside in full precision.
"""

import dataclasses
from collections.abc import Sequence

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.distributed.fsdp_wrap import modules_outside_units
from distgraph.errors import ConfigError, DTypeError
from distgraph.nn.normalization import _BatchNorm


@dataclasses.dataclass
class MixedPrecision:
    """torch's fields and defaults (dtypes: distgraph's, numpy's, their names, or torch's)."""

    param_dtype: object = None
    reduce_dtype: object = None
    buffer_dtype: object = None
    keep_low_precision_grads: bool = False
    cast_forward_inputs: bool = False
    cast_root_forward_inputs: bool = True
    _module_classes_to_ignore: Sequence = (_BatchNorm,)


_FIELDS = ("param_dtype", "reduce_dtype", "buffer_dtype")


def resolve(mixed_precision):
    """A MixedPrecision (or None) → one whose dtypes are distgraph DTypes (or None); a clear error otherwise."""
    if mixed_precision is None:
        return None
    if not isinstance(mixed_precision, MixedPrecision):
        raise ConfigError(
            f"FullyShardedDataParallel: mixed_precision must be a MixedPrecision, got {type(mixed_precision).__name__}"
        )
    return dataclasses.replace(mixed_precision, **{f: _dtype(f, getattr(mixed_precision, f)) for f in _FIELDS})


def _dtype(field, spec):
    if spec is None:
        return None
    name = str(spec).removeprefix("torch.") if type(spec).__module__.startswith("torch") else spec
    try:
        dtype = dtypes.from_any(name)
    except (DTypeError, TypeError):
        dtype = None
    if dtype is None or not dtype.is_floating_point:
        why = " (numpy and cupy have no bfloat16)" if "bfloat16" in str(spec) else ""
        raise ConfigError(
            f"FullyShardedDataParallel: MixedPrecision.{field}={spec!r} is not supported{why}: "
            "float16, float32 or float64"
        )
    return dtype


def handle_dtypes(mixed_precision):
    """The keyword arguments FlatParamHandle takes: numpy dtypes (None: the parameters' own)."""
    mp = mixed_precision or MixedPrecision()
    return {
        "param_dtype": mp.param_dtype and mp.param_dtype.np,
        "reduce_dtype": mp.reduce_dtype and mp.reduce_dtype.np,
        "keep_low_precision_grads": mp.keep_low_precision_grads,
    }


def wrapping(policy, mixed_precision, kwargs):
    """torch's override for `_module_classes_to_ignore`: the auto-wrap policy, or-ed with one wrapping each
    module of those classes, and the keyword arguments of each child unit (those without mixed precision)."""
    classes = tuple(mixed_precision._module_classes_to_ignore) if mixed_precision is not None else ()
    if not classes:
        return policy, lambda child: kwargs

    def either(module, recurse, nonwrapped_numel):
        return recurse or isinstance(module, classes) or policy(module=module, recurse=False,
                                                                nonwrapped_numel=nonwrapped_numel)  # fmt: skip

    return either, lambda child: kwargs | {"mixed_precision": None} if isinstance(child, classes) else kwargs


def pre_forward(unit, args, kwargs):
    """The root's first forward casts every unit's buffers; the inputs cast as the unit's settings say."""
    if unit._root_unit is unit and unit._buffer_dtypes is None:
        unit._buffer_dtypes = _cast_buffers(unit)
    mp = unit._mixed_precision
    if mp is None or mp.param_dtype is None:
        return args, kwargs
    if (unit._root_unit is unit and mp.cast_root_forward_inputs) or (unit._handle and mp.cast_forward_inputs):
        return cast_tensors(args, mp.param_dtype), cast_tensors(kwargs, mp.param_dtype)
    return args, kwargs


def _cast_buffers(root):
    """Each unit's floating-point buffers in its `buffer_dtype`, in place → {(id(module), name): original dtype}."""
    from distgraph.distributed.fsdp import _units

    original = {}
    for unit in _units(root):
        mp = unit._mixed_precision
        if mp is None or mp.buffer_dtype is None:
            continue
        for module in modules_outside_units(unit.module):
            for name, b in module._buffers.items():
                if b is not None and b.is_floating_point() and b.array.dtype != mp.buffer_dtype.np:
                    original[(id(module), name)] = b.array.dtype
                    b.data = b.array.astype(mp.buffer_dtype.np)
    return original


def saved(unit, entry, array):
    """A copy of a state entry's array as the state dicts give it: a buffer cast to `buffer_dtype` back in its
    original dtype (torch's full and sharded state dicts)."""
    module, name, _ = entry
    return array.astype((unit._root_unit._buffer_dtypes or {}).get((id(module), name), array.dtype))


def cast_tensors(x, dtype):
    """Floating-point tensors in `x` (tuples, lists, dicts, dataclasses, as torch's) cast to `dtype`
    (differentiably); the rest as they are."""
    if isinstance(x, Tensor):
        return x.to(dtype) if x.is_floating_point() and x.dtype is not dtype else x
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a namedtuple
        return type(x)(*(cast_tensors(v, dtype) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(cast_tensors(v, dtype) for v in x)
    if isinstance(x, dict):
        return {k: cast_tensors(v, dtype) for k, v in x.items()}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        out = dataclasses.replace(x)
        for f in dataclasses.fields(x):
            setattr(out, f.name, cast_tensors(getattr(x, f.name), dtype))
        return out
    return x
