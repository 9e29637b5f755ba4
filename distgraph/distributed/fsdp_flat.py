"""One FSDP unit's parameters as one flat, sharded array (torch's FlatParameter and its handle).

The unit's parameters, in order, are laid end to end in one 1-d array, zero-padded to a multiple of the
world size; rank r keeps elements [r·k, (r+1)·k) as `flat`, the Parameter its optimizer steps. The
module's own parameters stay the tensors its forward reads, but they are taken out of the module's
registry (so `parameters()` yields only the flat shards) and hold no memory at rest. With `orig_params`
(torch's use_orig_params=True) they stay registered and the optimizer steps them: at rest each is a 1-d view
of its piece of the block (`pieces`, empty where none of it is here), and after a reduce its `.grad` is its
piece of the reduced block (`_given`; None where it has no piece here), set aside (`_stash`) while a later
backward accumulates a full one.

- `unshard()`: every rank's shard (cast to `param_dtype` under mixed precision, fsdp_mixed.py) gathered into
  a new full array; each parameter becomes a view of it.
- `reshard()`: the parameters are given empty arrays again; the full array goes once nothing else holds
  it (an op's saved view of a weight keeps it until that backward ran — numpy arrays cannot give their
  memory back under a view, as torch's storages can).
- `reduce_grads()`: the parameters' full gradients, flattened and padded the same way, are averaged over
  the ranks (in `reduce_dtype`) and rank r adds its block to `flat.grad` (in the shard's dtype).

Both are the shard group's communicator's `all_gather` and `reduce_scatter` (allreduce.py; the launch's, a
`process_group`'s, or a hybrid strategy's shard group, whose blocks are then summed across the replicate
group: fsdp_groups.py): on one node the two
halves of the shared-memory all-reduce, each moving half its bytes; through gloo/NCCL an all-reduce of
zero-padded blocks (exact) and a sliced mean. NO_SHARD keeps the full array on every rank (a world of one
for the layout) and all-reduces the gradient: DDP's arithmetic.
"""

import numpy as np

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.backend import to_device
from distgraph.distributed import loop
from distgraph.distributed.checkpoint.layout import overlaps
from distgraph.distributed.checkpoint.sharded import ShardedTensor
from distgraph.errors import ConfigError, DTypeError
from distgraph.nn.parameter import Parameter
from distgraph.optim.functional_matrix import mark_shard


