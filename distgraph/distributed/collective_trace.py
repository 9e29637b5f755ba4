"""Horovod's timeline (`hvd.start_timeline(file_path)` ... `hvd.stop_timeline()`): a Chrome trace of the
collectives the ranks ran in between.

Horovod's convention, followed here: every rank calls both; the coordinator (rank 0) writes the one file,
and it holds every rank's activity. Each rank records its own collectives while its recording runs — one
event each: the name (the one the script gave, else `<op>.noname.<n>`, as Horovod names unnamed tensors),
the op, the bytes of its input tensors, its start and duration — and `stop_timeline` gathers them to rank
0, which writes the file in timeline.py's trace format: one process per rank, µs from the first event.
Only the outermost of nested calls is an event (`allreduce_` runs through `allreduce`: one event), so the
bytes are counted once. Why every rank must call stop: the gather is a collective (a rank that never
started raises at once; one that never stops leaves the others waiting until the launch's timeout).

What Horovod's has and this one has not: Horovod splits each op into its background thread's phases
(negotiation, queueing, memcpy into the fusion buffer, the transfer); here a collective runs when called,
start to end on the caller's thread, so it is one span, and `mark_cycles` (Horovod marks each cycle of
that thread) has no cycle to mark. Start times are wall clocks: exact across ranks on one node, as good as
the clock synchronization between nodes elsewhere (timeline.py's caveat).
"""

import contextlib
import functools
import inspect
import json
import time

from distgraph.distributed import loop
from distgraph.distributed.timeline import process_name, trace_event
from distgraph.errors import ConfigError

_state = {"trace": None, "depth": 0}  # this rank's running recording (None: off); depth of the traced calls


@loop.on_new_launch
def _stop_quietly():
    """A timeline the last launch's function left recording in this process ends unwritten, as its process would."""
    _state.update(trace=None, depth=0)


class CollectiveTrace:
    """One rank's recording: the file rank 0 writes, and an event per collective, in call order."""

    def __init__(self, path, mark_cycles=False):
        self.path, self.mark_cycles, self.events, self._unnamed = str(path), bool(mark_cycles), [], 0

    def add(self, op, name, nbytes, start, end):
        if name is None:
            self._unnamed += 1
            name = f"noname.{self._unnamed}"
        self.events.append({"name": f"{op}.{name}", "op": op, "bytes": int(nbytes), "start": start, "end": end})


def chrome_trace(events_by_rank, label="hvd"):
    """Every rank's events (a list per rank, by rank) → a Chrome trace, one process per rank, µs from the
    earliest start; each event's args say its op, bytes and rank."""
    origin = min((e["start"] for events in events_by_rank for e in events), default=0.0)
    out = []
    for rank, events in enumerate(events_by_rank):
        out.append(process_name(rank, f"{label} rank {rank}"))
        for e in events:
            args = {"op": e["op"], "bytes": e["bytes"], "rank": rank}
            out.append(trace_event(e["name"], e["op"], rank, e["start"] - origin, e["end"] - e["start"], args))
    return {"traceEvents": out, "displayTimeUnit": "ms",
            "otherData": {"ranks": len(events_by_rank), "collectives": sum(map(len, events_by_rank))}}  # fmt: skip


def start_timeline(file_path, mark_cycles=False):
    """Start recording this rank's collectives; rank 0 writes them all to `file_path` at `stop_timeline()`
    (the other ranks' paths are not used, as in Horovod). Every rank calls it."""
    if _state["trace"] is not None:
        raise ConfigError(
            f"start_timeline: a timeline is already recording (to {_state['trace'].path}); call stop_timeline() first"
        )
    _state["trace"] = CollectiveTrace(file_path, mark_cycles)


def stop_timeline():
    """Stop recording; rank 0 writes every rank's collectives to its file (a collective: every rank calls it)."""
    trace = _state["trace"]
    if trace is None:
        raise ConfigError("stop_timeline: no timeline is recording; call start_timeline(file_path) first")
    _state["trace"] = None
    events_by_rank = loop.allgather_object(trace.events)
    if loop.rank() == 0:
        with open(trace.path, "w", encoding="utf-8") as f:
            json.dump(chrome_trace(events_by_rank), f)


def recording():
    return _state["trace"] is not None


@contextlib.contextmanager
def span(op, name, tensors):
    """Record what runs inside as one collective `op` named `name` (None: generated) moving `tensors`,
    when a timeline records and no traced call encloses this one."""
    trace, _state["depth"] = _state["trace"], _state["depth"] + 1
    start = time.time()
    try:
        yield
        if trace is not None and _state["depth"] == 1 and _state["trace"] is trace:
            trace.add(op, name, sum(t.array.nbytes for t in tensors), start, time.time())
    finally:
        _state["depth"] -= 1


def traced(fn):
    """`fn` (one of Horovod's collectives, its tensor argument named `tensor` or `tensors`) recorded by
    `span` under its own name without the in-place underscore (allreduce_ is an allreduce)."""
    signature, op = inspect.signature(fn), fn.__name__.rstrip("_")

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if _state["trace"] is None:
            return fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs).arguments
        tensors = bound["tensors"] if "tensors" in bound else [bound["tensor"]]
        with span(op, bound.get("name"), tensors):
            return fn(*args, **kwargs)

    return call
