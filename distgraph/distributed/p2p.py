"""torch.distributed's point-to-point calls inside a `dg.distributed.launch` function — `send`, `recv`,
`isend`, `irecv`, `batch_isend_irecv` with `P2POp` — what a pipeline written by hand passes between stages.

On one node (the shm transport) a message is a file of its own under /dev/shm: the sender writes it (numpy's
.npy: dtype and shape, then the bytes) under a temporary name and renames it, atomically, to
`dg.<group>.p2p.<src>.<dst>.<tag>.<n>`; the receiver waits for that name, copies the data into its tensor
and unlinks the file. So a send never waits for its receiver (every stage of a pipeline may send before it
receives without a deadlock), and the n-th message of a (src, dst, tag) meets the n-th receive of it: in
order, as torch guarantees per pair and tag. `recv(src=None)` takes the first message from any rank. A
receive waits at most the launch's timeout_s, then raises naming the source, tag and message number.
The launch removes what a failed run left (its group's names).

Across nodes (gloo): `ray.util.collective.send` / `recv` on the launch's group, which block and know no tags
(messages of a pair meet in call order; `src=None` is refused: they need the source). Each runs on a thread of
its own per peer and direction (a lane: one peer's sends, in call order, or its receives), so `isend` / `irecv`
return at once, as torch's, and `req = irecv(b, peer); send(a, peer); req.wait()` on both ranks completes:
the receive is posted before the send blocks. `send` / `recv` go through the same lanes (in order with the
pending ones) and wait; `Work.wait(timeout)` waits at most `timeout` (default: the launch's timeout_s), then
raises naming the call. On GPUs (nccl) a send blocks there and then and `irecv` receives at `wait()`, as
before: Ray runs a pair's sends and receives on one CUDA stream, where a receive posted first holds up the
send behind it whatever thread posts them.
"""

import concurrent.futures
import datetime
import os
import time
import uuid

import numpy as np

from distgraph.backend import namespace, to_device
from distgraph.distributed import loop, wire
from distgraph.distributed.loop import _context
from distgraph.distributed.process_group import Work, _check_group
from distgraph.distributed.shm_mappings import PREFIX
from distgraph.errors import ConfigError, DistributedError, DTypeError, ShapeError

_SHM = "/dev/shm"
_counts = {}  # (group, src, dst, tag) -> messages sent (on src) or received (on dst) so far
loop.on_new_launch(_counts.clear)  # (keyed by the launch's group: only the last launch's would stay behind)


def _peer(rank, what, role):
    world, me = loop.world_size(), loop.rank()
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or not 0 <= rank < world:
        raise ConfigError(f"{what}: Invalid {role} rank {rank!r}: the launch's ranks are 0..{world - 1}")
    if rank == me:
        raise ConfigError(f"{what}: Invalid {role} rank: should not be the same as the rank of the current process.")
    return int(rank)


def _name(src, dst, tag, n):
    return f"{PREFIX}{_context['group']}.p2p.{src}.{dst}.{tag}.{n}"


def _count(src, dst, tag):
    return _counts.get((_context["group"], src, dst, tag), 0)


def _next(src, dst, tag):
    n = _count(src, dst, tag)
    _counts[_context["group"], src, dst, tag] = n + 1
    return n


def _collective():
    """ray.util.collective when the launch's ranks meet in gloo or nccl, else None (one node: files)."""
    comm = _context["comm"]
    return getattr(comm, "collective", None)


class _Pending(Work):
    """A send or receive running on its lane (gloo): `wait()` waits for it, at most `timeout`."""

    def __init__(self, tensor, future, what):
        super().__init__(tensor)
        self._future, self._what = future, what

    def wait(self, timeout=None):
        limit = _context.get("timeout_s", 120.0) if timeout is None else timeout
        limit = limit.total_seconds() if isinstance(limit, datetime.timedelta) else float(limit)
        try:
            self._future.result(limit)
        except concurrent.futures.TimeoutError:
            raise DistributedError(f"{self._what}: not done within {limit:g}s: does the peer call the matching "
                                   "send / recv?") from None  # fmt: skip
        return True

    def is_completed(self):
        return self._future.done()


