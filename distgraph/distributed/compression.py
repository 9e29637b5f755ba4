"""Gradient compression before an all-reduce: Horovod's `Compression.none` / `Compression.fp16`.

    opt = dist.DistributedOptimizer(opt, compression=dist.Compression.fp16)

A compressor has Horovod's two static methods: `compress(tensor) -> (compressed, ctx)` before the
all-reduce and `decompress(compressed, ctx) -> tensor` after it. fp16 halves the bytes every rank sends;
the price is float16's rounding of each gradient, of every partial sum (the ranks' sum runs in float16,
in rank order, as Horovod's does on the wire) and its range (|x| > 65504 overflows to inf, |x| < 6e-8
flushes to 0). Non-floating tensors pass through unchanged, as in Horovod.

Torch DDP's compressing comm hooks (algorithms/ddp_comm_hooks/default_hooks.py) use the same casts.
bfloat16 (`to_bfloat16`): numpy has no such dtype, so values are rounded to the nearest bfloat16 (ties to
even, on the float32 bits, as torch's conversion) and kept in float32; the optimizers' emulation is reused.
"""

import numpy as np

from distgraph import dtypes
from distgraph.optim.functional_matrix import _round_bfloat16


class Compressor:
    """Horovod's interface: subclass it and pass the class (or an instance) as `compression=`."""

    @staticmethod
    def compress(tensor):
        raise NotImplementedError

    @staticmethod
    def decompress(tensor, ctx):
        raise NotImplementedError


class NoneCompressor(Compressor):
    """The tensor as it is (the default)."""

    @staticmethod
    def compress(tensor):
        return tensor, None

    @staticmethod
    def decompress(tensor, ctx):
        return tensor


class FP16Compressor(Compressor):
    """Floating tensors cast to float16 for the all-reduce and back to their dtype after it."""

    @staticmethod
    def compress(tensor):
        dtype = tensor.array.dtype
        if np.issubdtype(dtype, np.floating):
            with np.errstate(over="ignore"):  # beyond float16's range: inf, as torch's cast, without a warning
                return tensor.to(dtypes.float16), dtype  # (a cast autograd goes through: allreduce is differentiable)
        return tensor, dtype

    @staticmethod
    def decompress(tensor, ctx):
        if np.issubdtype(ctx, np.floating) and tensor.array.dtype != ctx:
            return tensor.to(dtypes.from_numpy(ctx))
        return tensor


class Compression:
    """Horovod's namespace of compressors."""

    none = NoneCompressor
    fp16 = FP16Compressor


def to_bfloat16(array):
    """float32 copy of `array` holding its values rounded to the nearest bfloat16 (ties to even)."""
    return _round_bfloat16(array.astype(np.float32))
