"""Global autograd switches: grad mode (no_grad / enable_grad) and anomaly detection.

State lives in a small mutable object read on every op, so checking it costs one attribute load.
Grad mode is per thread (as in PyTorch), so executor threads do not see each other's no_grad.
"""

import functools
import threading


class _State(threading.local):
    def __init__(self):
        self.grad_enabled = True


state = _State()
anomaly = {"enabled": False}


class _GradModeContext:
    """Base of no_grad/enable_grad: a context manager that is also a decorator."""

    mode = True

    def __enter__(self):
        self.prev = state.grad_enabled
        state.grad_enabled = self.mode

    def __exit__(self, *exc):
        state.grad_enabled = self.prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Disable graph recording: ops return tensors without grad_fn."""

    mode = False


class enable_grad(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Re-enable graph recording inside a no_grad region."""

    mode = True


class set_grad_enabled(_GradModeContext):  # noqa: N801 - PyTorch's name
    def __init__(self, mode):
        self.mode = bool(mode)
        self.prev = state.grad_enabled
        state.grad_enabled = self.mode

    def __enter__(self):
        pass


def is_grad_enabled():
    return state.grad_enabled


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


def set_detect_anomaly(mode):
    anomaly["enabled"] = bool(mode)