def _on_lane(peer, direction, fn, tensor, what):
    """fn() on this rank's thread for `direction` ("send" / "recv") with `peer`, after the ones queued there."""
    group = _context["comm"].group
    lanes = _context.setdefault("p2p_lanes", {})
    if (group, peer, direction) not in lanes:
        if not lanes:  # (the launch's close ends them: a lane left waiting does not hold the process)
            _context.setdefault("on_close", []).append(lambda: [x.shutdown(False, cancel_futures=True) for x in lanes.values()])  # fmt: skip
        lanes[group, peer, direction] = concurrent.futures.ThreadPoolExecutor(1, f"dg-p2p-{direction}-{peer}")
    return _Pending(tensor, lanes[group, peer, direction].submit(fn), what)


def _collective_send(collective, tensor, dst, what):
    """`tensor` to `dst` through gloo (on its lane) or nccl (now) → its Work."""
    buf, group = namespace(tensor.array).ascontiguousarray(tensor.array), _context["comm"].group
    buf = wire.as_bytes(_context["comm"].backend, buf)
    if _context["comm"].backend != "gloo":
        collective.send(buf, dst, group_name=group)
        return Work(tensor)
    return _on_lane(dst, "send", lambda: collective.send(buf, dst, group_name=group), tensor, f"{what} to rank {dst}")


def _collective_recv(collective, tensor, src, what):
    """`src`'s next message into `tensor` through gloo (on its lane) or nccl (now: recv's) → its Work."""
    buf, group = namespace(tensor.array).ascontiguousarray(tensor.array), _context["comm"].group

    def receive():
        collective.recv(wire.as_bytes(_context["comm"].backend, buf), src, group_name=group)
        if buf is not tensor.array:
            tensor.array[...] = buf

    if _context["comm"].backend != "gloo":
        receive()
        return Work(tensor)
    return _on_lane(src, "recv", receive, tensor, f"{what} from rank {src}")


def send(tensor, dst=None, group=None, tag=0):
    """`tensor` to rank `dst`; returns once it is handed over (on one node, before `dst` receives it)."""
    _check_group(group, "send")
    dst = _peer(dst, "send", "destination")
    collective = _collective()
    if collective is not None:
        _collective_send(collective, tensor, dst, "send").wait()
        return None
    final = f"{_SHM}/{_name(loop.rank(), dst, tag, _next(loop.rank(), dst, tag))}"
    temporary = f"{_SHM}/{PREFIX}{_context['group']}.p2p.tmp.{uuid.uuid4().hex}"
    try:
        with open(temporary, "wb") as f:
            np.save(f, np.asarray(tensor.detach().numpy()), allow_pickle=False)
        os.rename(temporary, final)  # the receiver sees the whole message or nothing
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return None


def recv(tensor, src=None, group=None, tag=0):
    """Rank `src`'s next message (of `tag`) into `tensor`, in place → the sender's rank. src=None: the first
    message from any rank. The message must have the tensor's shape and dtype."""
    _check_group(group, "recv")
    collective = _collective()
    if src is not None:
        src = _peer(src, "recv", "source")
    if collective is not None:
        if src is None:
            raise ConfigError(f"recv: src=None (any source) needs the one-node transport; the launch's ranks meet in {_context['comm'].backend}")  # fmt: skip
        _collective_recv(collective, tensor, src, "recv").wait()
        return src
    me = loop.rank()
    sources = [src] if src is not None else [r for r in range(loop.world_size()) if r != me]
    deadline = time.monotonic() + _context.get("timeout_s", 120.0)
    while True:
        for s in sources:
            path = f"{_SHM}/{_name(s, me, tag, _count(s, me, tag))}"
            if os.path.exists(path):
                _next(s, me, tag)
                _take(path, tensor, s)
                return s
        if time.monotonic() > deadline:
            which = f"rank {src}" if src is not None else "any rank"
            n = _count(sources[0], me, tag)
            raise DistributedError(
                f"recv: no message from {which} (tag {tag}, message {n} of that pair) within "
                f"{_context.get('timeout_s', 120.0):g}s: does the sender call send(tensor, dst={me}, tag={tag})?"
            )
        time.sleep(0.0002)


