"""Elementwise fusion: chains and trees (and small DAGs) of elementwise nodes become one `fused` node.

Grouping, in reverse topological order: an elementwise node joins the group of its consumers when
all of them are in one group and it is not a graph output; otherwise it starts a group. So every
value inside a group is read only inside it, the group has one output (its last node), and placing
the fused node where that last node was keeps the order topological.

A fused node carries a small program: steps `[op, args, attrs]`, where an arg `k >= 0` is the fused
node's k-th input and `-(j+1)` is step j's result. `FusedKernel` runs it:
- CPU: each step is a numpy ufunc (or the op's registry writer) writing into a buffer preallocated
  once per thread (no temporaries); a step without either (isclose) runs its registry forward and
  copies into the buffer.
  Only the last step allocates, because its result leaves the kernel.
- GPU: the program, written with the registry forwards, is compiled once by `cupy.fuse` into one
  kernel; if cupy cannot fuse it, the steps run one by one.
"""

import functools
import threading

from distgraph.graph.ir import Node
from distgraph.ops import kernels
from distgraph.ops.registry import get_op

# registry op -> the numpy/cupy ufunc computing it exactly (its forward is that ufunc, or the same IEEE
# operation: square is x·x, reciprocal 1/x), so a step can write into a buffer with `out=`.
# Not here: ops whose forward checks its operands first (floor_divide, remainder, fmod refuse an integer
# zero divisor): they have writers (ops/writers.py) that run the same check, so compiled raises as eager;
# and pow, whose forward is numpy's power only for floats (`_pow_writer` below).
UFUNCS = {
    "add": "add", "sub": "subtract", "mul": "multiply", "div": "divide", "neg": "negative", "exp": "exp",
    "exp2": "exp2", "expm1": "expm1", "log": "log", "log2": "log2", "log10": "log10", "log1p": "log1p",
    "sqrt": "sqrt", "square": "square", "reciprocal": "reciprocal", "tanh": "tanh", "sin": "sin", "cos": "cos",
    "tan": "tan", "asin": "arcsin", "acos": "arccos", "atan": "arctan", "sinh": "sinh", "cosh": "cosh",
    "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh", "abs": "absolute",
    "floor": "floor", "ceil": "ceil", "trunc": "trunc", "maximum": "maximum", "minimum": "minimum",
    "atan2": "arctan2",
    "eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
    "logical_and": "logical_and", "logical_or": "logical_or", "logical_xor": "logical_xor",
    "logical_not": "logical_not", "bitwise_and": "bitwise_and", "bitwise_or": "bitwise_or",
    "bitwise_xor": "bitwise_xor", "bitwise_not": "invert", "isnan": "isnan", "isinf": "isinf",
    "isfinite": "isfinite",
}  # fmt: skip


def _pow_writer(xp):
    """pow into `out`: numpy's power where the registry forward is power (a float operand); the forward
    itself, copied into `out`, for a bool base (which stays bool), for integer ** integer (a negative
    exponent gives torch's integer result where numpy's power raises) and for a float32/float64 base with a
    0-d exponent (torch's special cases, `kernels.pow`: x·x·x for 3, so a captured graph keeps eager's bits)."""
    forward = get_op("pow").forward

    def pow_into(a, b, out=None):
        special = b.ndim == 0 and a.dtype.kind == "f" and a.dtype.itemsize >= 4 and float(b) in kernels.POW_SPECIAL
        if special or a.dtype.kind == "b" or (a.dtype.kind in "iu" and b.dtype.kind in "iu"):
            result = forward(xp, a, b)
            if out is None:
                return result
            xp.copyto(out, result, casting="unsafe")
            return out
        return xp.power(a, b) if out is None else xp.power(a, b, out=out)

    return pow_into


_WRITERS = {"pow": _pow_writer}  # ops whose writer lives here rather than on the registry op (ops/writers.py)


def writes_out(op, attrs=None):
    """True when registry op `op` with `attrs` can write its result into a given buffer: a ufunc (no
    attributes), or an op with a writer (`Op.writer`, which takes the op's attributes as keywords)."""
    if op in UFUNCS or op in _WRITERS:
        return not attrs
    return get_op(op).writer_factory is not None


@functools.cache
def out_function(xp, op):
    """`f(*inputs, out=None, **attrs)` computing registry op `op` into `out` with `xp`, or None."""
    if op in UFUNCS:
        return getattr(xp, UFUNCS[op])
    if op in _WRITERS:
        return _WRITERS[op](xp)
    factory = get_op(op).writer_factory
    return factory(xp) if factory is not None else None


