"""A Plan: how to run a Graph as several subgraphs. Plain data, so a LocalExecutor and the Ray scheduler
execute the same thing, and it prints, serializes with msgpack and draws.

- `subgraphs`: each a Graph plus the plan-level names of its inputs and outputs (a subgraph's i-th
  graph input is the plan value `inputs[i]`), a placement hint ("any", "stage:1", "replica:0"), a
  pipeline stage index (or -1) and, for a stage, its phase ("fwd" or "bwd": a training step's
  stage runs its forward part and, later, its backward part on the same worker).
- `edges`: (src subgraph, dst subgraph, value, bytes) for every value crossing between subgraphs.
- `inputs`/`outputs`: plan-level value names of the whole computation.
- kind "dag" runs subgraphs when their inputs exist; "pipeline" runs every stage once per
  micro-batch (inputs in `batch_inputs` split along dim 0, outputs combined by `combine`: "cat",
  "sum", "mean", or "cat_mean" — concatenated and divided by the number of parts: the gradient of a
  loss averaged over the parts w.r.t. a batch input); "replicas" runs the subgraphs as data-parallel copies over batch shards.
"""

from dataclasses import dataclass, field

from distgraph.errors import FileFormatError
from distgraph.graph.ir import Graph
from distgraph.io.objects import register

FORMAT = "distgraph.plan"
PALETTE = ("#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5", "#d9d9d9")


@dataclass(frozen=True)
class Subgraph:
    name: str
    graph: Graph
    inputs: tuple
    outputs: tuple
    placement: str = "any"
    stage: int = -1
    phase: str = ""  # "fwd" | "bwd" for pipeline stages

    @property
    def flops(self):
        return self.graph.flops


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    value: str
    bytes: int


@register
@dataclass(frozen=True)
class Plan:
    __distgraph_format__ = FORMAT  # dg.save / dg.load store and rebuild it whole (io/objects.py)

    kind: str
    subgraphs: tuple
    edges: tuple
    inputs: tuple
    outputs: tuple
    micro_batches: int = 1
    batch_inputs: tuple = ()
    combine: tuple = ()
    meta: dict = field(default_factory=dict)

    def __str__(self):
        lines = [
            f"Plan({self.kind}, {len(self.subgraphs)} subgraphs, inputs {len(self.inputs)}, outputs "
            f"{len(self.outputs)}" + (f", {self.micro_batches} micro-batches" if self.micro_batches > 1 else "") + ")"
        ]
        for sg in self.subgraphs:
            lines.append(
                f"  {sg.name}: {len(sg.graph)} nodes, {sg.flops / 1e6:.3f} MFLOP, placement {sg.placement}"
                + (f", stage {sg.stage}" if sg.stage >= 0 else "")
                + (f" {sg.phase}" if sg.phase else "")
                + f", in {len(sg.inputs)} out {len(sg.outputs)}"
            )
        for e in self.edges:
            lines.append(f"  {e.src} -> {e.dst}: {e.value} ({e.bytes} B)")
        return "\n".join(lines)

    def to_dict(self):
        return {
            "format": FORMAT,
            "version": 1,
            "kind": self.kind,
            "subgraphs": [
                {
                    "name": s.name,
                    "graph": s.graph.to_dict(),
                    "inputs": list(s.inputs),
                    "outputs": list(s.outputs),
                    "placement": s.placement,
                    "stage": s.stage,
                    "phase": s.phase,
                }
                for s in self.subgraphs
            ],
            "edges": [[e.src, e.dst, e.value, e.bytes] for e in self.edges],
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "micro_batches": self.micro_batches,
            "batch_inputs": list(self.batch_inputs),
            "combine": list(self.combine),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, tree):
        if isinstance(tree, cls):  # dg.load already rebuilt it (io/objects.py)
            return tree
        if not isinstance(tree, dict) or tree.get("format") != FORMAT:
            raise FileFormatError(f"not a distgraph plan (format header {tree.get('format')!r})")
        subgraphs = tuple(
            Subgraph(
                s["name"],
                Graph.from_dict(s["graph"]),
                tuple(s["inputs"]),
                tuple(s["outputs"]),
                s["placement"],
                s["stage"],
                s.get("phase", ""),  # plans saved before phases existed
            )
            for s in tree["subgraphs"]
        )
        return cls(
            kind=tree["kind"],
            subgraphs=subgraphs,
            edges=tuple(Edge(*e) for e in tree["edges"]),
            inputs=tuple(tree["inputs"]),
            outputs=tuple(tree["outputs"]),
            micro_batches=tree["micro_batches"],
            batch_inputs=tuple(tree["batch_inputs"]),
            combine=tuple(tree["combine"]),
            meta=tree.get("meta", {}),
        )

    def save(self, path):
        from distgraph.io import save

        save(self.to_dict(), path)

    @classmethod
    def load(cls, path):
        from distgraph.io import load_as

        return load_as(path, cls.from_dict, "plan")

    def to_dot(self):
        """One cluster per subgraph, nodes colored by subgraph, crossing edges labelled with bytes."""
        lines = ["digraph Plan {", "  rankdir=TB; node [shape=box, fontname=monospace, fontsize=10];"]
        for k, sg in enumerate(self.subgraphs):
            color = PALETTE[k % len(PALETTE)]
            lines.append(f'  subgraph "cluster_{sg.name}" {{ label="{sg.name} ({sg.placement})"; style=rounded;')
            for node in sg.graph.nodes:
                lines.append(
                    f'    "{sg.name}{node.name}" [label="{node.op}\\n{node.spec}", style=filled, fillcolor="{color}"];'
                )
                lines += [
                    f'    "{sg.name}{i}" -> "{sg.name}{node.name}";'
                    for i in node.inputs
                    if any(n.name == i for n in sg.graph.nodes)
                ]
            lines.append("  }")
        by_name = {sg.name: sg for sg in self.subgraphs}
        for e in self.edges:  # from the node that makes the value to each node that reads it on the other side
            readers = [n.name for n in by_name[e.dst].graph.nodes if e.value in n.inputs] if e.dst in by_name else []
            for reader in readers or [e.value]:
                lines.append(f'  "{e.src}{e.value}" -> "{e.dst}{reader}" [label="{e.value} {e.bytes}B", style=dashed];')
        lines.append("}")
        return "\n".join(lines)
