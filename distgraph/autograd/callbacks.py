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


def is_checkpoint_valid():
    """torch.autograd._is_checkpoint_valid: False inside a backward that computes only some gradients
    (autograd.grad, backward(inputs=...)), where a reentrant checkpoint's nested backward cannot deliver
    the gradients of the parameters it reaches."""
    return not getattr(_state, "partial", False)


def current_pass():
    """A token of the backward pass now running (None outside one): a hook tells the pass it queued its
    callback in from a later one (the earlier pass raised, so its callbacks never ran)."""
    return getattr(_state, "queue", None)


@contextlib.contextmanager
def backward_pass(partial=False):
    """The engine's frame of one backward: collect the callbacks queued in it and run them at its end.
    `partial`: this backward computes only the gradients of chosen tensors (see is_checkpoint_valid)."""
    outer, outer_partial = getattr(_state, "queue", None), getattr(_state, "partial", False)
    _state.queue, _state.partial = queue, _ = [], partial
    try:
        yield
        while queue:  # a callback may queue another, as torch's may
            queue.pop(0)()
    finally:
        _state.queue, _state.partial = outer, outer_partial
