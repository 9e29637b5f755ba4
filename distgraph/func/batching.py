"""torch.vmap / torch.func.vmap, run as a loop: the function is called once per batch element (each
mapped input `select`ed at its in_dim) and the results are stacked at their out_dims. The values,
shapes and errors are torch's, and the result is differentiable (select and stack are ops), but the
cost is that of the loop, not of one batched call.

Where the loop cannot see what torch's batching sees, it decides from the results:
- out_dims=None: torch refuses an output that depends on a mapped input; here every element's output
  must be the same object or have the same value, else torch's error is raised.
- randomness="error" (the default): a random draw is noticed as the cpu generator moving during a
  call, and refused in torch's words; "same" replays the generator state for every element, so each
  draws what the first did; "different" lets the draws go on.
- An in-place write to an unmapped input (in_dims=None) would run once per element: it is refused in
  torch's words (noticed as the input's version moving, so only after the first elements wrote) unless
  every element leaves the input with the same value, as `b.zero_()`. torch also runs once a write that
  reads no mapped value but does not repeat to the same value (`b.mul_(2)`); the loop refuses it.
- A batch of size 0 is refused: there is no element to run.
- Batch norm in training mode refuses to update running statistics that are not part of a mapped input
  (they would be updated once per element), in torch's words; an element's Python number is refused with
  a word on .item(), which torch refuses where it is called.
"""

import functools

from distgraph.autograd.tensor import Tensor
from distgraph.errors import IndexOutOfRangeError
from distgraph.func.pytree import broadcast, flatten, unflatten
from distgraph.nn.functional.layers import VMAPPED

__all__ = ["vmap"]


def _name(func):
    if isinstance(func, functools.partial):
        return f"functools.partial({_name(func.func)}, ...)"
    return getattr(func, "__name__", repr(func))


def vmap(func, in_dims=0, out_dims=0, randomness="error", *, chunk_size=None):
    """torch.vmap: `func` mapped over dimension `in_dims` of its inputs, results stacked at `out_dims`
    (ints, None, or nested tuples matching the inputs/outputs). Runs func per batch element: see the
    module docstring. `chunk_size` is accepted (the loop runs one element at a time whatever it is)."""
    if randomness not in ("error", "different", "same"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or 'same'. Got {randomness}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"vmap: chunk_size should be None or greater than 0. (got {chunk_size})")

    @functools.wraps(func)
    def wrapped(*args, **kwargs):
        _check_out_dims(out_dims, func)
        size, flat_in_dims, flat_args, spec = _batched_inputs(in_dims, args, func)
        results = _run(func, size, flat_in_dims, flat_args, spec, kwargs, randomness)
        return _stack_outputs(results, out_dims, func)

    return wrapped


def _check_out_dims(out_dims, func):
    leaves, _ = flatten(out_dims)
    if any(not (d is None or isinstance(d, int)) for d in leaves):
        raise ValueError(
            f"vmap({_name(func)}, ..., out_dims={out_dims}): `out_dims` must be an int, None or a python collection "
            "of ints representing where in the outputs the vmapped dimension should appear."
        )


def _batched_inputs(in_dims, args, func):
    """(batch size, in_dim per flattened input (non-negative), flattened inputs, their spec): torch's checks."""
    head = f"vmap({_name(func)}, in_dims={in_dims}, ...)(<inputs>)"
    if not isinstance(in_dims, int | tuple):
        raise ValueError(
            f"{head}: expected `in_dims` to be int or a (potentially nested) tuple matching the structure of "
            f"inputs, got: {type(in_dims)}."
        )
    if len(args) == 0:
        raise ValueError(
            f"vmap({_name(func)})(<inputs>): got no inputs. Maybe you forgot to add inputs, or you are trying to "
            "vmap over a function with no inputs. The latter is unsupported."
        )
    flat_args, spec = flatten(args)
    flat_in_dims = broadcast(in_dims, spec)
    if flat_in_dims is None:
        raise ValueError(
            f"{head}: in_dims is not compatible with the structure of `inputs`. in_dims has structure "
            f"{flatten(in_dims)[1]} but inputs has structure {spec}."
        )
    for i, (arg, d) in enumerate(zip(flat_args, flat_in_dims)):
        if d is not None and not isinstance(d, int):
            raise ValueError(
                f"{head}: Got in_dim={d} for an input but in_dim must be either an integer dimension or None."
            )
        if isinstance(d, int) and not isinstance(arg, Tensor):
            raise ValueError(
                f"{head}: Got in_dim={d} for an input but the input is of type {type(arg)}. We cannot vmap over "
                "non-Tensor arguments, please use None as the respective in_dim"
            )
        if d is not None and not -arg.ndim <= d < arg.ndim:
            raise ValueError(
                f"{head}: Got in_dim={d} for some input, but that input is a Tensor of dimensionality {arg.ndim} so "
                f"expected in_dim to satisfy -{arg.ndim} <= in_dim < {arg.ndim}."
            )
        if d is not None and d < 0:
            flat_in_dims[i] = d % arg.ndim
    sizes = [arg.shape[d] for arg, d in zip(flat_args, flat_in_dims) if d is not None]
    if not sizes:
        raise ValueError("vmap: Expected at least one Tensor to vmap over")
    if any(s != sizes[0] for s in sizes):
        raise ValueError(
            f"vmap: Expected all tensors to have the same size in the mapped dimension, got sizes {sizes} for the "
            "mapped dimension"
        )
    if sizes[0] == 0:
        raise ValueError(f"vmap({_name(func)}): a batch of size 0 cannot be mapped here (func runs per element)")
    return sizes[0], flat_in_dims, flat_args, spec


