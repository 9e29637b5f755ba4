"""The dtypes a `ray.util.collective` backend cannot carry, and how arrays of them travel instead.

Ray 2.60's gloo group runs on torch.distributed, whose gloo takes no int16, uint16, uint32 or uint64 ("Invalid
scalar type") and sums bools as bytes (True + True leaves a 2 in a bool array); its nccl group maps cupy dtypes to NCCL's and has no entry for bool, int16, uint16 or the complex
types (a KeyError). The shm backend, and the Horovod join round (whose rows are bytes), carry every dtype, so
the same call worked or failed by backend and by size. Here each lacking dtype travels as one the backend has,
with the same result as numpy's sum on the shm path, bit for bit:

- complex as its real and imaginary parts (a view: the sum of pairs is the complex sum);
- uint32 / uint64 as int32 / int64 (a view: two's-complement addition wraps as unsigned addition does);
- int16 / uint16 / bool as int32 (a copy), back by a cast that wraps as numpy's int16 / uint16 sum does, and
  for bool, nonzero (numpy's bool sum is a logical or).

Point-to-point messages need no arithmetic: a lacking dtype travels as its bytes.
"""

import numpy as np

LACKS = {
    "gloo": frozenset(map(np.dtype, ("bool", "int16", "uint16", "uint32", "uint64"))),
    "nccl": frozenset(map(np.dtype, ("bool", "int16", "uint16", "complex64", "complex128"))),
}
_VIEWED = {"complex64": "float32", "complex128": "float64", "uint32": "int32", "uint64": "int64"}


def lacks(backend, dtype):
    """Whether `backend`'s wire has no type for `dtype`."""
    return np.dtype(dtype) in LACKS.get(backend, ())


def for_reduction(backend, flat):
    """(the array to hand `backend`'s all-reduce, and `finish()`, which leaves the reduced values in `flat`) for
    a flat contiguous array; where the wire carries flat's dtype, flat itself and a finish that does nothing."""
    dtype = np.dtype(flat.dtype)
    if not lacks(backend, dtype):
        return flat, _nothing
    if dtype.name in _VIEWED:  # the backend reduces flat's own memory
        return flat.view(_VIEWED[dtype.name]), _nothing
    wide = flat.astype(np.int32)

    def finish():
        flat[...] = wide != 0 if dtype == np.bool_ else wide.astype(dtype)

    return wide, finish


def as_bytes(backend, buf):
    """A contiguous `buf` as the backend can send or receive it: itself, or its bytes (a view: a receive writes
    through to buf)."""
    return buf.reshape(-1).view(np.uint8) if lacks(backend, buf.dtype) else buf


def _nothing():
    pass