class FlatParamHandle:
    def __init__(self, owners, sharded, groups, orig_params=False, param_dtype=None, reduce_dtype=None,
                 keep_low_precision_grads=False):  # fmt: skip
        """`owners`: (module, attribute name, Parameter) of each parameter of the unit, shared ones once.
        `groups` (fsdp_groups.FSDPGroups): the ranks it is split over (the shard group) and averaged over.
        `orig_params` (torch's use_orig_params=True): see the module doc. The dtypes (numpy's; None: the
        parameters' own) and `keep_low_precision_grads`: torch's MixedPrecision, see fsdp_mixed.py."""
        self.owners, self.orig, self.groups = owners, orig_params, groups
        self.params = list({id(p): p for _, _, p in owners}.values())  # a tied parameter once
        self.shapes = [tuple(p.shape) for p in self.params]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.ranks = groups.world  # who averages the gradients
        self.world = groups.shard_size if sharded else 1  # over how many ranks the array is split
        self.rank = groups.shard_rank if sharded else 0
        total = sum(self.sizes)
        self.shard_size = -(-total // self.world)
        first = self.params[0]
        self.xp, self.dtype = first.device.xp, first.array.dtype
        dtypes = {str(p.array.dtype) for p in self.params}
        if len(dtypes) > 1:
            raise DTypeError(
                f"FullyShardedDataParallel: one unit's parameters must share a dtype to be flattened, got {sorted(dtypes)}"
                " (wrap the parts of other dtypes in units of their own)"
            )
        floating = self.dtype.kind == "f"  # (torch casts floating-point parameters only)
        self.param_dtype = np.dtype(param_dtype or self.dtype) if floating else self.dtype  # forward, backward
        self.reduce_dtype = np.dtype(reduce_dtype or param_dtype or self.dtype) if floating else self.dtype
        self.grad_dtype = self.param_dtype if keep_low_precision_grads else self.dtype  # flat.grad's
        requires_grad = {p.requires_grad for p in self.params}
        if len(requires_grad) > 1 and not orig_params:  # (torch's words: one flat array trained or frozen whole)
            raise ConfigError(
                "FullyShardedDataParallel: Must flatten tensors with uniform `requires_grad` when "
                "`use_orig_params=False` (wrap the frozen parameters' modules in units of their own)"
            )
        full = self._flatten([p.array for p in self.params])
        self.flat = Parameter(Tensor(full[self._block()].copy(), device=first.device), any(requires_grad))
        self.full = self._local = None
        self.pieces = self._pieces()
        if self.world > 1:  # each rank holds a slice: whole-parameter optimizers refuse these when built
            for p in [self.flat] if not orig_params else self.params:
                mark_shard(p)
        self._stash, self._given = {}, {}  # (orig_params: this rank's reduced pieces of .grad, see set_aside_grads)
        if not orig_params:  # out of the registry: parameters() yields the flat shards only
            for module, name, _ in owners:
                module._parameters.pop(name, None)
            for module, name, p in owners:
                module.__dict__[name] = p
        self.reshard()

    def _pieces(self):
        """[lo, hi) within this rank's block of each parameter's part of it (empty: none of it here)."""
        b0, b1, start, out = self.rank * self.shard_size, (self.rank + 1) * self.shard_size, 0, []
        for n in self.sizes:
            lo, hi = max(start, b0), min(start + n, b1)
            out.append((lo - b0, hi - b0) if hi > lo else (0, 0))
            start += n
        return out

    def holds(self, i):
        """Whether this rank keeps a piece of parameter i (one of no elements: every rank, as the plain model's)."""
        lo, hi = self.pieces[i]
        return hi > lo or self.sizes[i] == 0

    def _block(self):
        return slice(self.rank * self.shard_size, (self.rank + 1) * self.shard_size)

    def _flatten(self, arrays):
        dtype = next((a.dtype for a in arrays if a is not None), self.dtype)
        out = self.xp.zeros(self.shard_size * self.world, dtype=dtype)
        start = 0
        for a, n in zip(arrays, self.sizes):
            if a is not None:
                out[start : start + n] = a.reshape(-1)
            start += n
        return out

    @property
    def unsharded(self):
        return self.full is not None

    def gather(self, block):
        """Every rank's block of a flat array (the shard, or an optimizer's state of it) → the full array."""
        if self.world == 1:
            return block.copy()
        return self.groups.in_shard(lambda: loop.communicator().all_gather(block, tag="fsdp"))

    def split(self, full):
        """The full flat array cut into the parameters' shapes (views)."""
        starts = np.cumsum([0, *self.sizes])
        return [full[a : a + n].reshape(shape) for a, n, shape in zip(starts, self.sizes, self.shapes)]

    def block_of(self, arrays):
        """Arrays of the parameters' shapes flattened as the unit and cut to this rank's block (a copy)."""
        return self._flatten(arrays)[self._block()].copy()

    def sharded(self, block, offload=False):
        """A flat array's block (the shard, or an optimizer's state of it) as one ShardedTensor per parameter:
        its piece here as a run of the flattened parameter — or, NO_SHARD's block being whole on every rank,
        plain tensors of the parameters' shapes (copies; numpy arrays with `offload`)."""

        def copy(a):
            return Tensor(to_device(a.copy(), "cpu")) if offload else Tensor(a.copy(), device=self.flat.device)

        if self.world == 1:
            return [copy(a) for a in self.split(block)]
        b0, starts, out = self.rank * self.shard_size, np.cumsum([0, *self.sizes]), []
        for shape, (lo, hi), start in zip(self.shapes, self.pieces, starts):
            out.append(ShardedTensor(shape, block.dtype, [(b0 + lo - start, copy(block[lo:hi]))] if hi > lo else []))
        return out

    def write_block(self, dest, values, names, what):
        """dest (this rank's block of a flat array) ← each parameter's part of it from `values`, one per
        parameter: a full array or tensor, a ShardedTensor whose pieces cover that part (`dcp.load`'s into
        this model's sharded state dict — from a checkpoint of any world size), or None (left as it is)."""
        b0, starts = self.rank * self.shard_size, np.cumsum([0, *self.sizes])
        for value, (lo, hi), start, name in zip(values, self.pieces, starts, names):
            if value is None or hi <= lo:
                continue
            runs = []  # (where each run starts in the unit's flat layout, its length, the run)
            for offset, run in value.pieces if isinstance(value, ShardedTensor) else [(0, value)]:
                a = (run.array if isinstance(run, Tensor) else run).reshape(-1)
                runs.append((start + offset, a.shape[0], (start + offset, a)))
            covered = 0
            for s, e, (g0, a) in overlaps(b0 + lo, b0 + hi, runs):
                dest[s - b0 : e - b0] = self.xp.asarray(a[s - g0 : e - g0])
                covered += e - s
            if covered != hi - lo:
                raise ConfigError(
                    f"{what}: the value for {name} holds {covered} of the {hi - lo} elements this rank keeps (a "
                    "sharded value must come from this model's sharded state dict, filled by dcp.load)"
                )
        return dest

    def unshard(self, fresh=False, full_precision=False):
        """Every parameter a view of the gathered full array, in `param_dtype` (the shard cast before the
        gather) or with `full_precision` in the shard's — gathered only if it is not already so, or anew
        when `fresh`: the shard may have been stepped since."""
        dtype = self.dtype if full_precision else self.param_dtype
        if self.full is None or fresh or self.full.dtype != dtype:
            self.full = self.gather(self.flat.array.astype(dtype, copy=False))
        for p, view in zip(self.params, self.split(self.full)):
            p.data = view

    def show_pieces(self):
        """Orig params, gathered for a backward to come (SHARD_GRAD_OP, NO_SHARD): meanwhile the parameters
        are views of their pieces again, as torch's after forward, so that an optimizer step before that
        backward steps the pieces (the gathered array is not refreshed by it, as torch's is not)."""
        if self.orig:
            for p, (lo, hi) in zip(self.params, self.pieces):
                p.data = self.flat.array[lo:hi]

    def set_aside_grads(self):
        """Orig params, backward about to reach the unit: a reduced piece in `.grad` (accumulating without
        zero_grad) waits aside while backward accumulates the full gradient (only now: until then it stays
        where the optimizer's zero_grad clears it)."""
        for i, p in enumerate(self.params):
            if self.orig and p.grad is not None and p.grad is self._given.get(i):
                self._stash[i] = p.grad
                p._grad = None

    def has_new_grads(self):
        """Whether a backward gave any parameter a gradient (a reduced piece given before is none), or no_sync
        kept gradients in `flat.grad` that no synced backward has reduced yet (one that missed the unit must
        still reduce them)."""
        pending = self._local is not None and self.flat.grad is self._local
        return pending or any(
            p.grad is not None and p.grad is not self._given.get(i) for i, p in enumerate(self.params)
        )

    def reshard(self, writeback=False):
        """The parameters emptied again — with orig params, views of their pieces of this rank's block, their
        set-aside `.grad` pieces back where backward gave none; with `writeback`, this rank's block of their
        (changed) values first."""
        if writeback:
            self.write_back()
        self.full = None
        self.show_pieces()
        for i, p in enumerate(self.params):
            if not self.orig:
                p.data = self.xp.empty(0, dtype=self.dtype)
            if i in self._stash and p.grad is None:
                p._grad = self._stash.pop(i)

    def write_back(self):
        """This rank's block of the gathered parameters' (changed) values into the shard."""
        if self.full is not None:
            self.flat.array[...] = self.block_of([p.array for p in self.params])

    def _take_grads(self):
        """The parameters' gradients flattened (zeros where None), plus what no_sync kept in `flat.grad` if
        the optimizer's zero_grad has not cleared it since; the parameters' `.grad` cleared."""
        full = self._flatten([None if p.grad is None else p.grad.array for p in self.params])
        if self._local is not None:
            if self.flat.grad is self._local:  # (still there: zero_grad(set_to_none=False) left zeros in it)
                full += self._local.array
                self.flat._grad = None
            self._local = None
        for p in self.params:
            p.grad = None
        return full

    def grad_arrays(self):
        """The reduced gradients this rank holds: its block, or (orig params) the parameters' pieces."""
        if self.orig:
            return [
                p.grad.array for i, p in enumerate(self.params) if p.grad is not None and p.grad is self._given.get(i)
            ]
        return [] if self.flat.grad is None else [self.flat.grad.array]

    def keep_grads(self):
        """Under no_sync: the gradients kept unreduced as `flat.grad` (the whole flat length), as torch's, so
        that the optimizer's zero_grad clears them; the next synced backward reduces them with its own. A
        reduced block already in `flat.grad` (accumulating without zero_grad) joins them, times the ranks it is
        split over (the reduce's mean gives it back as it was), so that zero_grad clears it with them (kept
        beside, zero_grad(set_to_none=False) left it). (Orig params keep theirs on the parameters, full size,
        where zero_grad finds them; a piece set aside joins them.)"""
        if self.orig:
            return self._fold_stash()
        full = self._take_grads()
        if self.flat.grad is not None:
            full[self._block()] += self.flat.grad.array * self.world
        self._local = Tensor(full, device=self.flat.device)
        self.flat._grad = self._local  # (past the setter's shape check, as torch's FSDP: not for a step)

    def _fold_stash(self):
        """Each set-aside piece into its parameter's full gradient, as keep_grads' block."""
        starts, b0 = np.cumsum([0, *self.sizes]), self.rank * self.shard_size
        for i, (p, (lo, hi)) in enumerate(zip(self.params, self.pieces)):
            if i in self._stash and p.grad is not None:
                g = p.grad.array.reshape(-1).copy()
                g[b0 + lo - starts[i] : b0 + hi - starts[i]] += self._stash.pop(i).array * self.world
                p._grad = Tensor(g.reshape(p.grad.shape), device=p.grad.device)

    def reduce_grads(self):
        """The parameters' gradients (and what no_sync kept), averaged over the ranks in `reduce_dtype`, added
        to this rank's block in `flat.grad` in the shard's dtype (then cast to `grad_dtype`: torch accumulates
        in full precision whatever it keeps)."""
        full = self._take_grads().astype(self.reduce_dtype, copy=False)
        if self.ranks > 1:  # divided before the sum and after, as torch's: a float16 sum stays finite longer
            pre, post = divide_factors(self.ranks)
            full /= full.dtype.type(pre)
            if self.world > 1:  # this rank's block summed over the shard group, then across its replicas
                mine = self.groups.in_shard(lambda: loop.communicator().reduce_scatter(full, "sum", tag="fsdp"))
                mine = self.groups.in_replicate(_all_reduce_sum, mine)
            else:  # the whole gradient (NO_SHARD, or a hybrid shard group of one rank) summed over every rank
                mine = self.groups.over_all(_all_reduce_sum, full)
            if post != 1:
                mine /= mine.dtype.type(post)
        else:
            mine = full
        mine = mine.astype(self.dtype, copy=False)
        if self.orig:
            return self._give_pieces(mine)
        grad = self.flat.grad
        with no_grad():
            if grad is not None and grad.array.dtype == self.grad_dtype == self.dtype:
                grad.array[...] += mine
            else:  # (past the setter's dtype check with keep_low_precision_grads, as torch's)
                total = mine.copy() if grad is None else mine + grad.array
                self.flat._grad = Tensor(total.astype(self.grad_dtype, copy=False), device=self.flat.device)

    def _give_pieces(self, mine):
        """Orig params: each parameter's `.grad` ← its piece of the reduced block (plus the piece set aside); one
        with no piece here keeps None, as torch's (an optimizer steps nothing of it on this rank)."""
        for i, (p, (lo, hi)) in enumerate(zip(self.params, self.pieces)):
            if not p.requires_grad or not self.holds(i):
                continue
            piece = mine[lo:hi].copy()
            if i in self._stash:
                piece += self._stash.pop(i).array
            p._grad = self._given[i] = Tensor(piece.astype(self.grad_dtype, copy=False), device=self.flat.device)


def _all_reduce_sum(array):
    """The sum of `array` over the current group's ranks (alone: itself)."""
    return array if loop.world_size() == 1 else loop.communicator().allreduce(array, "sum", tag="fsdp")


def divide_factors(world):
    """(before, after): the gradients are divided by `before` ahead of the ranks' sum and by `after` behind it,
    before × after = world (torch's FSDP gradient pre/post-divide factors: the largest power of 2 dividing the
    world below its square root, and the rest) — so that a low-precision sum overflows less and underflows
    less than a sum then a mean, or a mean of each."""
    factor = 1
    while world % factor == 0 and world / factor > factor:
        factor *= 2
    return float(factor), world / factor
