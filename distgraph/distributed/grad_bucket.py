"""torch's GradBucket and how DistributedDataParallel runs a communication hook on one.

`ddp.register_comm_hook(state, hook)` replaces DDP's all-reduce of each gradient bucket by
`hook(state, bucket)`. Shape chosen here (torch returns a `torch.futures.Future[Tensor]` and runs the
collective asynchronously): the hook is called on DDP's background reduction thread, one bucket after
the other in bucket order (the same order on every rank, so collectives inside it meet), while backward
goes on in the main thread; it returns the reduced flat buffer — a Tensor or an array, a one-element
list of it (a torch allreduce future's value), or any future-like object whose `wait()` returns one of
those. What it returns becomes the bucket's gradients as it is: averaging is the hook's job (torch's
`allreduce_hook` divides by the world size before summing).
"""

from distgraph.autograd.tensor import Tensor
from distgraph.backend import namespace
from distgraph.errors import ShapeError


class GradBucket:
    """One bucket of gradients, flattened (torch's accessors): `buffer()` is a 1-d tensor holding
    `gradients()` back to back, in the order of `parameters()` (the bucket's: last parameters first)."""

    def __init__(self, index, buffer, params, is_last):
        self._index, self._buffer, self._params, self._is_last = index, buffer, params, is_last

    def index(self):
        return self._index

    def buffer(self):
        return self._buffer

    def set_buffer(self, tensor):
        self._buffer = tensor

    def parameters(self):
        return list(self._params)

    def gradients(self):
        """Views of the buffer, shaped as the parameters."""
        out, offset = [], 0
        for p in self._params:
            n = p.array.size
            out.append(Tensor(self._buffer.array[offset : offset + n].reshape(p.array.shape), device=p.device))
            offset += n
        return out

    def is_last(self):
        return self._is_last


def resolved(result):
    """What a hook returned, as the array it stands for (the contract above): a future's value waited for,
    a one-element list unwrapped, a Tensor's array."""
    if hasattr(result, "wait"):
        result = result.wait()
    if isinstance(result, list | tuple) and len(result) == 1:
        result = result[0]
    return result.array if isinstance(result, Tensor) else result


def run_comm_hook(hook, state, index, arrays, params, is_last):
    """The bucket's gradient arrays through `hook` → the reduced arrays, shaped as the gradients."""
    flat = namespace(arrays[0]).concatenate([a.reshape(-1) for a in arrays])
    bucket = GradBucket(index, Tensor(flat, device=params[0].device), params, is_last)
    out = resolved(hook(state, bucket))
    if getattr(out, "shape", None) != flat.shape:
        raise ShapeError(
            f"register_comm_hook: the hook {getattr(hook, '__name__', hook)!r} returned "
            f"{getattr(out, 'shape', type(out).__name__)} for bucket {index}, whose buffer is {flat.shape}"
        )
    pieces, offset = [], 0
    for a in arrays:
        pieces.append(out[offset : offset + a.size].reshape(a.shape).astype(a.dtype, copy=False))
        offset += a.size
    return pieces