def _take(path, tensor, src):
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
        if data.shape != tuple(tensor.shape):
            raise ShapeError(f"recv: rank {src} sent a tensor of shape {data.shape}, this rank receives into {tuple(tensor.shape)}")  # fmt: skip
        if data.dtype != tensor.array.dtype:
            raise DTypeError(f"recv: rank {src} sent {data.dtype}, this rank receives into {tensor.array.dtype}")
        tensor.array[...] = to_device(np.array(data), tensor.device)
        del data
    finally:
        os.unlink(path)


class _Receive(Work):
    """An irecv: the message is taken at `wait()` (a send never waits for it, so nothing is lost meanwhile)."""

    def __init__(self, tensor, src, tag):
        super().__init__(tensor)
        self._args, self._src = (tensor, src, tag), None

    def wait(self, timeout=None):
        if self._args is not None:
            tensor, src, tag = self._args
            self._src, self._args = recv(tensor, src, tag=tag), None
        return True

    def is_completed(self):
        return self._args is None


def isend(tensor, dst, group=None, tag=0):
    """Through gloo: posted on the peer's send lane → its Work (the tensor must not change until `wait()`)."""
    if _collective() is None:
        send(tensor, dst, group, tag)
        return Work(tensor)
    _check_group(group, "isend")
    return _collective_send(_collective(), tensor, _peer(dst, "isend", "destination"), "isend")


def irecv(tensor, src=None, group=None, tag=0):
    """Through gloo the receive is posted now (on its lane); on one node, and through nccl (where a receive
    posted now would hold up this rank's sends behind it), the message is taken at `wait()`."""
    _check_group(group, "irecv")
    collective = _collective()
    if collective is None or _context["comm"].backend != "gloo":
        return _Receive(tensor, src, tag)
    if src is None:
        raise ConfigError(f"irecv: src=None (any source) needs the one-node transport; the launch's ranks meet in {_context['comm'].backend}")  # fmt: skip
    return _collective_recv(collective, tensor, _peer(src, "irecv", "source"), "irecv")


class P2POp:
    """One send or receive of a batch (torch's): `P2POp(dist.isend, tensor, peer, group=None, tag=0)`."""

    def __init__(self, op, tensor, peer=None, group=None, tag=0):
        if op not in (isend, irecv):
            raise ConfigError("P2POp: Invalid ``op``. Expected ``op`` to be of type ``torch.distributed.isend`` or ``torch.distributed.irecv``.")  # fmt: skip
        self.op, self.tensor, self.peer, self.group, self.tag = op, tensor, peer, group, tag


def batch_isend_irecv(p2p_op_list):
    """Every op of the list → their Works, without a deadlock whatever order the ranks list them in.
    On one node the sends go first (they never wait) and the receives are returned pending, taken at
    `wait()`; through gloo every op is posted on its lane at once. Through nccl a send blocks until its peer
    receives, so the ops run there and then, peer by peer in rank order, the lower rank of each pair sending
    first and the higher receiving first: two ranks that both list their send first meet, and so does a ring
    (MPI's usual ordering)."""
    if not p2p_op_list or not all(isinstance(p, P2POp) for p in p2p_op_list):
        raise ConfigError("batch_isend_irecv: Invalid ``p2p_op_list``. Each op is expected to to be of type ``torch.distributed.P2POp``.")  # fmt: skip
    works = {}
    if _collective() is not None and _context["comm"].backend != "gloo":
        me = loop.rank()
        for peer in sorted({_peer(p.peer, "batch_isend_irecv", "peer") for p in p2p_op_list}):
            first, then = (isend, irecv) if me < peer else (irecv, isend)
            for op in (first, then):
                for i, p in enumerate(p2p_op_list):
                    if p.op is op and p.peer == peer:
                        works[i] = op(p.tensor, p.peer, p.group, p.tag)
                        works[i].wait()
        return [works[i] for i in range(len(p2p_op_list))]
    for i, p in enumerate(p2p_op_list):
        if p.op is isend:
            works[i] = isend(p.tensor, p.peer, p.group, p.tag)
    for i, p in enumerate(p2p_op_list):
        if p.op is irecv:
            works[i] = irecv(p.tensor, p.peer, p.group, p.tag)
    return [works[i] for i in range(len(p2p_op_list))]
