"""Horovod's DistributedOptimizer for a loop of one's own inside `dg.distributed.launch` (loop.py):
wrap the optimizer, and its `step()` all-reduces the gradients first (the class says how and with which
of Horovod's options)."""

import contextlib
import functools
import weakref

from distgraph.distributed.collective_trace import span
from distgraph.distributed.compression import Compression, Compressor
from distgraph.distributed.loop import all_reduce
from distgraph.distributed.process_sets import group_of, run_in
from distgraph.errors import ConfigError
from distgraph.ops.creation import zeros_like


class DistributedOptimizer:
    """Horovod's wrapper: `step()` all-reduces the gradients across the ranks (`synchronize()`), then steps.

    - `compression` (Compression.none | Compression.fp16, compression.py): applied to every gradient
      before the all-reduce and undone after it.
    - `op` Average (the default) or Sum: the ranks' mean or sum; Adasum is refused (not implemented).
    - `gradient_predivide_factor` f (Average only): each gradient is scaled by 1/f before the sum and by
      f/world_size after it, as Horovod splits the average to keep float16 sums in range.
    - `backward_passes_per_step` k: gradients of k backward passes accumulate locally in `.grad` and are
      reduced once, at the step after the k-th; a (k+1)-th pass before `step()` / `synchronize()` raises,
      as Horovod's does (its reduction of a parameter's gradient would already have started). `zero_grad()`
      restarts the count (Horovod raises there instead: a GAN that backpropagates its generator's loss
      through the discriminator and then zeroes the discriminator's gradients would fail).

    `named_parameters` is accepted for Horovod's signature (it names Horovod's tensors; nothing here needs
    names), as are `num_groups` / `groups` (how Horovod groups gradients into fused calls: here all are one
    call already) and `sparse_as_dense` (no gradient is sparse here). `process_set` (process_sets.py): the
    gradients are averaged over the set's ranks alone. The all-reduce runs in `synchronize()`, one fused call per dtype, not from hooks during
    backward: the same numbers as Horovod's, without the overlap (a running `hvd.start_timeline` shows it as
    one event, "allreduce.gradients"). `synchronize()` then `with opt.skip_synchronize():
    opt.step()` lets a loop clip the averaged gradients in between, as with Horovod. Every parameter that
    requires grad is reduced, on every rank: one without a gradient here (a branch this rank's forward did
    not take) gets a zero gradient first, as Horovod's, so the ranks pair the same parameters.

    As Horovod's, the wrapper is an instance of a class made for the wrapped optimizer's, a subclass of both
    this one and it: `isinstance(opt, SGD)` holds, so an lr scheduler, a GradScaler or a checkpoint takes it
    as the optimizer it wraps. Its `param_groups`, `state` and `defaults` are the wrapped optimizer's own
    (one set of learning rates and moments, whichever of the two is scheduled or stepped); anything else is
    read from the wrapped one."""

    def __new__(cls, optimizer, *args, **kwargs):
        return super().__new__(_subclass_for(type(optimizer)) if cls is DistributedOptimizer else cls)

    def __init__(self, optimizer, named_parameters=None, compression=None, backward_passes_per_step=1, op="mean",
                 gradient_predivide_factor=1.0, num_groups=0, groups=None, sparse_as_dense=False,
                 process_set=None):  # fmt: skip
        compression = Compression.none if compression is None else compression
        if not (
            isinstance(compression, Compressor) or isinstance(compression, type) and issubclass(compression, Compressor)
        ):
            raise ConfigError(f"DistributedOptimizer: compression must be a Compressor (dist.Compression.none / fp16), got {compression!r}")  # fmt: skip
        k = backward_passes_per_step
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"DistributedOptimizer: backward_passes_per_step must be a positive int, got {k!r}")
        if op == "adasum":
            raise ConfigError("DistributedOptimizer: op=Adasum is not supported here; use op=Average or op=Sum")
        if op not in ("mean", "sum"):
            raise ConfigError(f"DistributedOptimizer: op must be Average ('mean') or Sum ('sum'), got {op!r}")
        if not isinstance(gradient_predivide_factor, int | float) or not gradient_predivide_factor > 0:
            raise ConfigError(
                f"DistributedOptimizer: gradient_predivide_factor must be a positive number, got {gradient_predivide_factor!r}"
            )
        if gradient_predivide_factor != 1.0 and op != "mean":
            raise ConfigError("DistributedOptimizer: gradient_predivide_factor not supported with op != Average")
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 0:
            raise ConfigError(f"DistributedOptimizer: num_groups should be a non-negative integer, got {num_groups!r}")
        if groups is not None and not (
            isinstance(groups, list | tuple) and all(isinstance(g, list | tuple) for g in groups)
        ):
            raise ConfigError(f"DistributedOptimizer: groups should be a list of lists of parameters, got {groups!r}")
        group_of(process_set, "DistributedOptimizer")  # (checked now: registered, this rank in it)
        self.process_set = process_set
        self.optimizer, self._compression, self.op = optimizer, compression, op
        self.backward_passes_per_step, self.gradient_predivide_factor = k, float(gradient_predivide_factor)
        self._passes, self._should_synchronize = {}, True
        me = weakref.ref(self)  # the hooks do not keep a discarded wrapper counting (and raising)
        handles = [p.register_post_accumulate_grad_hook(lambda p: me() and me()._count_pass(p))
                   for p in self._params() if p.requires_grad]  # fmt: skip
        weakref.finalize(self, lambda: [h.remove() for h in handles])

    def _params(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _count_pass(self, param):
        n = self._passes[id(param)] = self._passes.get(id(param), 0) + 1
        if n > self.backward_passes_per_step:
            raise ConfigError(
                f"DistributedOptimizer: gradients were computed more than backward_passes_per_step "
                f"({self.backward_passes_per_step}) times before call to step(); increase backward_passes_per_step "
                "to accumulate gradients locally"
            )

    param_groups = property(lambda self: self.optimizer.param_groups,
                            lambda self, groups: setattr(self.optimizer, "param_groups", groups))  # fmt: skip
    state = property(lambda self: self.optimizer.state, lambda self, state: setattr(self.optimizer, "state", state))
    defaults = property(lambda self: self.optimizer.defaults)

    def synchronize(self):
        """Every gradient ← its all-reduce across the ranks (compressed, scaled as configured), in place; a
        parameter that requires grad and has none gets zeros first (the other ranks may have its gradient)."""
        self._passes = {}
        params = [p for p in self._params() if p.requires_grad]
        if not params:
            return
        for p in params:
            if p.grad is None:
                p.grad = zeros_like(p)  # (on the parameter's device and GPU)
        packed = [self._compression.compress(p.grad) for p in params]
        sent = [t for t, _ in packed]
        pre = 1.0 / self.gradient_predivide_factor
        if pre != 1.0:
            for t in sent:
                t.array *= t.array.dtype.type(pre)
        with span("allreduce", "gradients", sent):
            run_in(self.process_set, "DistributedOptimizer", all_reduce, sent, self.op)
        for p, t, (_, ctx) in zip(params, sent, packed):
            if pre != 1.0:
                t.array *= t.array.dtype.type(self.gradient_predivide_factor)
            out = self._compression.decompress(t, ctx).array
            if out is not p.grad.array:
                p.grad.array[...] = out

    @contextlib.contextmanager
    def skip_synchronize(self):
        """`step()` inside steps on the gradients as they are (after an explicit `synchronize()`)."""
        before, self._should_synchronize = self._should_synchronize, False
        try:
            yield
        finally:
            self._should_synchronize = before

    def step(self, closure=None):
        if self._should_synchronize:
            self.synchronize()
        self._passes = {}
        return self.optimizer.step(closure) if closure is not None else self.optimizer.step()

    def zero_grad(self, *args, **kwargs):
        self._passes = {}
        return self.optimizer.zero_grad(*args, **kwargs)

    def __getattr__(self, name):
        if name == "optimizer":  # (not set yet: no endless lookup)
            raise AttributeError(name)
        return getattr(self.optimizer, name)


@functools.cache
def _subclass_for(optimizer_class):
    """DistributedOptimizer for `optimizer_class`: a subclass of both, named after the wrapped one (Horovod's)."""
    if issubclass(optimizer_class, DistributedOptimizer):  # a wrapper wrapped again: its class already is one
        return optimizer_class
    return type(optimizer_class.__name__, (DistributedOptimizer, optimizer_class), {"__module__": __name__})
