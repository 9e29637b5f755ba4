"""How a Tensor prints: torch's `_tensor_str` rules and its `set_printoptions` switches.

One formatter per tensor (torch's `_Formatter`) looks at the shown values once: a floating tensor whose
finite nonzero values are all whole prints them as `3.`; otherwise fixed point with `precision` decimals,
or scientific notation when the values span more than 1000x, exceed 1e8 or fall under 1e-4 (`sci_mode`
forces either). Every element is right-aligned to the widest. A tensor of more than `threshold` elements is
summarized: `edgeitems` rows at each end of each dim, with `...` between. Lines wrap at `linewidth`.
"""

import math

import numpy as np

from distgraph import dtypes
from distgraph.backend import CPU
from distgraph.errors import AutogradError

_DEFAULTS = {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80, "sci_mode": None}
_PROFILES = {
    "default": {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80},
    "short": {"precision": 2, "threshold": 1000, "edgeitems": 2, "linewidth": 80},
    "full": {"precision": 4, "threshold": math.inf, "edgeitems": 3, "linewidth": 80},
}
OPTIONS = dict(_DEFAULTS)


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None, profile=None, sci_mode=None):
    """torch.set_printoptions: a profile ("default", "short", "full") first, then each option given;
    sci_mode is always set (None lets each tensor choose), as torch's."""
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"set_printoptions: profile must be one of {sorted(_PROFILES)}, got {profile!r}")
        OPTIONS.update(_PROFILES[profile])
    given = {"precision": precision, "threshold": threshold, "edgeitems": edgeitems, "linewidth": linewidth}
    OPTIONS.update({k: v for k, v in given.items() if v is not None})
    OPTIONS["sci_mode"] = sci_mode


class _Formatter:
    def __init__(self, values, floating):
        self.floating, self.int_mode, self.sci_mode, self.max_width = floating, True, False, 1
        p = OPTIONS["precision"]
        if not floating:
            self.max_width = max([1, *(len(str(v)) for v in values.tolist())])
            return
        finite = values[np.isfinite(values) & (values != 0)]
        if not finite.size:
            return
        mags = np.abs(finite.astype(np.float64))
        lo, hi = float(mags.min()), float(mags.max())
        self.int_mode = bool(np.all(finite == np.ceil(finite)))
        self.sci_mode = OPTIONS["sci_mode"]
        if self.sci_mode is None:
            self.sci_mode = hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4
        if self.sci_mode:
            pattern, extra = f"{{:.{p}e}}", 0
        else:
            pattern, extra = ("{:.0f}", 1) if self.int_mode else (f"{{:.{p}f}}", 0)
        self.max_width = max(len(pattern.format(v)) + extra for v in finite.tolist())

    def format(self, value):
        p = OPTIONS["precision"]
        if not self.floating:
            ret = str(value)
        elif self.sci_mode:
            ret = "{:{}.{}e}".format(value, self.max_width, p)
        elif self.int_mode:
            ret = f"{value:.0f}" + ("" if math.isinf(value) or math.isnan(value) else ".")
        else:
            ret = "{:.{}f}".format(value, p)
        return (self.max_width - len(ret)) * " " + ret


def _summarized(arr, edge):
    """The elements a summarized print shows (torch's get_summarized_data)."""
    if arr.ndim == 0:
        return arr
    if arr.ndim > 1 and not edge:
        return arr[(slice(0, 0),) * arr.ndim]
    rows = range(arr.shape[0])
    if arr.shape[0] > 2 * edge:
        rows = [*range(edge), *range(arr.shape[0] - edge, arr.shape[0])]
    if arr.ndim == 1:
        return arr[list(rows)]
    return np.stack([_summarized(arr[i], edge) for i in rows])


def _str(arr, indent, summarize, fmt):
    edge = OPTIONS["edgeitems"]
    if arr.ndim == 0:
        return fmt.format(arr.item())
    cut = summarize and arr.shape[0] > 2 * edge
    if arr.ndim == 1:
        per_line = max(1, int(math.floor((OPTIONS["linewidth"] - indent) / (fmt.max_width + 2))))
        if summarize and not edge:
            data = ["..."]
        elif cut:
            data = [*map(fmt.format, arr[:edge].tolist()), " ...", *map(fmt.format, arr[-edge:].tolist())]
        else:
            data = [fmt.format(v) for v in arr.tolist()]
        lines = [", ".join(data[i : i + per_line]) for i in range(0, len(data), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    rows = [*range(edge), None, *range(arr.shape[0] - edge, arr.shape[0])] if cut else range(arr.shape[0])
    slices = ["..." if i is None else _str(arr[i], indent + 1, summarize, fmt) for i in rows]
    return "[" + ("," + "\n" * (arr.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def tensor_body(arr, indent=len("tensor(")):
    """The values part of a tensor's repr, from its host array, as torch prints it."""
    if arr.size == 0:
        return "[]"
    floating = arr.dtype.kind == "f"
    if floating and arr.dtype.itemsize < 4:  # float16, bfloat16: printed through float32, as torch
        arr = arr.astype(np.float32)
    summarize = arr.size > OPTIONS["threshold"]
    shown = _summarized(arr, OPTIONS["edgeitems"]) if summarize else arr
    return _str(arr, indent, summarize, _Formatter(shown.reshape(-1), floating))


def tensor_repr(t):
    """`tensor(values, suffix, ...)`, torch's: device, a dtype that is not implied (or any dtype for no
    values), the size when the values do not show it, grad_fn or requires_grad; a suffix that would pass
    `linewidth` starts a new line."""
    arr, suffixes = t.__array__(), []
    if t.device is not CPU:
        suffixes.append(f"device='{t.device}'")
    if (arr.size == 0 and arr.ndim != 1) or (arr.size and not OPTIONS["edgeitems"]):
        suffixes.append(f"size={tuple(arr.shape)}")
    implied = (dtypes.get_default_dtype().np,) + (() if arr.size == 0 else (np.dtype(np.int64), np.dtype(np.bool_)))
    if arr.dtype not in implied:
        suffixes.append(f"dtype={t.dtype}")
    try:
        grad_fn = t.grad_fn and t.grad_fn.name()
    except AutogradError:  # a split output whose memory was written has no graph: torch shows this
        grad_fn = "Invalid"
    if grad_fn is not None:
        suffixes.append(f"grad_fn=<{grad_fn}>")
    elif t.requires_grad:
        suffixes.append("requires_grad=True")
    out = "tensor(" + tensor_body(arr)
    last = len(out) - out.rfind("\n") + 1
    for suffix in suffixes:
        if last + len(suffix) + 2 > OPTIONS["linewidth"]:
            out, last = out + ",\n" + " " * len("tensor(") + suffix, len("tensor(") + len(suffix)
        else:
            out, last = out + ", " + suffix, last + len(suffix) + 2
    return out + ")"
