"""distgraph.testing.assert_close: torch.testing.assert_close for distgraph tensors.

Same rules as torch's: tensors (and numpy arrays, compared with each other), numbers, booleans and
None, nested in sequences and mappings; default rtol/atol by dtype (the looser of the two inputs');
shape, device and dtype checked first (check_dtype=False compares in the promoted dtype); values
close where |actual - expected| <= atol + rtol·|expected| (torch.isclose, here distgraph's isclose).
A failure raises AssertionError with torch's message: the mismatching count, the greatest absolute
and relative differences with their indices, and the item that failed inside a container.
"""

import cmath
from collections.abc import Mapping, Sequence

import numpy as np

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.ops.compare import isclose
from distgraph.ops.creation import as_tensor

__all__ = ["assert_close"]

# torch's _DTYPE_PRECISIONS: (rtol, atol); any other dtype (integers, bool) compares exactly
_PRECISIONS = {"float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5),
               "float64": (1e-7, 1e-7), "complex64": (1.3e-6, 1e-5), "complex128": (1e-7, 1e-7)}  # fmt: skip
_NUMBER_DTYPE = {bool: "bool", int: "int64", float: "float64", complex: "complex128"}


class _Failure(Exception):
    """A comparison failed: the exception type to raise and torch's message, and where it happened."""

    def __init__(self, type, msg, id=()):
        super().__init__(msg)
        self.type, self.msg, self.id = type, msg, id

    def to_error(self, msg=None):
        if isinstance(msg, str):
            return self.type(msg)
        text = self.msg + (f"\n\nThe failure occurred for item {''.join(str([i]) for i in self.id)}" if self.id else "")
        return self.type(msg(text) if callable(msg) else text)


def _tolerances(names, rtol, atol, id):
    if (rtol is None) ^ (atol is None):
        missing = "rtol" if rtol is None else "atol"
        raise _Failure(
            ValueError, f"Both 'rtol' and 'atol' must be either specified or omitted, but got no {missing}.", id
        )
    if rtol is not None:
        return rtol, atol
    rtols, atols = zip(*(_PRECISIONS.get(n, (0.0, 0.0)) for n in names))
    return max(rtols), max(atols)


def _mismatch_msg(identifier, extra, abs_diff, abs_idx, rel_diff, rel_idx, rtol, atol):
    equality = rtol == 0 and atol == 0
    msg = f"{identifier} are not {'equal' if equality else 'close'}!\n\n{extra}\n"
    for kind, diff, idx, tol in (("absolute", abs_diff, abs_idx, atol), ("relative", rel_diff, rel_idx, rtol)):
        msg += (
            f"{kind.title()} difference: {diff}"
            if idx is None
            else f"Greatest {kind} difference: {diff} at index {idx}"
        )
        msg += "" if equality else f" (up to {tol} allowed)"
        msg += "\n"
    return msg.strip()


def _scalar_msg(actual, expected, rtol, atol):
    abs_diff = abs(actual - expected)
    rel_diff = float("inf") if expected == 0 else abs_diff / abs(expected)
    extra = f"Expected {expected} but got {actual}."
    return _mismatch_msg("Scalars", extra, abs_diff, None, rel_diff, None, rtol, atol)


def _tensor_msg(actual, expected, matches, rtol, atol):
    """torch's make_tensor_mismatch_msg on host copies: mismatching count, greatest differences and where."""
    a, e, ok = actual.reshape(-1), expected.reshape(-1), matches.reshape(-1)
    if a.dtype.kind not in "fc":  # integers and bools differ as int64, as torch's
        a, e = a.astype(np.int64), e.astype(np.int64)
    total, bad = ok.size, int(ok.size - ok.sum())
    extra = f"Mismatched elements: {bad} / {total} ({bad / total:.1%})"
    with np.errstate(divide="ignore", invalid="ignore"):
        abs_diff = np.abs(a - e)
        abs_diff[ok] = 0
        rel_diff = abs_diff / np.abs(e)
    rel_diff[ok] = 0
    where = lambda flat: tuple(int(i) for i in np.unravel_index(flat, matches.shape))  # noqa: E731
    i, j = _argmax(abs_diff), _argmax(rel_diff)
    return _mismatch_msg("Tensor-likes", extra, abs_diff[i].item(), where(i), rel_diff[j].item(), where(j), rtol, atol)


def _argmax(x):
    """torch.max's index: NaN wins (it propagates), else the first greatest."""
    nan = np.flatnonzero(np.isnan(x)) if x.dtype.kind == "f" else []
    return int(nan[0]) if len(nan) else int(np.argmax(x))


