"""Code generation: a Graph becomes the Python source of ONE straight-line function, compiled once.

Why: interpreting a graph costs, per node, a Python loop turn, an argument list and a dict of
attributes, which on tiny tensors is more than the numpy call itself. The generated function makes
one numpy call per node (one per step of a fused node) and nothing else.

What each node becomes (on numpy):
- an elementwise op with a ufunc (`fusion.out_function`): `v = add(a, b, out=buf)`; an op with a
  registry writer (relu, sigmoid, clamp, where, elu, …) likewise, attributes as keywords;
- `matmul`: `dot(a, b, out=buf)` when both operands are 2-D (numpy's dot takes the BLAS path
  directly, about half the cost of matmul on tiny matrices), else `matmul(a, b, out=buf)`;
- `linear` and `linear_weight_grad` on 2-D operands of one dtype: `dot(x, w.T, out=buf)` then
  `add(buf, b, out=buf)`, and `dot(g.T, x, out=buf)`. The registry forwards allocate their result
  every call; in buffers, a step allocates nothing, which matters most when threads run subgraphs
  side by side (each thread's malloc arena otherwise grows, trims and faults its pages in again);
- a fused node: its program inlined as a ufunc sequence, intermediate steps in scratch buffers;
  a step without a ufunc calls its registry forward;
- every other node (the interpreter's part): one call of its registry forward with its attributes.
On cupy, a fused node is one call of its `FusedKernel` (a `cupy.fuse` kernel) instead.

Buffers (with a memory plan): a value written with `out=` gets a preallocated buffer, unless it may
be returned (a graph output, or aliased by one through a view or an op that may return a view: such
values are allocated per call, so a caller never sees its results overwritten by the next call).
A buffer is taken when its value is made and given back once the last reader of every value that
may alias it has run; an elementwise node may take back the buffer of an input it is the last reader
of (in place). All buffers are views of one arena, placed by `arena.place` so that buffers alive
at the same time never share bytes: the arena is as big as the most buffered bytes alive at once.
The arena stays whole for the call, so values whose bytes would be better freed early — those alive
while the graph's outputs accumulate, like the activations a training step keeps for backward —
are allocated per call instead (`_unbuffered`). Values not in buffers are deleted after their last
reader (`plan.free_after`), and `plan.inplace` nodes write into their dying input, as the
interpreter does. `Program.instantiate` makes a function with its own arena; the Runner gives each
concurrent call its own instance, so calls never share scratch memory.

Outputs that may share a constant's memory are returned as copies (the constant serves every call).
A 0-d output is returned as a 0-d array (numpy computes 0-d results as immutable scalars, into which a
caller's in-place op, `out += 1`, could not write), as eager ops return them.

Write-back: `write_back={output index: input index}` stores an output into an input's array (an
optimizer's updated parameter into the parameter): with `out=` directly when the producing node is
elementwise and no later node reads the input, else by a copy before returning.

Safety: the source text is built only from identifiers this module makes up (`a0`, `v3`, `b1`, `k2`),
attribute names checked to be plain identifiers, and Python syntax. Every value that comes from the
graph or the op registry — constants, attribute values, ufuncs, forward functions — enters as a
closure variable, never as text. No code from users or files is executed: a graph loaded from a
file can only name registry ops, whose own forward functions are what the generated code calls.
"""

import keyword
from dataclasses import dataclass

import numpy as np

from distgraph.backend import device, to_device
from distgraph.errors import DistgraphError
from distgraph.graph import arena
from distgraph.graph.ir import makes_fresh
from distgraph.graph.passes.fusion import UFUNCS, FusedKernel, out_function, writes_out
from distgraph.ops.registry import get_op


@dataclass
class Program:
    """Generated source plus the closure values and buffer layout one instance needs."""

    source: str
    factory: object  # factory(*closure, *buffers) -> run(*arrays) -> list of arrays
    closure: tuple
    buffers: tuple  # (shape, dtype, byte offset in the arena) per preallocated buffer
    arena_bytes: int  # one allocation holds every buffer; buffers whose lifetimes overlap never overlap in it
    device: object

    def instantiate(self):
        """A new `run` function with its own buffers (one per concurrent call)."""
        xp = self.device.xp
        if self.device.type == "cpu":
            return self.factory(*self.closure, *self._views(xp))
        with xp.cuda.Device(self.device.index):
            return self.factory(*self.closure, *self._views(xp))

    def _views(self, xp):
        memory = xp.empty(self.arena_bytes, dtype=np.uint8)
        return [
            memory[offset : offset + _nbytes(shape, dtype)].view(dtype).reshape(shape)
            for shape, dtype, offset in self.buffers
        ]


