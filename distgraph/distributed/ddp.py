"""DistributedDataParallel: torch's wrapper for a training loop of one's own, inside `dg.distributed.launch`.

    model = dist.DistributedDataParallel(make_model())   # every rank starts from rank 0's parameters
    loss_fn(model(x_shard), y_shard).backward()          # .grad is the mean over the ranks when it returns
    optimizer.step()

What it does, as torch's: at construction rank 0's parameters and buffers go to every rank; before each
forward in training, rank 0's buffers (batch-norm statistics) too (`broadcast_buffers`); backward leaves every
parameter's `.grad` averaged over the ranks; `no_sync()` skips that for gradient accumulation (the next synced
backward reduces what accumulated); `.module` is the wrapped model and the state_dict's keys start "module.".

How, as torch's reducer: each parameter has a post-accumulate hook that hands its final gradient to a
`GradBucketer` (buckets.py, the Trainer's): parameters are packed into buckets of `bucket_cap_mb` (25 MB) from
the last to the first, and a bucket whose gradients are all in is all-reduced by a background thread while
backward goes on — the launch's segment on one node, gloo across nodes. The first hook of a backward also
queues one callback for its end (autograd/callbacks.py), which waits for the buckets and reduces one more
number per parameter: how many ranks had its gradient. A parameter no rank's forward used keeps `.grad` None,
one used by some ranks gets the mean with zeros from the others (torch's `find_unused_parameters=True`,
here always: the flag is accepted and changes nothing).
"""

import contextlib

import numpy as np

from distgraph.autograd.callbacks import current_pass, queue_callback
from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.distributed import loop
from distgraph.distributed.buckets import GradBucketer
from distgraph.errors import ConfigError, DistributedError
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
        self._pass = None  # the backward pass whose callback reduces the gradients (callbacks.current_pass)
        self._params = [p for p in module.parameters() if p.requires_grad]
        self._index = {id(p): i for i, p in enumerate(self._params)}
        self._had = [False] * len(self._params)
        self.bucket_cap_mb, self._bucketer = bucket_cap_mb, None  # (built at the first synced backward)
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
        if not self.require_backward_grad_sync or loop.world_size() == 1:
            return
        if self._pass is not current_pass():
            self._start_pass()
        grad = param.grad.array
        self._had[self._index[id(param)]] = True
        self._bucketer.ready(self._index[id(param)], grad if _reducible_in_place(grad) else grad.copy())

    def _start_pass(self):
        if self._bucketer is None:
            self._bucketer = GradBucketer(
                loop.communicator(), [p.array for p in self._params], self.bucket_cap_mb, "mean", "ddp"
            )
        elif self._bucketer.launched or any(self._had):
            raise DistributedError(
                "DistributedDataParallel: a backward failed after its gradient buckets started reducing, so the "
                "ranks' all-reduces are out of step; end the launch (every rank must run the same backwards)"
            )
        self._pass = current_pass()
        queue_callback(self._reduce_gradients)

    def _reduce_gradients(self):
        """Once backward ends: every parameter's .grad ← the mean over the ranks (the buckets), and how many
        ranks had it (one small all-reduce) decides None or the mean with zeros for the ones this rank lacked."""
        self._pass = None
        params, had = self._params, self._had
        self._had = [False] * len(params)
        reduced = self._bucketer.wait()
        device = params[0].device
        counts = Tensor(device.xp.asarray(had, np.float32), device=device)
        with no_grad():
            loop.all_reduce(counts, "sum")
        for p, g, mine, n in zip(params, reduced, had, counts.tolist()):
            if n == 0:
                continue  # no rank used it: .grad stays None, as torch's
            if not mine:
                p.grad = Tensor(g, device=p.device)
            elif g is not p.grad.array:  # (a copy went: a strided or read-only gradient)
                p.grad.array[...] = g


def _reducible_in_place(array):
    flags = array.flags
    return flags.c_contiguous and getattr(flags, "writeable", True)