def _compare_tensors(actual, expected, id, rtol, atol, equal_nan, check_device, check_dtype):
    if isinstance(actual, np.ndarray):
        actual, expected = as_tensor(actual), as_tensor(expected)

    def mismatch(attribute, a, e):
        raise _Failure(AssertionError, f"The values for attribute '{attribute}' do not match: {a} != {e}.", id)

    rtol, atol = _tolerances((actual.dtype.name, expected.dtype.name), rtol, atol, id)
    if tuple(actual.shape) != tuple(expected.shape):
        mismatch("shape", tuple(actual.shape), tuple(expected.shape))
    if check_device and actual.device != expected.device:
        mismatch("device", actual.device, expected.device)
    if check_dtype and actual.dtype != expected.dtype:
        mismatch("dtype", actual.dtype, expected.dtype)
    actual, expected = actual.detach().to("cpu"), expected.detach().to("cpu")
    if actual.dtype != expected.dtype:
        common = dtypes.promote_types(actual.dtype, expected.dtype)
        actual, expected = actual.to(common), expected.to(common)
    matches = isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan).numpy()
    if matches.all():
        return
    a, e = actual.numpy(), expected.numpy()
    if not matches.shape:
        msg = _scalar_msg(a.item(), e.item(), rtol, atol)
    else:
        msg = _tensor_msg(a, e, matches, rtol, atol)
    raise _Failure(AssertionError, msg, id)


def _compare_numbers(actual, expected, id, rtol, atol, equal_nan, check_dtype):
    actual, expected = (x.item() if isinstance(x, np.number) else x for x in (actual, expected))
    rtol, atol = _tolerances([_NUMBER_DTYPE[type(x)] for x in (actual, expected)], rtol, atol, id)
    if check_dtype and type(actual) is not type(expected):
        raise _Failure(AssertionError, f"The (d)types do not match: {type(actual)} != {type(expected)}.", id)
    if actual == expected or (equal_nan and cmath.isnan(actual) and cmath.isnan(expected)):
        return
    abs_diff = abs(actual - expected)
    if cmath.isfinite(abs_diff) and abs_diff <= atol + rtol * abs(expected):
        return
    raise _Failure(AssertionError, _scalar_msg(actual, expected, rtol, atol), id)


def _compare(actual, expected, id, options):
    """Compare one pair, recursing into sequences and mappings as torch's originate_pairs does."""
    if all(isinstance(x, Sequence) and not isinstance(x, str) for x in (actual, expected)):
        if len(actual) != len(expected):
            raise _Failure(
                AssertionError, f"The length of the sequences mismatch: {len(actual)} != {len(expected)}", id
            )
        for i, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, (*id, i), options)
        return
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        if set(actual) != set(expected):
            raise _Failure(
                AssertionError,
                "The keys of the mappings do not match:\n"
                f"Missing keys in the actual mapping: {sorted(set(expected) - set(actual))}\n"
                f"Additional keys in the actual mapping: {sorted(set(actual) - set(expected))}",
                id,
            )
        keys = list(actual)
        try:
            keys = sorted(keys)
        except TypeError:
            pass
        for k in keys:
            _compare(actual[k], expected[k], (*id, k), options)
        return
    if actual is None or expected is None:
        if not (actual is None and expected is None):
            raise _Failure(AssertionError, f"None mismatch: {actual} is not {expected}", id)
        return
    if isinstance(actual, bool | np.bool_) and isinstance(expected, bool | np.bool_):
        if bool(actual) is not bool(expected):
            raise _Failure(AssertionError, f"Booleans mismatch: {bool(actual)} is not {bool(expected)}", id)
        return
    numbers = int | float | complex | np.number
    if isinstance(actual, numbers) and isinstance(expected, numbers) and not isinstance(actual, bool | np.bool_):
        _compare_numbers(
            actual, expected, id, options["rtol"], options["atol"], options["equal_nan"], options["check_dtype"]
        )
        return
    for kind in (Tensor, np.ndarray):
        if isinstance(actual, kind) and isinstance(expected, kind):
            if not options["allow_subclasses"] and type(actual) is not type(expected):
                break
            _compare_tensors(actual, expected, id, options["rtol"], options["atol"], options["equal_nan"],
                             options["check_device"], options["check_dtype"])  # fmt: skip
            return
    raise _Failure(
        TypeError, f"No comparison pair was able to handle inputs of type {type(actual)} and {type(expected)}.", id
    )


def assert_close(actual, expected, *, allow_subclasses=True, rtol=None, atol=None, equal_nan=False, check_device=True,
                 check_dtype=True, check_layout=True, check_stride=False, msg=None):  # fmt: skip
    """Assert that actual and expected are close (see the module docstring); `msg` replaces the message
    (a string) or edits it (a callable). check_layout and check_stride are accepted for torch's
    signature: distgraph tensors are all dense, and their strides are not part of their value."""
    options = dict(allow_subclasses=allow_subclasses, rtol=rtol, atol=atol, equal_nan=equal_nan,
                   check_device=check_device, check_dtype=check_dtype)  # fmt: skip
    try:
        _compare(actual, expected, (), options)
    except _Failure as failure:
        raise failure.to_error(msg) from None
