"""Callbacks run once the current backward pass has finished (torch's
`Variable._execution_engine.queue_callback`): what a data-parallel wrapper needs to reduce every gradient
after the last one is accumulated, when no single hook knows it is the last (a parameter the forward did not
use gets no hook at all).

`queue_callback(fn)` is valid only during a backward (typically from a hook); the callbacks run in the order
queued, after every `.grad` of the pass is written, and only if the pass succeeded. A backward run inside a
hook or callback (a nested pass) has callbacks of its own.
"""

import contextlib
import threading

from distgraph.errors import AutogradError

_state = threading.local()


def queue_callback(fn):
    """Run `fn()` when the backward now running ends (see the module doc)."""
    queue = getattr(_state, "queue", None)
    if queue is None:
        raise AutogradError("queue_callback: no backward pass is running (call it from a hook during backward)")
    queue.append(fn)


@contextlib.contextmanager
def backward_pass():
    """The engine's frame of one backward: collect the callbacks queued in it and run them at its end."""
    outer = getattr(_state, "queue", None)
    _state.queue = queue = []
    try:
        yield
        while queue:  # a callback may queue another, as torch's may
            queue.pop(0)()
    finally:
        _state.queue = outer
