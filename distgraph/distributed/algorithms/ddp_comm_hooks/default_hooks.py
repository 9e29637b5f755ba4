"""torch's default DDP communication hooks (`torch.distributed.algorithms.ddp_comm_hooks.default_hooks`):

    ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)

- `allreduce_hook`: the bucket divided by the world size, then summed across the ranks (torch's order:
  divide first), which is DDP's own mean up to the rounding of that order;
- `fp16_compress_hook`: the bucket cast to float16 and divided by the world size in float16, summed across
  the ranks in float16 (rank order), cast back: half the bytes, float16's rounding and range;
- `bf16_compress_hook`: the same with bfloat16, emulated (compression.py): values rounded to bfloat16 and
  divided, summed in float32, the sum rounded to bfloat16 once. With two ranks that is a bfloat16 sum;
  with more, torch rounds after each addition and the results may differ in the last bit. No bytes are
  saved on the wire (numpy has no bfloat16 to send).

- `fp16_compress_wrapper(hook)` / `bf16_compress_wrapper(hook)`: any hook run on the bucket cast to
  float16 / rounded to bfloat16 (a hook's own state kept), its result cast back: compression in front of
  one's own reduction, as torch's wrappers.

`state` is torch's process group: None here (the launch's group; DDP refuses other groups).
The hook contract (what a hook returns, where it runs) is in distributed/grad_bucket.py.
"""

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.distributed import loop
from distgraph.distributed.compression import to_bfloat16
from distgraph.distributed.grad_bucket import resolved


def allreduce_hook(process_group, bucket):
    buffer = bucket.buffer()
    reduced = Tensor(buffer.array / buffer.array.dtype.type(loop.world_size()), device=buffer.device)
    return loop.all_reduce(reduced, "sum")


def fp16_compress_hook(process_group, bucket):
    """allreduce_hook on the float16 bucket (as torch's: the same numbers as its wrapper around it)."""
    return fp16_compress_wrapper(allreduce_hook)(process_group, bucket)


def bf16_compress_hook(process_group, bucket):
    buffer = bucket.buffer()
    compressed = to_bfloat16(to_bfloat16(buffer.array) / np.float32(loop.world_size()))
    loop.all_reduce(Tensor(compressed, device=buffer.device), "sum")
    return Tensor(to_bfloat16(compressed).astype(buffer.array.dtype), device=buffer.device)


def fp16_compress_wrapper(hook):
    """`hook` run on the bucket cast to float16; its result is cast back to the gradients' dtype."""
    return _compressing(hook, "fp16", _to_float16)


def bf16_compress_wrapper(hook):
    """`hook` run on the bucket rounded to bfloat16 (emulated: float32 values); its result rounded again, as
    a bfloat16 tensor would hold it, then cast back to the gradients' dtype."""
    return _compressing(hook, "bf16", to_bfloat16)


def _to_float16(array):
    with np.errstate(over="ignore"):  # beyond float16's range: inf, as torch's cast
        return array.astype(np.float16)


def _compressing(hook, name, compress):
    def compress_wrapper_hook(hook_state, bucket):
        buffer = bucket.buffer()
        bucket.set_buffer(Tensor(compress(buffer.array), device=buffer.device))
        result = compress(resolved(hook(hook_state, bucket)))
        return Tensor(result.astype(buffer.array.dtype), device=buffer.device)

    compress_wrapper_hook.__name__ = f"{name}_compress_wrapper_hook"
    return compress_wrapper_hook


DEFAULT_HOOKS = (allreduce_hook, fp16_compress_hook, bf16_compress_hook)