def _run(func, size, flat_in_dims, flat_args, spec, kwargs, randomness):
    """func's result for every batch element, with the generators as `randomness` says."""
    from distgraph.backend import device as as_device
    from distgraph.ops.random_extra import replay_rng_state, stash_rng_state
    from distgraph.ops.rng import generator

    cpu = generator(as_device("cpu"))
    stash = stash_rng_state() if randomness == "same" else None
    unmapped = [a for a, d in zip(flat_args, flat_in_dims) if d is None and isinstance(a, Tensor)]
    unmapped += [a for a in flatten(kwargs)[0] if isinstance(a, Tensor)]  # kwargs are never mapped
    written = {}  # id(input) -> its value after the first element that wrote it
    results = []
    levels = VMAPPED.__dict__.setdefault("levels", [])  # this thread's: batch norm checks them
    levels.append([a.array for a, d in zip(flat_args, flat_in_dims) if d is not None])
    try:
        for b in range(size):
            if stash is not None:
                replay_rng_state(stash)
            before = cpu.bit_generator.state if randomness == "error" else None
            versions = [a._vc[0] for a in unmapped]
            inputs = [a if d is None else a.select(d, b) for a, d in zip(flat_args, flat_in_dims)]
            results.append(func(*unflatten(inputs, spec), **kwargs))
            for a, v in zip(unmapped, versions):
                if a._vc[0] != v:
                    _check_unmapped_write(a, written)
            if before is not None and (generator(as_device("cpu")) is not cpu or cpu.bit_generator.state != before):
                raise RuntimeError(
                    "vmap: called random operation while in randomness error mode. Please either use the 'same' or "
                    "'different' randomness flags on vmap or perform the randomness operation out of vmap"
                )
    finally:
        levels.pop()
    return results


def _check_unmapped_write(a, written):
    """An element wrote unmapped input `a` in place: refused unless it left the value the first writer did."""
    value = a.detach()
    first = written.setdefault(id(a), value.clone())
    same = first.shape == value.shape and bool(((first == value) | (first.isnan() & value.isnan())).all())
    if not same:
        raise RuntimeError(
            "vmap: inplace arithmetic(self, *extra_args) is not possible because there exists a Tensor `other` in "
            "extra_args that has more elements than `self`. This happened due to `other` being vmapped over but "
            "`self` not being vmapped over in a vmap. Please try to use out-of-place operators instead of inplace "
            "arithmetic. If said operator is being called inside the PyTorch framework, please file a bug report "
            "instead."
        )


def _stack_outputs(results, out_dims, func):
    """Stack each output across the batch at its out_dim (torch's structure checks and errors)."""
    from distgraph.ops.shape import stack

    flat0, out_spec = flatten(results[0])
    if isinstance(results[0], Tensor):  # torch's edge case: a single Tensor takes out_dims=(d,) too
        flat_dims = [out_dims[0]] if isinstance(out_dims, tuple) and len(out_dims) == 1 else [out_dims]
        if isinstance(flat_dims[0], tuple):
            flat_dims = None
    else:
        flat_dims = broadcast(out_dims, out_spec)
    if flat_dims is None:
        raise ValueError(
            f"vmap({_name(func)}, ..., out_dims={out_dims})(<inputs>): out_dims is not compatible with the structure "
            f"of `outputs`. out_dims has structure {flatten(out_dims)[1]} but outputs has structure {out_spec}."
        )
    columns = list(zip(*[flatten(r)[0] for r in results]))
    name = _name(func)
    out = []
    for column, d in zip(columns, flat_dims):
        if d is None:
            if not all(_same(column[0], c) for c in column[1:]):
                raise ValueError(f"vmap({name}, ...): `{name}` can not return a BatchedTensor when out_dim is None")
            out.append(column[0])
            continue
        if not all(isinstance(c, Tensor) for c in column):
            bad = next(c for c in column if not isinstance(c, Tensor))
            hint = ""
            if isinstance(bad, (bool, int, float, complex)):  # torch's vmap refuses an .item() where it is called
                hint = (
                    " (a Python number: if it came from .item(), float() or int() of a Tensor, that is not "
                    "supported under vmap, please try to rewrite what you're doing with other operations)"
                )
            raise ValueError(
                f"vmap({name}, ...): `{name}` must only return Tensors, got type {type(bad)}{hint}. Did you mean to "
                "set out_dims= to None for output?"
            )
        rank = column[0].ndim
        if not -(rank + 1) <= d <= rank:
            raise IndexOutOfRangeError(
                f"Dimension out of range (expected to be in range of [{-(rank + 1)}, {rank}], but got {d})"
            )
        out.append(stack(list(column), d))
    return unflatten(out, out_spec)


def _same(a, b):
    if a is b:
        return True
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and bool((a.detach() == b.detach()).all())
    return not isinstance(a, Tensor) and not isinstance(b, Tensor) and a == b
