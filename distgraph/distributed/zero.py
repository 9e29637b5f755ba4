"""The parameter store sharded across the workers of one node (ZeRO stage 1) in one shared segment.

Why: a separate store actor puts a Ray round trip (worker → object store → store update → object
store → worker) into every synchronous step — about 11 ms here, a quarter of the step of the MLP
in `distgraph bench scaling`. DDP avoids it by updating replicas on every worker; ZeRO by giving
each worker the update of its own slice. This does the latter on the shm all-reduce's segment, so
a step needs no message through Ray at all:

    write the flat gradient into this rank's slot (all but its own chunk, which no peer reads) →
    barrier → sum this rank's chunk over the peers' slots and its own gradient (rank order 0, 1, …,
    n−1: the same bits as the local Trainer's `combine_gradients`) → apply the optimizer to this
    rank's chunk of the flat parameters, which live in the segment → barrier

The segment holds the flat parameters twice; the models read one buffer while each rank writes its
updated chunk into the other (its chunk copied over, then updated in place: why, exchange.py). After
the second barrier every rank's model reads the new parameters from there — each model parameter's
array is a view of the segment's current buffer — and the buffers swap roles. Optimizer state exists
only for the rank's chunk (a 1/n of the memory of a replicated update), split at parameter
boundaries into pieces, each updated with its parameter's hyperparameters by
`distgraph.optim.functional` — the same function the local optimizer calls, on a slice. Every update
rule there is elementwise, so a slice gives the same bits as the whole.

Two barriers per step suffice: a rank writes its next gradient only after the second barrier, when
every peer has read the slots; it writes the buffer its model read last step only after the next
first barrier, when every peer has left that step (and reads the other buffer).

Across nodes the ranks meet in a gloo group instead (exchange.py): there every rank holds its own copy
of the parameters and, after gloo's all-reduce, the whole reduced gradient, so it updates every
parameter with optimizer state for all of them (`replicated`, as DDP) — cheaper than exchanging
updated chunks; `state_chunk` still reports only the rank's chunk, so the driver assembles the same way.

A parameter no rank's forward used this step has no gradient, and its update is skipped, as torch's
optimizer skips a parameter whose `.grad` is None and as the local Trainer does (DDP leaves such a
parameter's grad None too): each rank marks its unused parameters in the segment before the step's
last barrier, and a parameter every rank marked keeps its value and optimizer state. One used by
some ranks only is updated from the sum, the others adding zeros.

Buckets (as DDP's, `bucket_mb`, default 25 MB): the flat gradient is cut at parameter boundaries into
buckets, the last parameters first, and the first barrier becomes one per bucket. Backward hands each
final gradient to `grad_ready`, which copies what the peers read of it into the slot; once every
bucket before it is done, a complete bucket's barrier and sum run on a background thread while
backward goes on. The last bucket completes when backward ends and is reduced by `step` itself.
Every rank crosses the buckets' barriers in the same order, and each element is still summed over
ranks 0, 1, …, n−1: the same bits for any bucket size.

The authoritative state is this group's: `state_chunk()` hands a rank's slice (parameters and
optimizer state) to the driver, which assembles the whole (`assemble`) for evaluation, checkpoints,
and as the snapshot a restarted group resumes from.
"""

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from distgraph.distributed.buckets import DEFAULT_BUCKET_MB, plan_buckets
from distgraph.distributed.exchange import CollectiveExchange, SegmentExchange
from distgraph.distributed.shm import read_result, segment_name
from distgraph.distributed.shm_mappings import _overlaps
from distgraph.distributed.step import unscale_
from distgraph.errors import DistributedError


def flat_layout(shapes):
    """Offsets of parameters laid end to end: [0, n0, n0 + n1, ...]."""
    return [0, *np.cumsum([int(np.prod(s)) for s in shapes]).tolist()]


