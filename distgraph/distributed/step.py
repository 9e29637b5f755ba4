"""One data-parallel shard step — forward, loss, backward — shared by the local Trainer and Ray workers.

Both execution paths run exactly this code on the same batch shards and combine the shard gradients
the same way (each shard's mean-loss gradient scaled by its share of the batch, then summed in rank
order), so a synchronous run gives the same bits in one process and across Ray workers.

Nothing here imports ray: the local backend uses it without a cluster.
"""

import contextlib
import functools
import math
import operator

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import device as as_device
from distgraph.backend import device_of_array, to_device, writeable
from distgraph.errors import ConfigError, NonFiniteError, ShapeError
from distgraph.ops.collective import current_group, using_group


def shard_bounds(n, world, rank):
    """[lo, hi) of rank's contiguous slice when n samples are split over `world` ranks (sizes differ by ≤ 1)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def flat_size(arrays):
    return int(sum(a.size for a in arrays))


class ShardStep:
    """Owns a model replica: installs parameter arrays, computes gradients and statistics of a shard."""

    def __init__(self, model, loss_fn, device="cpu"):
        self.device = as_device(device)
        self.model = model.to(self.device) if hasattr(model, "to") else model
        self.loss_fn = loss_fn
        self.params = self._trainable()
        for b in self._buffers():  # a replica unpickled from Ray's object store holds read-only arrays, and
            if not writeable(b.array):  # batch norm updates in place
                b.array = b.array.copy()
        self._on_grad = None  # compute()'s `on_grad`, called from the parameters' post-accumulate hooks
        self._sync_layers = [m for m in self.model.modules() if _is_sync_batch_norm(m)]
        self.unused = set()  # indices of the parameters the last `compute` gave no gradient (zeros in its list)
        self._hooked = False

    # ---- parameters --------------------------------------------------------------------------------
    def trainable_changes(self):
        """The parameters frozen or unfrozen since `params` was taken, by name ("unfrozen: 0.weight; frozen:
        2.bias"), or "" when none was."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        now, before = {id(p) for p in self._trainable()}, {id(p) for p in self.params}
        changed = {"unfrozen": now - before, "frozen": before - now}
        return "; ".join(
            f"{how}: {', '.join(n for i, n in names.items() if i in ids)}" for how, ids in changed.items() if ids
        )

    def refresh_params(self):
        """Take `params` again when the set of parameters that require grad changed (True then). A layer
        unfrozen after `params` was taken got gradients from backward that `compute` never cleared, so the
        optimizer applied them summed over every step since; one frozen since kept its last gradient, which
        the optimizer applied again each step. Every gradient is cleared on a change, as a torch loop's
        `zero_grad()`. Not for a worker whose parameters are hooked (the Trainer refuses a change on Ray)."""
        now = self._trainable()
        if len(now) == len(self.params) and all(a is b for a, b in zip(now, self.params)):
            return False
        for p in self.model.parameters():
            p.grad = None
        self.params = now
        return True

    def _trainable(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def get_parameters(self):
        return [p.array for p in self.params]

    def set_parameters(self, arrays):
        """Install new parameter values (copied: arrays from Ray's object store are read-only)."""
        if len(arrays) != len(self.params):
            raise ShapeError(f"set_parameters: got {len(arrays)} arrays for {len(self.params)} parameters")
        for p, a in zip(self.params, arrays):
            a = to_device(np.asarray(a) if not hasattr(a, "__cuda_array_interface__") else a, self.device)
            if a.shape != p.array.shape:
                raise ShapeError(f"set_parameters: parameter of shape {p.array.shape} got an array of shape {a.shape}")
            if writeable(p.array):
                p.array[...] = a
            else:
                p.array = a.copy()

    def get_buffers(self):
        """The model's buffers (batch norm's running statistics) as host arrays, in `buffers()` order."""
        return [to_device(b.array, "cpu") for b in self._buffers()]

    def set_buffers(self, arrays):
        for b, a in zip(self._buffers(), arrays, strict=True):
            b.array[...] = to_device(np.asarray(a), self.device)

    def buffer_copies(self):
        """Copies of the buffers on their device: what `restore_buffers` puts back when the step about to
        run fails (its forward has already moved batch norm's running statistics)."""
        return [b.array.copy() for b in self._buffers()]

    def restore_buffers(self, copies):
        for b, a in zip(self._buffers(), copies, strict=True):
            b.array[...] = a

    def _buffers(self):
        return [b for b in self.model.buffers() if b is not None]

    # ---- compute -------------------------------------------------------------------------------------
    def compute(self, x, y, weight=1.0, loss_scale=None, on_grad=None):
        """Gradients of `weight * loss_fn(model(x), y)` (arrays in parameter order) and shard statistics.

        `weight` is the shard's share of the global batch, so summing shard gradients gives the
        gradient of the global mean loss. Statistics are sums (loss × count, correct, count) so they
        add up across shards. With a `loss_scale` (dynamic loss scaling) the gradients are those of
        the loss × scale, and a non-finite loss does not stop training: the caller skips the step.
        `on_grad(i, array)` is called during backward as soon as parameter i's gradient is final
        (a GradBucketer's `ready`: the all-reduce of the last layers starts while backward goes on).
        """
        self.model.train()
        for p in self.params:
            p.grad = None
        self.unused = set(range(len(self.params)))
        if len(x) == 0:  # a batch smaller than the worker count leaves this rank no samples: it adds nothing
            if self._sums_with_peers():
                self._join_the_peers_sums(x)
            return [p.device.xp.zeros_like(p.array) for p in self.params], {"loss_sum": 0.0, "count": 0}
        xt, yt = (
            Tensor(to_device(x, self.device), device=self.device),
            Tensor(to_device(y, self.device), device=self.device),
        )
        if xt.array.dtype.kind == "f" and not bool(xt.device.xp.isfinite(xt.array).all()):
            bad = int((~xt.device.xp.isfinite(xt.array)).reshape(len(x), -1).any(axis=1).sum())
            if self._sums_with_peers():  # the peers wait in SyncBatchNorm's first sum, where gloo cannot wake
                self._join_the_peers_sums(x[:0])  # them: take part with nothing, then fail (the step is void)
            raise NonFiniteError(
                f"batch inputs contain NaN/Inf in {bad} of {len(x)} samples; training stopped before the step"
            )
        # under loss scaling an overflow is expected now and then (the step is skipped): no numpy warnings
        quiet = np.errstate(over="ignore", invalid="ignore") if loss_scale is not None else contextlib.nullcontext()
        if on_grad is not None and not self._hooked:
            self._hook_parameters()
        self._on_grad = on_grad
        sums = _SumLog(current_group()) if self._sums_with_peers() else None
        try:
            with quiet, using_group(sums) if sums is not None else contextlib.nullcontext():
                return self._forward_backward(xt, yt, weight, loss_scale, sums)
        finally:
            self._on_grad = None

    def _sums_with_peers(self):
        """Whether a forward and backward of this model meet the other ranks (SyncBatchNorm in training, in a
        worker that installed its group): then every rank must run them, whatever its shard."""
        return current_group() is not None and any(m.training for m in self._sync_layers)

    def _join_the_peers_sums(self, x, done=None):
        """An empty shard's forward and backward: its SyncBatchNorm layers add nothing to the statistics sums
        (count 0) but take part in them, so the ranks with samples are not left waiting (a last batch
        smaller than the worker count stalled them until the timeout). Every gradient is zero, as the
        shard's share of the batch. `done`: the _SumLog of a forward that raised after some of its sums;
        those are replayed from it, and only the rest are joined."""
        for p in self.params:
            p.grad = None
        xt = Tensor(to_device(x, self.device), device=self.device)
        with using_group(done.replaying()) if done is not None else contextlib.nullcontext():
            self._backward_with_nothing(self.model(xt))

    def _backward_with_nothing(self, out):
        """Backward from zero times the outputs: the SyncBatchNorm layers' backward sums, which the peers wait
        in, get zeros from this rank. The parameters' hooks stay quiet: no gradient bucket is reduced as if
        this rank's step had gone well (a failed step joins them void, `zero.abort`)."""
        outs = [
            t for t in (out if isinstance(out, tuple | list) else (out,)) if isinstance(t, Tensor) and t.requires_grad
        ]
        on_grad, self._on_grad = self._on_grad, None
        try:
            if outs:
                functools.reduce(operator.add, [t.sum() * 0 for t in outs]).backward()
        finally:
            self._on_grad = on_grad

    def _join_after_a_failed_forward(self, xt, sums):
        """The model raised in its forward on this rank only, perhaps between two SyncBatchNorm layers: join
        the sums it did not reach, with nothing. Where every rank raised alike (batch norm's "more than 1
        value per channel" after a sum), the replay raises it again on each, and the first error stands."""
        try:
            self._join_the_peers_sums(xt.array[:0], done=sums)
        except Exception:  # noqa: BLE001 - the model's own error is the one to raise
            pass

    def _hook_parameters(self):
        for i, p in enumerate(self.params):
            p.register_post_accumulate_grad_hook(lambda t, i=i: self._on_grad and self._on_grad(i, t.grad.array))
        self._hooked = True

    def _forward_backward(self, xt, yt, weight, loss_scale, sums=None):
        try:
            out = self.model(xt)
        except Exception:
            if sums is not None:  # the peers wait in the next SyncBatchNorm sum: join the rest, then fail
                self._join_after_a_failed_forward(xt, sums)
            raise
        try:
            loss = self._checked_loss(out, yt, loss_scale, len(xt))
        except Exception:
            if sums is not None:  # the peers go on to SyncBatchNorm's backward sums: take part, then fail
                self._backward_with_nothing(out)
            raise
        factor = weight * (loss_scale or 1.0)
        (loss * factor if factor != 1.0 else loss).backward()
        grads = []
        for p in self.params:
            grads.append(p.grad.array if p.grad is not None else p.array.dtype.type(0) * p.array)
        self.unused = {i for i, p in enumerate(self.params) if p.grad is None}
        return grads, _statistics(out, yt, loss, len(xt))

    def _checked_loss(self, out, yt, loss_scale, count):
        loss = self.loss_fn(out, yt)
        if not isinstance(loss, Tensor):  # a float has no gradient to follow (was an AttributeError on .ndim)
            raise ConfigError(f"loss_fn must return a scalar distgraph Tensor, got {type(loss).__name__}")
        if loss.ndim != 0:
            raise ShapeError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
        if loss_scale is None and not math.isfinite(float(loss.item())):
            raise NonFiniteError(
                f"loss is {loss.item()} on a batch of {count} samples with finite inputs; parameters were not "
                "updated. Run under dg.autograd.detect_anomaly() to name the op that produced it"
            )
        return loss

    def evaluate(self, x, y):
        """Statistics of the model on (x, y) without gradients, in eval mode; each module's mode is given
        back as it was (it was set to training, which put a model the user had in eval mode back in
        training, frozen layers included)."""
        from distgraph.autograd.grad_mode import no_grad

        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            with no_grad():
                xt = Tensor(to_device(x, self.device), device=self.device)
                yt = Tensor(to_device(y, self.device), device=self.device)
                out = self.model(xt)
                return _statistics(out, yt, self.loss_fn(out, yt), len(x))
        finally:
            for m, training in modes:
                m.training = training


def _is_sync_batch_norm(module):
    from distgraph.nn.sync_batchnorm import SyncBatchNorm

    return isinstance(module, SyncBatchNorm)


class _SumLog:
    """The process group of one step's forward and backward, keeping each sum's result: a rank whose forward
    raised after some SyncBatchNorm sums replays them (`replaying`) and joins only those its peers still wait
    in (gloo cannot wake a rank waiting in a sum). The sums are (2C + 1) × ranks numbers: the copies are small."""

    def __init__(self, group, replay=None):
        self.group, self.rank, self.world_size = group, group.rank, group.world_size
        self.results, self._replay = [], replay

    def all_reduce_sum(self, array):
        if self._replay:
            return self._replay.pop(0).copy()
        out = self.group.all_reduce_sum(array)
        if self._replay is None:
            self.results.append(out.copy())
        return out

    def replaying(self):
        return _SumLog(self.group, replay=list(self.results))


def _statistics(out, y, loss, count):
    """Summable statistics of one shard: loss × count, number correct (classification), count."""
    value = float(loss.item())
    stats = {"loss_sum": value * count, "count": count}
    # accuracy for one (N, C) output and integer labels; a model with several outputs (a tuple) has none
    if isinstance(out, Tensor) and out.ndim == 2 and y.ndim == 1 and y.array.dtype.kind in "iu":
        stats["correct"] = int((out.array.argmax(axis=1) == y.array).sum())
    return stats


def merge_statistics(parts):
    """Sum shard statistics and turn them into means: {"loss", "accuracy"?, "count"}, and, from workers
    that timed their steps, "per_worker": each rank's (samples, compute seconds)."""
    total = {}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0) + v
    n = max(total.get("count", 0), 1)
    out = {"loss": total.get("loss_sum", 0.0) / n, "count": total.get("count", 0)}
    if "correct" in total:
        out["accuracy"] = total["correct"] / n
    if "skipped" in total:  # every rank reports the same agreed skip: a step is skipped or it is not
        out["skipped"] = int(total["skipped"] > 0)
    if len(parts) > 1 and all("t_compute" in p for p in parts):  # each rank's (samples, compute seconds)
        out["per_worker"] = [(p.get("count", 0), p["t_compute"]) for p in parts]
    return out


def unscale_(grads, scale):
    """Divide loss-scaled gradients by the scale, in place; True when any of them is inf/NaN (the step
    must be skipped). Multiplying by 1/scale, a power of two, gives the same bits on every slice."""
    inv = 1.0 / scale
    found = False
    for g in grads:
        g *= inv
        found = found or not bool(device_of_array(g).xp.isfinite(g).all())
    return found


def combine_gradients(shard_grads, quiet=False):
    """Sum per-shard gradient lists in rank order — the same order the shm all-reduce uses. `quiet`: the
    gradients are loss-scaled, so an overflow (inf + -inf) is expected now and then, and the step skipped
    without a numpy warning, as in `ShardStep.compute`."""
    out = [g.copy() for g in shard_grads[0]]
    with np.errstate(over="ignore", invalid="ignore") if quiet else contextlib.nullcontext():
        for grads in shard_grads[1:]:
            for acc, g in zip(out, grads):
                acc += g
    return out