def generate(graph, dev, plan=None, write_back=None):
    """Program for `graph` on device `dev`; `plan` (memory.plan) enables buffers, frees and in-place."""
    return _Emitter(graph, device(dev), plan, dict(write_back or {})).program()


class _Emitter:
    def __init__(self, graph, dev, plan, write_back):
        self.graph, self.dev, self.xp, self.plan = graph, dev, dev.xp, plan
        self.numpy = dev.type == "cpu"
        self.closure, self.bound = [], {}  # closure values and id(value) -> name
        self.now = 0  # the node being emitted
        self.names = {n: f"a{i}" for i, (n, _) in enumerate(graph.inputs)}
        for name, arr in graph.constants.items():  # a loaded graph holds numpy constants: move them
            self.names[name] = self.bind(to_device(self.xp.asarray(arr) if self.numpy else arr, dev))
        self.specs = graph.specs()
        self._aliases()
        self.write_back_all = {graph.outputs[o]: graph.inputs[i][0] for o, i in write_back.items()}

    # ---- names ------------------------------------------------------------------------------------
    def bind(self, value):
        """A closure name holding `value` (deduplicated by identity)."""
        name = self.bound.get(id(value))
        if name is None:
            name = self.bound[id(value)] = f"k{len(self.closure)}"
            self.closure.append(value)
        return name

    def acquire(self, spec):
        """A buffer for a value made at the current node: one this node just released (the value is
        then written in place over a dying input), else a new one, placed in the arena at the end."""
        key = (tuple(spec.shape), spec.dtype)
        free = self.pool.get(key)
        if free:
            buf = free.pop()
            self.lifetimes[buf][1] = None
            return buf
        self.buffers.append(key)
        buf = f"b{len(self.buffers) - 1}"
        self.lifetimes[buf] = [self.now, None]
        return buf

    def release(self, buf, spec):
        self.lifetimes[buf][1] = self.now
        self.pool.setdefault((tuple(spec.shape), spec.dtype), []).append(buf)

    def _arena(self):
        """(shape, dtype, offset) per buffer and the arena's size: `arena.place` over their lifetimes."""
        sizes = [_nbytes(shape, dtype) for shape, dtype in self.buffers]
        end = len(self.graph.nodes)
        spans = [(a, end if b is None else b) for a, b in (self.lifetimes[f"b{k}"] for k in range(len(sizes)))]
        offsets, total = arena.place(sizes, spans)
        return tuple((*key, off) for key, off in zip(self.buffers, offsets)), total

    # ---- aliasing and lifetimes -----------------------------------------------------------------
    def _aliases(self):
        """roots[v]: values whose memory v may share; ends[i]: roots whose last alias is read at node i."""
        graph = self.graph
        self.roots = {n: {n} for n, _ in graph.inputs} | {n: {n} for n in graph.constants}
        for node in graph.nodes:
            fresh = makes_fresh(node)
            roots = {node.name}
            if not fresh:
                for i in node.inputs:
                    roots |= self.roots[i]
            self.roots[node.name] = roots
        end = len(graph.nodes)
        self.returned = set().union(*(self.roots[o] for o in graph.outputs)) if graph.outputs else set()
        last = {}
        for i, node in enumerate(graph.nodes):
            for name in node.inputs:
                for r in self.roots[name]:
                    last[r] = i
        for o in graph.outputs:
            for r in self.roots[o]:
                last[r] = end
        self.last_use = {n.name: last.get(n.name, i) for i, n in enumerate(graph.nodes)}
        self.ends = [[] for _ in graph.nodes]
        for r, i in last.items():
            if i < end:
                self.ends[i].append(r)

    # ---- emission -----------------------------------------------------------------------------------
    def program(self):
        self._emit(unbuffered=set())
        drop = self._unbuffered()
        if drop:
            self._emit(drop)
        graph = self.graph
        params = ", ".join(f"a{i}" for i in range(len(graph.inputs)))
        cells = ", ".join([f"k{i}" for i in range(len(self.closure))] + [f"b{i}" for i in range(len(self.buffers))])
        body = "\n".join("        " + line for line in self.lines)
        source = f"def _factory({cells}):\n    def run({params}):\n{body}\n    return run\n"
        # a distgraph module's name: numpy's RuntimeWarnings from the generated code are filtered as the eager
        # ops' are (distgraph/__init__.py), which compute the same values without printing them
        namespace = {"__name__": "distgraph.graph.generated"}
        exec(compile(source, "<distgraph codegen>", "exec"), namespace)  # noqa: S102 - generated source only
        buffers, arena_bytes = self._arena()
        return Program(source, namespace["_factory"], tuple(self.closure), buffers, arena_bytes, self.dev)

    def _emit(self, unbuffered):
        """Write the function's lines; values in `unbuffered` are allocated per call, not in the arena."""
        graph = self.graph
        self.unbuffered = unbuffered
        self.write_back = dict(self.write_back_all)
        self.lines, self.buffers, self.pool, self.lifetimes = [], [], {}, {}
        self.owner = {}  # root value -> buffer name it occupies now
        self.buffered = {}  # value given a buffer -> the node that made it
        self.allocated = {}  # value allocated by its node's call -> that node
        for i, node in enumerate(graph.nodes):
            self.now = i
            self.pool.clear()  # only this node's inputs may be overwritten in place by its output
            self.node(i, node)
            if self.plan is not None:
                dead = [n for n in self.plan.free_after[i] if n not in self.buffered]
                if dead:
                    self.lines.append("del " + ", ".join(self.names[n] for n in dead))
        for value, dest in self.write_back.items():  # the ones no node could write in place
            self.lines.append(f"{self.bind(self.xp.copyto)}({self.names[dest]}, {self.names[value]})")
        self.lines.append(f"return [{', '.join(self._returned(o) for o in graph.outputs)}]")

    def _returned(self, name):
        """An output as returned: a copy where it may share a constant's memory (a folded result, a
        closure tensor), since the caller may write into it and the constant serves every call; a 0-d
        one as an array (see the module docstring)."""
        shares_constant = any(r in self.graph.constants for r in self.roots[name])
        if not self.specs[name].shape:
            return f"{self.bind(self.xp.array if shares_constant else self.xp.asarray)}({self.names[name]})"
        return f"{self.names[name]}.copy()" if shares_constant else self.names[name]

    def _unbuffered(self):
        """Values to take out of the arena so that the arena plus the per-call allocations peak lowest.

        The arena is one allocation, as big as the most buffered bytes alive at once, and it stays
        whole while values allocated per call (the graph's outputs among them) come and go. A value
        that stays buffered across the time the outputs accumulate (an activation kept for backward
        while the gradients are made) holds arena bytes the outputs cannot use; allocated per call it
        is freed as backward reads it. Values are taken out longest-lived first while that lowers
        max(buffered bytes alive) + max(allocated bytes alive); per-call allocations cost time, so
        the arena keeps everything that does not lower the peak."""
        if self.plan is None or not self.buffered:
            return set()
        steps = len(self.graph.nodes) + 1
        held, loose = np.zeros(steps), np.zeros(steps)
        for v, i in self.allocated.items():
            loose[i : self.last_use[v] + 1] += self.specs[v].nbytes
        for buf, (a, b) in self.lifetimes.items():
            held[a : (steps - 1 if b is None else b) + 1] += _nbytes(*self.buffers[int(buf[1:])])
        # moved value by value: a buffer reused in place holds two values in turn
        spans = {v: (i, self.last_use[v]) for v, i in self.buffered.items()}
        best, chosen, drop = held.max() + loose.max(), 0, []
        for v in sorted(spans, key=lambda v: spans[v][0] - spans[v][1]):
            a, b = spans[v]
            held[a : b + 1] -= self.specs[v].nbytes
            loose[a : b + 1] += self.specs[v].nbytes
            drop.append(v)
            if held.max() + loose.max() < best:
                best, chosen = held.max() + loose.max(), len(drop)
        return set(drop[:chosen])

    def node(self, i, node):
        out = self.names[node.name] = f"v{i}"
        args = [self.names[n] for n in node.inputs]
        inline = node.op == "fused" and self.numpy
        writer = self._writer(node)
        if writer is None and not inline:
            self.lines.append(f"{out} = {self._forward(node, args)}")
            self._allocated(i, node, None)
            self._release(i, node, early=False)
            return
        scratch = self._scratch(node) if inline else []
        if node.op not in _NOT_IN_PLACE:  # elementwise: may overwrite an input read only directly here
            self._release(i, node, early=True)
        target = self._target(i, node) if writer is not None else None
        if inline:
            self._fused(node, args, scratch, target, out)
        else:
            call = (
                f"{self.bind(writer)}({', '.join(args)}{_out(target, self.numpy, node.op)}{self._kwargs(node.attrs)})"
            )
            self.lines.append(f"{out} = {call}")
        self._allocated(i, node, target)
        for buf, spec in {buf: spec for buf, spec, _ in scratch if buf is not None}.items():
            self.release(buf, spec)
        self._release(i, node, early=False)

    def _allocated(self, i, node, target):
        """Note node i's value when its call allocates it (no target, and not a view of an input)."""
        if target is None and self.roots[node.name] == {node.name} and node.spec.shape:
            self.allocated[node.name] = i

    def _writer(self, node):
        """The array function that writes this node's result into `out=` (for a fused node: its last
        step's ufunc), or None when the node's forward must make its own result."""
        if not node.spec.shape:
            return None  # 0-d results are numpy scalars, not writable buffers
        if node.op == "fused":
            op, _, attrs = node.attrs["program"][-1]
            return self._ufunc(op, attrs) if self.numpy else None
        if self._ufunc(node.op, node.attrs):
            return self._ufunc(node.op, node.attrs)
        if node.attrs:
            return None
        if node.op == "matmul":
            a, b = (self.specs[n] for n in node.inputs)
            same = a.dtype == b.dtype == node.spec.dtype
            return self.xp.dot if same and len(a.shape) == len(b.shape) == 2 else self.xp.matmul
        if node.op in _LINEAR_WRITERS and self.numpy:
            specs = [self.specs[n] for n in node.inputs]
            if (
                all(len(sp.shape) in (1, 2) and sp.dtype == node.spec.dtype for sp in specs)
                and len(specs[0].shape) == 2
            ):
                return _LINEAR_WRITERS[node.op][len(specs)]
        return None

    def _target(self, i, node):
        """Where node i writes: an input (write-back), a dying input (in-place), a buffer, or None."""
        dest = self.write_back.get(node.name)
        if dest is not None and self._can_write_back(i, node, dest):
            del self.write_back[node.name]
            return self.names[dest]
        src = self.plan.inplace.get(i) if self.plan is not None else None
        if src is not None and src not in self.buffered:
            return self.names[src]
        if self.plan is None or node.name in self.returned or node.name in self.unbuffered:
            return None
        self.buffered[node.name] = i
        buf = self.owner[node.name] = self.acquire(node.spec)
        return buf

    def _can_write_back(self, i, node, dest):
        """Safe when the node is elementwise, shapes match, and nothing reads `dest` (or a view of it) later."""
        later = any(dest in self.roots[n] for other in self.graph.nodes[i + 1 :] for n in other.inputs)
        return (
            node.op not in _NOT_IN_PLACE and not later and dest not in self.returned and self.specs[dest] == node.spec
        )

    def _release(self, i, node, early):
        """Free the buffers whose last alias is read at node i. `early` (before the output is chosen)
        frees only those node i reads directly, never through a view: an elementwise node may then
        overwrite them in place."""
        for r in self.ends[i]:
            buf = self.owner.get(r)
            if buf is None or (early and any(n != r and r in self.roots[n] for n in node.inputs)):
                continue
            del self.owner[r]
            self.release(buf, self.specs[r])

    def _scratch(self, node):
        """Per step of a fused program but the last: (buffer or None, spec, name of its value).

        An intermediate ufunc step gets a buffer, reusing one of an earlier step it is the last
        reader of. A `cast` of a ufunc step read only by it costs nothing: that step writes straight
        into a buffer of the cast's dtype (a ufunc casts its result into `out=` as astype does)."""
        steps, specs = node.attrs["program"], node.attrs["specs"]
        last_read = {}
        for j, (_, args, _) in enumerate(steps):
            for a in args:
                if a < 0:
                    last_read.setdefault(-a - 1, []).append(j)
        dtype, merged = {}, {}  # step -> dtype it writes; cast step -> the step it merges into
        for k, (op, args, _) in enumerate(steps[:-1]):
            src = -args[0] - 1 if op == "cast" and len(args) == 1 and args[0] < 0 else None
            if src is None or last_read[src] != [k] or steps[src][0] not in UFUNCS or steps[src][2]:
                continue
            if self.plan is None or not tuple(specs[src][0]):  # no buffer for it below: the cast must run itself
                continue
            if self.numpy and self.xp.can_cast(specs[src][1], specs[k][1], "same_kind"):
                merged[k], dtype[src] = src, specs[k][1]
        plan = []
        for j, (op, args, attrs) in enumerate(steps[:-1]):
            spec = _Spec(tuple(specs[j][0]), dtype.get(j, specs[j][1]))
            if j in merged:
                plan.append((plan[merged[j]][0], spec, plan[merged[j]][2]))
                continue
            buf = None
            if spec.shape and self.plan is not None and self._ufunc(op, attrs):
                dying = [plan[-a - 1] for a in args if a < 0 and last_read[-a - 1][-1] == j]
                reuse = [b for b, sp, _ in dying if b is not None and sp == spec]
                buf = reuse[0] if reuse else self.acquire(spec)
            plan.append((buf, spec, f"t{j}"))
        return plan

    def _fused(self, node, args, scratch, target, out):
        steps = node.attrs["program"]
        value = [name for _, _, name in scratch] + [out]
        for j, (op, step_args, attrs) in enumerate(steps):
            if j < len(steps) - 1 and value[j] != f"t{j}":
                continue  # a cast merged into the step that makes value[j]
            vals = ", ".join(args[a] if a >= 0 else value[-a - 1] for a in step_args)
            where = target if j == len(steps) - 1 else scratch[j][0]
            ufunc = self._ufunc(op, attrs)
            if ufunc:
                line = f"{value[j]} = {self.bind(ufunc)}({vals}{_out(where, self.numpy, op)}{self._kwargs(attrs)})"
            else:
                line = f"{value[j]} = {self._call(get_op(op), attrs, vals)}"
            self.lines.append(line)

    def _ufunc(self, op, attrs=None):
        """The numpy/cupy function writing registry op `op` with `attrs` into `out=` (a ufunc, or the
        op's registry writer, which takes the attributes as keywords), or None."""
        return out_function(self.xp, op) if writes_out(op, attrs) else None

    def _forward(self, node, args):
        if node.op == "fused":  # cupy: one cupy.fuse kernel
            return f"{self.bind(FusedKernel(node, self.xp))}({self.bind(self.xp)}, {', '.join(args)})"
        return self._call(get_op(node.op), node.attrs, ", ".join(args))

    def _kwargs(self, attrs):
        """`, key=k3` per attribute (its value a closure variable), names checked to be identifiers."""
        for key in attrs:
            if not key.isidentifier() or keyword.iskeyword(key):
                raise DistgraphError(f"attribute name {key!r} is not a Python identifier")
        return "".join(f", {k}={self.bind(v)}" for k, v in attrs.items())

    def _call(self, op, attrs, vals):
        call = f"{self.bind(op.forward)}({self.bind(self.xp)}{', ' if vals else ''}{vals}{self._kwargs(attrs)})"
        return call + "[0]" if op.saves_extra else call


def _nbytes(shape, dtype):
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _linear_into(x, w, out=None):
    return np.dot(x, w.T, out)


def _linear_bias_into(x, w, b, out=None):
    out = np.dot(x, w.T, out)
    return np.add(out, b, out)


def _linear_weight_grad_into(g, x, out=None):
    return np.dot(g.T, x, out)


# op -> {number of inputs: function writing the 2-D result into its last argument}
_LINEAR_WRITERS = {
    "linear": {2: _linear_into, 3: _linear_bias_into},
    "linear_weight_grad": {2: _linear_weight_grad_into},
}
_NOT_IN_PLACE = ("matmul", *_LINEAR_WRITERS)  # BLAS writers: `out` may not be one of their inputs


@dataclass(frozen=True)
class _Spec:
    shape: tuple
    dtype: str


_OUT_BY_KEYWORD = frozenset({"maximum", "minimum"})  # numpy 2 deprecates their positional out


def _out(target, numpy, op):
    """The out argument: positional on numpy (its ufuncs and dot parse it faster than a keyword)."""
    if target is None:
        return ""
    return f", {target}" if numpy and op not in _OUT_BY_KEYWORD else f", out={target}"