def common_dtype(arrays):
    """The one floating dtype of all parameters, or None when they differ (then this path does not apply)."""
    dtypes = {np.dtype(a.dtype) for a in arrays}
    if len(dtypes) != 1:
        return None
    (dtype,) = dtypes
    return dtype if dtype.kind == "f" else None


class ShardedParameters:
    """Rank `rank`'s share of the parameters `params` (Parameter tensors of its model replica)."""

    def __init__(self, params, rank, world, group, optimizer_name, hypers, timeout_s=60.0, bucket_mb=None, comm=None):
        """`comm`: a gloo `CollectiveAllReduce` to meet through (any nodes), else one node's segment."""
        from distgraph.optim.functional import UPDATES
        from distgraph.optim.functional_matrix import WHOLE_PARAMETER

        if optimizer_name in WHOLE_PARAMETER:
            raise DistributedError(
                f"sharded parameter store: {optimizer_name}'s update needs each parameter whole (its matrix shape), "
                "and this store updates flat slices of them; use the unsharded store"
            )
        dtype = common_dtype([p.array for p in params])
        if dtype is None:
            raise DistributedError(
                "sharded parameter store: parameters of one floating dtype are needed, got "
                f"{sorted({str(p.array.dtype) for p in params})}"
            )
        self.params, self.rank, self.world = params, rank, world
        self.shapes = [p.array.shape for p in params]
        self.offsets = flat_layout(self.shapes)
        count = self.offsets[-1]
        if comm is not None and world > 1:
            self.exchange = CollectiveExchange(comm, rank, world, dtype, count, timeout_s, marks=len(params))
        else:
            self.exchange = SegmentExchange(group, rank, world, dtype, count, timeout_s, marks=len(params))
        # the parameters, all ranks' chunks: the model reads buffers[current]; two when shared (see above)
        self.buffers, self.current = self.exchange.results, 0
        self.flat = self.buffers[0]
        self.views = [
            [buf[off : off + int(np.prod(shape))].reshape(shape) for shape, off in zip(self.shapes, self.offsets)]
            for buf in self.buffers
        ]
        self.lo, self.hi = self.exchange.lo, self.exchange.hi
        self.pieces = list(_overlaps(self.offsets, self.lo, self.hi))  # (param, start, stop, flat start)
        # the pieces this rank updates: its chunk, or every parameter where it holds the whole reduced
        # gradient and its own copy of the parameters anyway (a gloo group, exchange.py)
        self.replicated = not self.exchange.shared
        self.own = list(_overlaps(self.offsets, 0, count)) if self.replicated else self.pieces
        self.update = UPDATES[optimizer_name]
        self.hypers = [dict(h) for h in hypers]
        self.state = {i: {} for i, *_ in self.own}
        self.scratch = np.empty(self.hi - self.lo, dtype)
        self.version = 0
        planned = plan_buckets([(s, dtype) for s in self.shapes], bucket_mb or DEFAULT_BUCKET_MB)
        # flat [lo, hi) per bucket, in the order backward completes them (one dtype: members are contiguous)
        self.buckets = [(self.offsets[min(b.members)], self.offsets[max(b.members) + 1]) for b in planned]
        self.bucket_of = {i: k for k, b in enumerate(planned) for i in b.members}
        self._reducer = None  # one thread: buckets reduced while backward runs, in bucket order
        self.overlapped = 0
        self._forget_step()

    def load(self, arrays, states, version):
        """Start from full parameter `arrays` and optimizer `states` (one dict per parameter, torch's
        keys, arrays shaped like the parameter); every rank calls this, then the model reads `flat`."""
        self._use(0)
        for i, a, b, f in self.own:  # replicated: every parameter, into this rank's own copy
            self.flat[f : f + b - a] = np.asarray(arrays[i]).reshape(-1)[a:b]
            self.state[i] = {k: _slice_state(v, self.shapes[i], a, b) for k, v in (states[i] or {}).items()}
        self.exchange.publish(0)
        self.version = int(version)

    def _use(self, k):
        """Point the model's parameters at buffer k."""
        self.current, self.flat = k, self.buffers[k]
        for p, view in zip(self.params, self.views[k]):
            p.array = view

    def begin_step(self):
        """A step starts: its collectives are to come (`abort` joins the rest of them on a gloo group)."""
        self._forget_step()
        self._collectives_to_come = True

    def _forget_step(self):
        """Forget a step that did not reach `step` (its compute raised): every bucket is missing again."""
        self._collectives_to_come = False
        self.arrived = [False] * len(self.params)
        self.own_grads = {}  # param -> its flat gradient, where this rank reads its chunk from there
        self.missing = [0] * len(self.buckets)
        for k in self.bucket_of.values():
            self.missing[k] += 1
        self.launched, self.futures = 0, []

    def grad_ready(self, i, grad):
        """Backward's hook: parameter i's gradient is final. Hand it over (`_hand_over`) and start
        reducing every bucket it completes (all but the last, which `step` reduces)."""
        g = np.asarray(grad)
        if self.arrived[i] or tuple(g.shape) != tuple(self.shapes[i]):
            why = "was given twice this step" if self.arrived[i] else f"has shape {g.shape}"
            raise DistributedError(f"sharded parameter store: gradient of parameter {i} {self.shapes[i]} {why}")
        self._hand_over(i, g)
        self.arrived[i] = True
        self.missing[self.bucket_of[i]] -= 1
        while self.launched < len(self.buckets) - 1 and self.missing[self.launched] == 0:
            if self._reducer is None:
                self._reducer = ThreadPoolExecutor(1, thread_name_prefix="dg-zero-bucket")
            self.futures.append(self._reducer.submit(self._reduce_bucket, self.launched, False))
            self.launched += 1

    def _hand_over(self, i, g):
        """Parameter i's gradient into this rank's slot — only the parts outside its chunk where the
        exchange reads the chunk from backward's array instead (`own_grads`)."""
        flat, off, slot, count = g.reshape(-1), self.offsets[i], self.exchange.slot, self.offsets[-1]
        copied = [(0, count)] if self.exchange.copies_own else [(0, self.lo), (self.hi, count)]
        for lo, hi in copied:
            for _, a, b, f in _overlaps((off, off + flat.size), lo, hi):
                np.copyto(slot[f : f + b - a], flat[a:b])
        if not self.exchange.copies_own and off < self.hi and self.lo < off + flat.size:
            self.own_grads[i] = flat

    def _own_pieces(self, a, b):
        """(flat start, array) pieces of this rank's gradient over flat [a, b) of its chunk."""
        return [(f, self.own_grads[i][pa:pb]) for i, pa, pb, f in _overlaps(self.offsets, a, b)]

    def _reduce_bucket(self, k, spin=True):
        """Bucket k summed over the ranks (`exchange.reduce_range`): this rank's chunk of it into `scratch`."""
        try:
            last = k == len(self.buckets) - 1  # the flags of `mark` ride on it (exchange.py)
            self.exchange.reduce_range(*self.buckets[k], self.scratch, spin, self._own_pieces, flags=last)
        except BaseException:
            self._collectives_to_come = False  # the meeting itself failed (a peer gone, a timeout): none to join
            raise

    def _reduce(self, grads, unused):
        """Every bucket reduced into `scratch` → (how many of them were reduced while backward ran, a bool
        per parameter: no rank used it)."""
        self.exchange.mark([i in unused for i in range(len(self.params))])  # read after the last bucket's barrier
        for i, g in enumerate(grads):
            if not self.arrived[i]:  # no hook delivered it (a step computed without one)
                self._hand_over(i, np.asarray(g))
        overlapped = self.launched
        try:
            self._reduce_the_rest()
            if self.replicated and (voided := self.exchange.voided_by()):  # one node: `Segment.abort` told
                raise DistributedError(
                    f"{self.exchange.name}: rank(s) {voided} stopped: their step raised (their error is the one to "
                    "read); this step is applied on no rank"
                )
            return overlapped, self.exchange.marked_by_all()
        finally:
            self._forget_step()

    def _reduce_the_rest(self):
        """Wait for the buckets reduced while backward ran, then reduce the others, in bucket order."""
        for k, future in enumerate(self.futures):
            try:
                future.result(timeout=self.exchange.timeout_s + 5)
            except FutureTimeout:
                self._collectives_to_come = False
                raise DistributedError(
                    f"sharded parameter store: bucket {k} of {len(self.buckets)} was not reduced within "
                    f"{self.exchange.timeout_s + 5:.0f}s ({self.exchange.name})"
                ) from None
        for k in range(self.launched, len(self.buckets)):
            self._reduce_bucket(k)
        self._collectives_to_come = False

    def set_hypers(self, hypers):
        """New hyperparameters per parameter (an lr scheduler moved lr, momentum or betas)."""
        self.hypers = [dict(h) for h in hypers]

    def step(self, grads, scaler=None, clock=None, unused=()):
        """All-reduce `grads` (sum, rank order) and apply the update of this rank's chunk; see the module doc.
        `unused`: indices of the parameters this rank's forward did not use (zeros in `grads`).

        With a GradScaler (`distgraph.amp`) the gradients are loss-scaled: the chunk is unscaled, the
        ranks agree through the segment whether any chunk holds inf/NaN, and then all of them skip the
        update (counted by every rank's scaler replica, which moves its scale identically) or none does.
        Returns False for a skipped step. `clock` (a timeline.StepClock) gets laps "comm" and "update".
        One rank alone updates straight from `grads`: there is nothing to reduce. `overlapped` holds how
        many buckets were reduced while backward ran (`grad_ready`)."""
        lo, exchange = self.lo, self.exchange
        self.overlapped = 0
        if self.world == 1:
            reduced = np.concatenate([np.asarray(g).reshape(-1) for g in grads]) if len(grads) > 1 else grads[0]
            chunk = np.asarray(reduced).reshape(-1)
            skipped = [i in unused for i in range(len(self.params))]
        else:
            self.overlapped, skipped = self._reduce(grads, unused)
            chunk = self.scratch
            if self.replicated:  # the whole reduced gradient, the same bits on every rank
                chunk, lo = exchange.slot, 0
        if clock is not None and self.world > 1:
            clock.lap("comm")
        if scaler is not None:
            found = unscale_([chunk], scaler.get_scale())
            found = found if self.replicated else exchange.any_rank(found)
            scaler.record(found)
            if found:
                exchange.barrier()
                self.version += 1  # versions count steps, applied or skipped, like the Trainer's global_step
                return False
        nxt = (self.current + 1) % len(self.buffers)
        src, dst = self.flat, self.buffers[nxt]
        for i, a, b, f in self.own:
            if dst is not src:
                np.copyto(dst[f : f + b - a], src[f : f + b - a])
            if skipped[i]:  # no rank used it: no gradient, no update (its state stays as it was)
                continue
            self.update(dst[f : f + b - a], chunk[f - lo : f - lo + b - a], self.state[i], **self.hypers[i])
        if clock is not None:
            clock.lap("update")
        if not self.replicated:
            exchange.publish(nxt)
            if clock is not None:
                clock.lap("publish")  # waiting for the peers' updates: the timeline counts it as wait
        self._use(nxt)
        self.version += 1
        return True

    def abort(self):
        """This rank's step raised: its peers, waiting for it, raise as well instead of waiting out the
        timeout. One node's segment tells them at once (`Segment.abort`). gloo cannot wake a peer blocked in
        a collective, so on a gloo group this rank joins the rest of the step's reductions with the step
        marked void (`exchange.void`): every rank leaves them together, and none applies the step (before,
        the peers waited out gloo's timeout, and the driver could not ask them for the steps before the
        error). The group is unusable afterwards: the driver restarts the workers."""
        if self._collectives_to_come and self.world > 1 and not self.exchange.shared:
            self.exchange.void()
            try:
                self._reduce_the_rest()
            except Exception:  # noqa: BLE001, S110  (a peer gone as well: this rank's own error is the one raised)
                pass
            finally:
                self._forget_step()
        self.exchange.abort()

    def state_chunk(self, params=True):
        """This rank's slice: {version, pieces: [(param, start, stop)], params: [arrays], state: [dicts]};
        without `params` when the reader takes the parameters from the segment (`read_parameters`)."""
        chunk = {
            "version": self.version,
            "pieces": [(i, a, b) for i, a, b, _ in self.pieces],
            "state": [self._reported_state(i, a, b) for i, a, b, _ in self.pieces],
        }
        if params:
            chunk["params"] = [self.flat[f : f + b - a].copy() for _, a, b, f in self.pieces]
        return chunk

    def _reported_state(self, i, a, b):
        """Copies of the state entries of piece (i, a, b); replicated, the entries span the whole (flat)
        parameter and the piece's [a, b) is cut out of them."""

        def piece(v):
            if not hasattr(v, "shape"):
                return v  # a Python scalar (Adam's step)
            return v.reshape(-1)[a:b].copy() if self.replicated and v.ndim else v.copy()

        return {k: piece(v) for k, v in self.state[i].items()}

    def close(self):
        if self._reducer is not None:
            self._reducer.shutdown(wait=False, cancel_futures=True)
            self._reducer = None
        for p in self.params:  # the model keeps private copies, not views of a segment that is gone
            p.array = np.array(p.array, copy=True)
        self.flat = self.buffers = self.views = self.scratch = None
        self.exchange.close()


