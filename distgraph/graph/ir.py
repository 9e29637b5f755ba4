"""The graph IR: a Graph of Nodes in topological order, over the same op registry eager mode uses.

A value is named by a string: graph inputs (`%in0`, `%p0` for lifted parameters), constants (`%c0`,
arrays held by the graph) and node outputs (`%0`, `%1`, ...). A Node is one op application: the
registry op's name, the names of its inputs, its keyword attributes, and the output's shape, dtype
and device, plus a cost estimate (FLOPs and bytes moved) that partitioning and scheduling read.

Graphs are plain data: they print one line per node, convert to a msgpack-safe dict (`to_dict`,
saved with `dg.save`), and draw as Graphviz DOT. Passes never mutate a Graph; they build a new one
(`Graph.replace`).
"""

import math
from dataclasses import dataclass, field, replace

import numpy as np

from distgraph.errors import FileFormatError
from distgraph.io.objects import register

FORMAT = "distgraph.graph"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Spec:
    """Shape, dtype (numpy name) and device of one value."""

    shape: tuple
    dtype: str
    device: str = "cpu"

    @property
    def nbytes(self):
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def __str__(self):
        short = {"float64": "f64", "float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "bool": "b"}
        return f"{short.get(self.dtype, self.dtype)}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Node:
    """One op application; `name` is the value it produces."""

    name: str
    op: str
    inputs: tuple
    attrs: dict
    spec: Spec
    flops: int = 0
    bytes: int = 0

    def __str__(self):
        attrs = ", ".join(f"{k}={_show(v)}" for k, v in self.attrs.items() if k != "program")
        if self.op == "fused":
            attrs = "ops=" + "·".join(step[0] for step in self.attrs["program"])
        args = ", ".join(self.inputs) + (f"; {attrs}" if attrs else "")
        return f"{self.name} : {self.spec} = {self.op}({args})"


@register
@dataclass(frozen=True)
class Graph:
    __distgraph_format__ = FORMAT  # dg.save / dg.load store and rebuild it whole (io/objects.py)

    inputs: tuple  # of (name, Spec)
    nodes: tuple  # of Node, topological order
    outputs: tuple  # of value names
    constants: dict = field(default_factory=dict)  # name -> array

    def replace(self, **changes):
        return replace(self, **changes)

    @property
    def input_names(self):
        return tuple(n for n, _ in self.inputs)

    def specs(self):
        """name -> Spec for every value of the graph."""
        out = dict(self.inputs)
        for name, arr in self.constants.items():
            out[name] = Spec(tuple(arr.shape), arr.dtype.name, _device_name(arr))
        for node in self.nodes:
            out[node.name] = node.spec
        return out

    def consumers(self):
        """value name -> list of indices of nodes reading it."""
        users = {}
        for i, node in enumerate(self.nodes):
            for name in node.inputs:
                users.setdefault(name, []).append(i)
        return users

    @property
    def flops(self):
        return sum(n.flops for n in self.nodes)

    def __len__(self):
        return len(self.nodes)

    def __str__(self):
        head = ", ".join(f"{n}: {s}" for n, s in self.inputs)
        lines = [f"graph({head}) {{"]
        for name, arr in self.constants.items():
            lines.append(f"  {name} : {Spec(tuple(arr.shape), arr.dtype.name)} = const({_show_array(arr)})")
        lines += [f"  {node}" for node in self.nodes]
        lines.append(f"  return ({', '.join(self.outputs)})")
        lines.append("}")
        return "\n".join(lines)

    # ---- serialization ---------------------------------------------------------------------------
    def to_dict(self):
        """A msgpack-safe tree (arrays allowed, as `dg.save` stores them) with a format header."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "inputs": [[n, _spec_dict(s)] for n, s in self.inputs],
            "constants": {k: np.asarray(_host(v)) for k, v in self.constants.items()},
            "nodes": [
                {
                    "name": n.name,
                    "op": n.op,
                    "inputs": list(n.inputs),
                    "attrs": encode(n.attrs),
                    "spec": _spec_dict(n.spec),
                    "flops": n.flops,
                    "bytes": n.bytes,
                }
                for n in self.nodes
            ],
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_dict(cls, tree):
        if isinstance(tree, cls):  # dg.load already rebuilt it (io/objects.py)
            return tree
        if not isinstance(tree, dict) or tree.get("format") != FORMAT:
            raise FileFormatError(f"not a distgraph graph (format header {tree.get('format')!r})")
        if tree.get("version") != FORMAT_VERSION:
            raise FileFormatError(f"graph format version {tree.get('version')} unsupported (want {FORMAT_VERSION})")
        from distgraph.ops.registry import get_op

        nodes = []
        for d in tree["nodes"]:
            if d["op"] != "fused":
                get_op(d["op"])  # fail now, naming the op, rather than at run time
            spec = _spec(d["spec"])
            nodes.append(Node(d["name"], d["op"], tuple(d["inputs"]), decode(d["attrs"]), spec, d["flops"], d["bytes"]))
        return cls(
            inputs=tuple((n, _spec(s)) for n, s in tree["inputs"]),
            nodes=tuple(nodes),
            outputs=tuple(tree["outputs"]),
            constants={k: np.asarray(v) for k, v in tree["constants"].items()},
        )

    def save(self, path):
        from distgraph.io import save

        save(self.to_dict(), path)

    @classmethod
    def load(cls, path):
        from distgraph.io import load_as

        return load_as(path, cls.from_dict, "graph")

    def to_dot(self, colors=None):
        """Graphviz DOT text; `colors` maps node name -> fill color (partitions draw this way)."""
        lines = ["digraph G {", "  rankdir=TB; node [shape=box, fontname=monospace, fontsize=10];"]
        for name, spec in self.inputs:
            lines.append(f'  "{name}" [label="{name}\\n{spec}", shape=ellipse, style=filled, fillcolor="#dddddd"];')
        for name in self.constants:
            lines.append(f'  "{name}" [label="{name}", shape=plaintext];')
        for node in self.nodes:
            fill = (colors or {}).get(node.name, "#ffffff")
            label = f"{node.name} {node.op}\\n{node.spec}"
            lines.append(f'  "{node.name}" [label="{label}", style=filled, fillcolor="{fill}"];')
            lines += [f'  "{src}" -> "{node.name}";' for src in node.inputs]
        for i, name in enumerate(self.outputs):
            lines.append(f'  "out{i}" [shape=doublecircle, label="out{i}"]; "{name}" -> "out{i}";')
        lines.append("}")
        return "\n".join(lines)


# ---- cost model ------------------------------------------------------------------------------------
def cost(kind, in_specs, spec):
    """(flops, bytes) of one op: elementwise one flop per output element, matmul 2·M·N·K, reductions
    one per input element, data movement zero flops; bytes = everything read + written."""
    moved = spec.nbytes + sum(s.nbytes for s in in_specs)
    size = math.prod(spec.shape)
    if kind == "matmul" and in_specs and in_specs[0].shape:
        a = in_specs[0].shape
        # the inner dimension: a's last, or a's second to last for a.T @ b (matmul_tn, weight gradients),
        # recognisable by a's rows not being the output's
        inner = a[-2] if len(a) >= 2 and spec.shape and len(spec.shape) >= 2 and a[-2] != spec.shape[-2] else a[-1]
        return 2 * size * inner, moved
    if kind == "reduction" and in_specs:
        return math.prod(in_specs[0].shape), moved
    if kind in ("view", "index"):
        return 0, moved
    return size, moved


# ---- attribute encoding: msgpack has no slice, dtype or Ellipsis ----------------------------------
def encode(value):
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(encode(v) for v in value)
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, slice):
        return {"__slice__": [value.start, value.stop, value.step]}
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return {"__dtype__": np.dtype(value).name}
    if value is Ellipsis:
        return {"__ellipsis__": True}
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(value):
    if isinstance(value, dict):
        if "__slice__" in value:
            return slice(*value["__slice__"])
        if "__dtype__" in value:
            return np.dtype(value["__dtype__"])
        if "__ellipsis__" in value:
            return Ellipsis
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(decode(v) for v in value)
    return value


def _spec_dict(s):
    return {"shape": list(s.shape), "dtype": s.dtype, "device": s.device}


def _spec(d):
    return Spec(tuple(d["shape"]), d["dtype"], d["device"])


def _host(arr):
    return arr.get() if hasattr(arr, "get") and not isinstance(arr, np.ndarray) else arr


def _device_name(arr):
    return "cpu" if isinstance(arr, np.ndarray | np.generic) else f"cuda:{arr.device.id}"


def _show(v):
    if isinstance(v, np.dtype):
        return v.name
    if isinstance(v, slice):
        text = ":".join("" if x is None else str(x) for x in (v.start, v.stop, v.step))
        return text[:-1] if v.step is None else text  # `2:` stays a slice, not the index `2`
    if isinstance(v, tuple):
        return "(" + ",".join(_show(x) for x in v) + ")"
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return f"array{list(v.shape)}"
    return repr(v)


def _show_array(arr):
    return repr(_host(arr).item()) if arr.size == 1 else f"array{list(arr.shape)}"


def rename(graph, mapping, nodes=None):
    """The graph with every use of value `a` replaced by `mapping[a]` (chains followed)."""

    def resolve(name):
        while name in mapping:
            name = mapping[name]
        return name

    nodes = graph.nodes if nodes is None else nodes
    new_nodes = tuple(
        n if not any(i in mapping for i in n.inputs) else _with_inputs(n, tuple(resolve(i) for i in n.inputs))
        for n in nodes
        if n.name not in mapping
    )
    return graph.replace(nodes=new_nodes, outputs=tuple(resolve(o) for o in graph.outputs))


def _with_inputs(node, inputs):
    return replace(node, inputs=inputs)


# ---- aliasing -------------------------------------------------------------------------------------
FRESH_KINDS = ("elementwise", "matmul", "reduction")  # kinds whose forward returns a new array


def makes_fresh(node):
    """True when the node's forward always returns a new array (never its input nor a view of it).
    `sum_to` to an unchanged shape returns its input, so it is not fresh."""
    from distgraph.ops.registry import get_op

    if node.op == "fused":
        return True
    op = get_op(node.op)
    return op.kind in FRESH_KINDS and not op.view and node.op != "sum_to"


def exposed(graph):
    """Values whose memory a graph output may share: the outputs, and what they read through ops
    that may return their input or a view of it. A rewrite that makes one exposed value stand for
    another (or for an input or constant) would make a caller's outputs alias where eager's do not."""
    out = set(graph.outputs)
    for node in reversed(graph.nodes):
        if node.name in out and not makes_fresh(node):
            out.update(node.inputs)
    return out
