"""torch's names for autograd Nodes (`grad_fn.name()`, `repr(grad_fn)`), so printed graphs read as torch's.

torch names a Node after the ATen overload that recorded it: `MulBackward0`, `SumBackward1` (sum over
dims), `AddmmBackward0` (linear with a bias). Most distgraph ops are that ATen op, and their name is the
op's in CamelCase with `Backward0`. The table lists the ones whose torch name differs, or depends on
how the op was called (read from the Node's inputs and attrs). A few torch ops are composites in
distgraph (mean, nll_loss, mse_loss: their last op is a div or a where) and keep that op's name. A
custom Function's Node is `MyFnBackward`, with no overload number, as torch's.
"""


def _ndims(node):
    """Its inputs' ndims (None once backward freed them without a trace: the rules guess the commonest)."""
    inputs = node.inputs
    if inputs is None:
        return None
    return tuple(len(t[0]) if type(t) is tuple else t.ndim for t in inputs)  # (tuple: release kept metadata)


def _matmul(node):
    dims = _ndims(node) or (2, 2)
    return {(2, 2): "MmBackward0", (1, 1): "DotBackward0", (2, 1): "MvBackward0", (1, 2): "SqueezeBackward4"}.get(
        dims, "BmmBackward0" if dims == (3, 3) else "UnsafeViewBackward0"
    )


def _linear(node):
    ndim, bias = (_ndims(node) or (2,))[0], len(node.next) > 2
    if ndim == 2:
        return "AddmmBackward0" if bias else "MmBackward0"
    if ndim == 1 and not bias:
        return "SqueezeBackward4"
    return "ViewBackward0" if bias else "UnsafeViewBackward0"


def _sum(node):
    attrs = node.attrs
    every = len(attrs["axes"]) == (_ndims(node) or (len(attrs["axes"]),))[0]
    return "SumBackward0" if every and not attrs["keepdim"] else "SumBackward1"


def _pow(node):
    # a Python number comes as a 0-d constant: torch's pow(Tensor, Scalar)
    return "PowBackward0" if node.next[1] is None and (_ndims(node) or (0, 0))[1] == 0 else "PowBackward1"


def _permute(node):
    """transpose(1, 2) as torch's; on 2-D, `.T` and permute(1, 0) (torch's t() is TBackward0)."""
    dims = node.attrs["dims"]
    moved = [i for i, d in enumerate(dims) if i != d]
    return "TransposeBackward0" if len(moved) == 2 and len(dims) > 2 else "PermuteBackward0"


def _getitem(node):
    """torch indexes one dim after another; the last that does something names the Node."""
    index = node.attrs["index"]
    for part in reversed(index if isinstance(index, tuple) else (index,)):
        if isinstance(part, slice):
            if part != slice(None):
                return "SliceBackward0"
        elif isinstance(part, int):
            return "SelectBackward0"
        elif part is not Ellipsis:
            return "UnsqueezeBackward0" if part is None else "IndexBackward0"
    return "SliceBackward0"


_NAMES = {
    "matmul": _matmul,
    "linear": _linear,
    "sum": _sum,
    "pow": _pow,
    "permute": _permute,
    "getitem": _getitem,
    "reshape": "ViewBackward0",
    "reshape_copy": "UnsafeViewBackward0",
    "cast": "ToCopyBackward0",
    "contiguous": "CloneBackward0",
    "square": "PowBackward0",
    "clamp": "ClampBackward1",
    "cross_entropy": "NllLossBackward0",  # (one fused op here; torch's is log_softmax then nll_loss)
    "layer_norm": "NativeLayerNormBackward0",
    "vector_norm": "LinalgVectorNormBackward0",
}


def torch_name(node):
    """The name torch gives the Node `node` (see the module docstring)."""
    op = node.op
    if op.kind == "custom":  # a user's Function keeps its class name's case: MyFnBackward
        return f"{op.name}Backward"
    name = op.name.removesuffix("_saving")  # (the variant that keeps forward's intermediates: the same op)
    known = _NAMES.get(name)
    if known is None:
        return f"{name.title().replace('_', '')}Backward0"
    return known if isinstance(known, str) else known(node)
