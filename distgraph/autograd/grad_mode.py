"""Global autograd switches: grad mode (no_grad / enable_grad / inference_mode) and anomaly detection.

State lives in a small mutable object read on every op, so checking it costs one attribute load.
Grad mode is per thread (as in PyTorch), so executor threads do not see each other's no_grad.
"""

import functools
import inspect
import threading

from distgraph.errors import AutogradError


class _State(threading.local):
    """`grad_enabled` is whether ops are recorded (what every op reads); `requested` is the grad mode the
    user set, which `is_grad_enabled()` reports. They differ only inside inference_mode, which keeps
    autograd off whatever enable_grad/set_grad_enabled ask, as torch does."""

    def __init__(self):
        self.grad_enabled = True
        self.requested = True
        self.inference = False  # inference_mode: new tensors are inference tensors (autograd/tensor.py)


def _set_grad(mode):
    state.requested = mode
    state.grad_enabled = mode and not state.inference


state = _State()
inference_depth = [0]  # how many inference_mode blocks are open in any thread: a plain list read is
# cheaper than the thread-local flag, so an op outside the mode checks only this (autograd/function.py)
anomaly = {"enabled": False}


class _GradModeContext:
    """Base of no_grad/enable_grad/set_grad_enabled: a context manager that is also a decorator.

    A decorated generator function runs each of its steps in the mode, as torch's decorators do
    (a plain wrapper would only cover creating the generator, not running it).
    """

    mode = True

    def __enter__(self):
        self.prev = state.requested
        _set_grad(self.mode)

    def __exit__(self, *exc):
        _set_grad(self.prev)
        return False

    def _fresh(self):
        return type(self)()

    def __call__(self, fn):
        if inspect.isgeneratorfunction(fn):
            return self._wrap_generator(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self._fresh():
                return fn(*args, **kwargs)

        return wrapper

    def _wrap_generator(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            gen = fn(*args, **kwargs)
            try:
                with self._fresh():
                    response = gen.send(None)
                while True:
                    try:
                        request = yield response
                    except GeneratorExit:
                        with self._fresh():
                            gen.close()
                        raise
                    except BaseException as exc:
                        with self._fresh():
                            response = gen.throw(exc)
                    else:
                        with self._fresh():
                            response = gen.send(request)
            except StopIteration as stop:
                return stop.value

        return wrapper


class _NoParamContext(_GradModeContext):
    """`@no_grad` works without parentheses too, as in torch."""

    def __new__(cls, orig_func=None):
        if orig_func is None:
            return super().__new__(cls)
        return cls()(orig_func)


class no_grad(_NoParamContext):  # noqa: N801 - PyTorch's name
    """Disable graph recording: ops return tensors without grad_fn."""

    mode = False


class enable_grad(_NoParamContext):  # noqa: N801 - PyTorch's name
    """Re-enable graph recording inside a no_grad region."""

    mode = True


class set_grad_enabled(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Takes effect on construction (so a bare call switches the mode); as a decorator it restores
    the mode at once and applies it only while the function runs."""

    def __init__(self, mode):
        self.mode = bool(mode)
        self.prev = state.requested
        _set_grad(self.mode)

    def __enter__(self):
        pass

    def _fresh(self):
        return _GradModeContext.__new__(_Mode)._set(self.mode)

    def __call__(self, fn):
        _set_grad(self.prev)
        return super().__call__(fn)


class _Mode(_GradModeContext):
    """A plain grad-mode context for a given mode (what a set_grad_enabled decorator enters per call)."""

    def _set(self, mode):
        self.mode = mode
        return self


def is_grad_enabled():
    return state.requested


class inference_mode(_GradModeContext):  # noqa: N801 - PyTorch's name
    """no_grad, and every tensor made inside is an inference tensor (`t.is_inference()`).

    An inference tensor has no version counter (see `InferenceVersion` in autograd/tensor.py), so
    outside the mode it cannot be saved for backward, updated in place or made to require grad: what
    torch forbids, so inference results can't leak into a later graph. As in torch, `enable_grad()`
    inside it records nothing (is_grad_enabled() says True, but the mode wins: see _State).
    `inference_mode(False)` is normal grad mode. Works as a decorator, with or without parentheses.
    """

    def __new__(cls, mode=True):
        if callable(mode):  # @inference_mode without parentheses
            return super().__new__(cls)(mode)
        return super().__new__(cls)

    def __init__(self, mode=True):
        self.mode = bool(mode)

    def __enter__(self):
        self.prev = state.requested, state.inference
        state.inference = self.mode
        _set_grad(not self.mode)
        inference_depth[0] += 1

    def __exit__(self, *exc):
        state.inference = self.prev[1]
        _set_grad(self.prev[0])
        inference_depth[0] -= 1
        return False

    def _fresh(self):
        return type(self)(self.mode)

    def clone(self):
        return self._fresh()


def is_inference_mode_enabled():
    return state.inference


class detect_anomaly:  # noqa: N801 - PyTorch's name
    """Record where each op was called in forward; in backward, name the op that produced NaN/Inf."""

    def __init__(self, check_nan=True):
        self.check_nan = check_nan

    def __enter__(self):
        self.prev = anomaly["enabled"]
        anomaly["enabled"] = self.check_nan

    def __exit__(self, *exc):
        anomaly["enabled"] = self.prev
        return False


class set_detect_anomaly:  # noqa: N801 - PyTorch's name
    """Turn anomaly detection on or off now; as a context manager, restore the previous mode on exit
    (torch's class works both ways). Detection here is the NaN/Inf check, so check_nan=False turns it off."""

    def __init__(self, mode, check_nan=True):
        self.prev = anomaly["enabled"]
        anomaly["enabled"] = bool(mode) and bool(check_nan)

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        anomaly["enabled"] = self.prev
        return False


class InferenceVersion(list):
    """The version counter of every inference tensor: it has none. Reading it is what saving a tensor
    for backward, an in-place update and `_version` do, so outside inference_mode each of these
    raises, as torch refuses them (torch words the save and the in-place cases apart; here one message
    names both). Inside the mode reads give 0 and writes are dropped: nothing there is recorded."""

    def __getitem__(self, i):
        if state.inference:
            return 0
        raise AutogradError(
            "Inference tensors cannot be saved for backward or updated in place outside inference_mode "
            "(they do not track a version counter). Please do not use Tensors created in inference mode in "
            "computation tracked by autograd: make a clone() to get a normal tensor, or use no_grad() "
            "instead of inference_mode()."
        )

    def __setitem__(self, i, value):
        pass


INFERENCE_VERSION = InferenceVersion([0])
