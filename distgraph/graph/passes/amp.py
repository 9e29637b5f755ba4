"""Mixed precision: float16 (or bfloat16) compute for the matmul-heavy ops, float32 everywhere else.

The rewrite casts each float32 input of an allow-listed op (matmul, linear, conv, einsum and their
backward ops) to the low-precision dtype, runs the op there, and casts its result back to float32
under the original value name, so every other node — and the float32 parameters, the "master
weights" the optimizer updates — is unchanged. Reductions, softmax and losses stay in float32,
where float16's 10-bit mantissa and 65,504 range would lose the sums.

Gradients computed in float16 can underflow to zero or overflow to inf; `distgraph.amp.GradScaler`
scales the loss up, checks the gradients, skips (and counts) steps that overflowed and adapts the
scale — the usual dynamic loss scaling.
"""

import numpy as np

from distgraph.errors import ConfigError
from distgraph.graph.ir import Node, Spec

# every matmul- and conv-shaped op of the registry, forward and backward (a test checks they exist)
LOW_PRECISION_OPS = (
    "matmul", "matmul_nt", "matmul_tn", "linear", "linear_weight_grad", "conv2d", "conv2d_input_grad",
    "conv2d_weight_grad", "einsum",
)  # fmt: skip
SUFFIX = "~lp"


def amp(graph, dtype="float16", ops=LOW_PRECISION_OPS):
    if dtype not in ("float16", "bfloat16"):
        raise ConfigError(f"amp: dtype must be 'float16' or 'bfloat16', got {dtype!r}")
    if dtype == "bfloat16":
        try:
            np.dtype("bfloat16")
        except TypeError:
            raise ConfigError(
                "amp: bfloat16 needs numpy to know the dtype (pip install ml_dtypes; import ml_dtypes), "
                "or a GPU backend; use dtype='float16'"
            ) from None
    specs = graph.specs()
    nodes = []
    casted = {}  # (value, dtype) -> name of its low-precision copy
    for node in graph.nodes:
        if node.op not in ops or node.spec.dtype != "float32":
            nodes.append(node)
            continue
        ins = []
        for name in node.inputs:
            spec = specs[name]
            if spec.dtype != "float32":
                ins.append(name)
                continue
            key = (name, dtype)
            if key not in casted:
                casted[key] = f"{name}{SUFFIX}"
                low = Spec(spec.shape, dtype, spec.device)
                nodes.append(Node(casted[key], "cast", (name,), {"dtype": dtype}, low, 0, spec.nbytes))
            ins.append(casted[key])
        low_out = Node(node.name + SUFFIX, node.op, tuple(ins), node.attrs,
                       Spec(node.spec.shape, dtype, node.spec.device), node.flops, node.bytes // 2)  # fmt: skip
        nodes.append(low_out)
        nodes.append(Node(node.name, "cast", (low_out.name,), {"dtype": "float32"}, node.spec, 0, node.spec.nbytes))
    return graph.replace(nodes=tuple(nodes))