def _slice_state(value, shape, a, b):
    """The [a, b) slice of a parameter's flattened state entry; scalars (Adam's step) stay whole."""
    if hasattr(value, "shape") and tuple(value.shape) == tuple(shape):
        return np.array(np.asarray(value).reshape(-1)[a:b], copy=True)
    return value


def read_parameters(group, world, shapes, dtype):
    """The whole flat parameter vector of `group`'s segment, read by an observer on the workers' machine
    (the driver, between calls); None when the segment is not on this machine."""
    count = flat_layout(shapes)[-1]
    return read_result(segment_name(group, "zero", dtype, count), world, dtype, count)


def assemble(chunks, shapes, flat=None):
    """Full parameters and per-parameter optimizer states from every rank's `state_chunk()`; the
    parameters from `flat` (`read_parameters`) where the chunks were taken without them."""
    versions = {c["version"] for c in chunks}
    if len(versions) != 1:
        raise DistributedError(f"sharded parameter store: ranks are at different versions {sorted(versions)}")
    flat_params = [[] for _ in shapes]
    parts = [{} for _ in shapes]
    for chunk in chunks:
        for n, ((i, a, _), st) in enumerate(zip(chunk["pieces"], chunk["state"])):
            if flat is None:
                flat_params[i].append((a, chunk["params"][n]))
            for k, v in st.items():
                parts[i].setdefault(k, []).append((a, v))
    if flat is not None:
        offsets = flat_layout(shapes)
        params = [flat[off : off + int(np.prod(s))].reshape(s) for off, s in zip(offsets, shapes)]
    else:
        params = [
            np.concatenate([arr for _, arr in sorted(ps, key=lambda t: t[0])]).reshape(s)
            for ps, s in zip(flat_params, shapes)
        ]
    states = []
    for entries, shape in zip(parts, shapes):
        state = {}
        for k, pieces in entries.items():
            pieces.sort(key=lambda t: t[0])
            if hasattr(pieces[0][1], "shape"):
                state[k] = np.concatenate([v for _, v in pieces]).reshape(shape)
            else:
                state[k] = pieces[0][1]
        states.append(state)
    return versions.pop(), params, states
