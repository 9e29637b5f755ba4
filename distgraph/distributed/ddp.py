"""DistributedDataParallel: torch's wrapper for a training loop of one's own, inside `dg.distributed.launch`.

    model = dist.DistributedDataParallel(make_model())   # every rank starts from rank 0's parameters
    loss_fn(model(x_shard), y_shard).backward()          # .grad is the mean over the ranks when it returns
    optimizer.step()

What it does, as torch's: at construction rank 0's parameters and buffers go to every rank; before each
forward in training, rank 0's buffers (batch-norm statistics) too (`broadcast_buffers`); backward leaves every
parameter's `.grad` averaged over the ranks; `no_sync()` skips that for gradient accumulation (the next synced
backward reduces what accumulated); `.module` is the wrapped model and the state_dict's keys start "module.".

How: each parameter has a post-accumulate hook; the first of a backward queues one callback for its end
(autograd/callbacks.py), which reduces every gradient in one all-reduce per dtype — the launch's segment on
one node, gloo across nodes — with one more number per parameter: how many ranks had its gradient. A
parameter no rank's forward used keeps `.grad` None, one used by some ranks gets the mean with zeros from
the others (torch's `find_unused_parameters=True`, here always: the flag is accepted and changes nothing).
The reduction is not overlapped with backward: Horovod's DistributedOptimizer does the same, and measured
1.37× torch DDP's samples/s with gloo on the MLP of `distgraph bench loop` (README).
"""

import contextlib

import numpy as np

from distgraph.autograd.callbacks import queue_callback
from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.distributed import loop
from distgraph.errors import ConfigError
from distgraph.nn.module import Module


class DistributedDataParallel(Module):
    def __init__(
        self,
        module,
        device_ids=None,
        output_device=None,
        dim=0,
        broadcast_buffers=True,
        process_group=None,
        bucket_cap_mb=None,
        find_unused_parameters=False,
        check_reduction=False,
        gradient_as_bucket_view=False,
        static_graph=False,
    ):
        super().__init__()
        if not isinstance(module, Module):
            raise ConfigError(
                f"DistributedDataParallel: module must be a distgraph.nn.Module, got {type(module).__name__}"
            )
        if process_group is not None:
            raise ConfigError("DistributedDataParallel: process_group is the launch's; other groups are not supported")
        self.module = module
        self.broadcast_buffers, self.find_unused_parameters = broadcast_buffers, find_unused_parameters
        self.require_backward_grad_sync = True
        self._queued = False
        self._params = [p for p in module.parameters() if p.requires_grad]
        with no_grad():
            loop.broadcast(list(module.parameters()) + self._buffers_to_sync(), src=0)
        for p in self._params:
            p.register_post_accumulate_grad_hook(self._grad_ready)

    def _buffers_to_sync(self):
        return [b for b in self.module.buffers() if b is not None and b.array.dtype.kind in "fiu"]

    def forward(self, *args, **kwargs):
        if self.training and self.broadcast_buffers and loop.world_size() > 1:
            buffers = self._buffers_to_sync()
            if buffers:
                with no_grad():
                    loop.broadcast(buffers, src=0)
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward inside accumulates each rank's own gradients; the first synced backward after reduces them."""
        before, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = before

    def _grad_ready(self, param):
        if self.require_backward_grad_sync and not self._queued and loop.world_size() > 1:
            self._queued = True
            queue_callback(self._reduce_gradients)

    def _reduce_gradients(self):
        """Every parameter's .grad ← the mean over the ranks; the ranks' counts of who had one ride along."""
        self._queued = False
        params = self._params
        had = [p.grad is not None for p in params]
        grads = [
            p.grad if p.grad is not None else Tensor(p.device.xp.zeros_like(p.array), device=p.device) for p in params
        ]
        dtype = grads[0].array.dtype if grads else np.float32
        counts = Tensor(params[0].device.xp.asarray(had, dtype=dtype), device=params[0].device) if params else None
        with no_grad():
            loop.all_reduce([*grads, counts] if counts is not None else grads, "sum")
        world = loop.world_size()
        for p, g, mine, n in zip(params, grads, had, counts.tolist() if counts is not None else ()):
            if n == 0:
                continue  # no rank used it: .grad stays None, as torch's
            g.array[...] /= world
            if not mine:
                p.grad = g