def compute_into(op, writer, xp, vals, attrs, out=None):
    """Registry op `op` on `vals` into `out` (None: a new array) with its `writer` (`out_function`),
    or, where it has none on this device, its forward copied into `out`."""
    if writer is not None:
        return writer(*vals, out=out, **attrs)
    result = op.forward(xp, *vals, **attrs)
    if out is None:
        return result
    xp.copyto(out, result, casting="unsafe")  # a cast merged into its step writes another dtype
    return out


def is_elementwise(node):
    return node.op != "fused" and get_op(node.op).kind == "elementwise" and node.op not in ("vjp",)


def fuse(graph, min_size=2):
    users = graph.consumers()
    outputs = set(graph.outputs)
    group = {}  # node index -> group id (the index of the group's last node)
    for i in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[i]
        if not is_elementwise(node):
            continue
        targets = {group.get(j) for j in users.get(node.name, ())}
        if node.name not in outputs and len(targets) == 1 and None not in targets:
            group[i] = targets.pop()
        else:
            group[i] = i
    members = {}
    for i, g in group.items():
        members.setdefault(g, []).append(i)
    nodes = []
    for i, node in enumerate(graph.nodes):
        g = group.get(i)
        if g is None or len(members[g]) < min_size:
            nodes.append(node)
        elif g == i:
            nodes.append(_fused_node(graph, sorted(members[g])))
    return graph.replace(nodes=tuple(nodes))


def _fused_node(graph, indices):
    steps, specs, inputs, local = [], [], [], {}
    flops = 0
    for j, i in enumerate(indices):
        node = graph.nodes[i]
        args = []
        for name in node.inputs:
            if name in local:
                args.append(-(local[name] + 1))
            else:
                if name not in inputs:
                    inputs.append(name)
                args.append(inputs.index(name))
        steps.append([node.op, args, dict(node.attrs)])
        specs.append([list(node.spec.shape), node.spec.dtype])
        local[node.name] = j
        flops += node.flops
    last = graph.nodes[indices[-1]]
    known = graph.specs()
    moved = last.spec.nbytes + sum(known[n].nbytes for n in inputs)
    return Node(last.name, "fused", tuple(inputs), {"program": steps, "specs": specs}, last.spec, flops, moved)


class FusedKernel:
    """Runs one fused node's program; build once per node, call many times (thread-safe)."""

    def __init__(self, node, xp):
        self.steps = [
            (get_op(op), args, attrs, out_function(xp, op) if writes_out(op, attrs) else None)
            for op, args, attrs in node.attrs["program"]
        ]
        self.xp = xp
        self.specs = [(tuple(shape), dtype) for shape, dtype in node.attrs["specs"]]
        self.local = threading.local()
        self.gpu = xp.__name__ == "cupy"
        self.kernel = self._cupy_kernel() if self.gpu else None

    def _buffers(self):
        bufs = getattr(self.local, "bufs", None)
        if bufs is None:
            bufs = [self.xp.empty(s[0], dtype=s[1]) for s in self.specs[:-1]]
            self.local.bufs = bufs
        return bufs

    def __call__(self, xp, *arrays, out=None, **_attrs):
        if self.kernel is not None:
            return self.kernel(*arrays)
        return self.run_steps(arrays, out)

    def run_steps(self, arrays, out=None):
        xp = self.xp
        bufs = self._buffers() if not self.gpu else None
        results = []
        last = len(self.steps) - 1
        for j, (op, args, attrs, ufunc) in enumerate(self.steps):
            vals = [arrays[a] if a >= 0 else results[-a - 1] for a in args]
            target = out if j == last else (bufs[j] if bufs is not None else None)
            results.append(compute_into(op, ufunc, xp, vals, attrs, target))
        return results[-1]

    def _cupy_kernel(self):
        from distgraph.backend import cupy_module

        cp = cupy_module()
        steps = self.steps

        def program(*arrays):
            results = []
            for op, args, attrs, _ in steps:
                vals = [arrays[a] if a >= 0 else results[-a - 1] for a in args]
                results.append(op.forward(cp, *vals, **attrs))
            return results[-1]

        fused = cp.fuse(program)

        def call(*arrays):
            try:
                return fused(*arrays)
            except Exception:  # cupy.fuse supports a subset of numpy: fall back to one kernel per step
                self.kernel = None
                return self.run_steps(arrays)

        return call
