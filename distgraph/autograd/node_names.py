"""torch's names for autograd Nodes (`grad_fn.name()`, `repr(grad_fn)`), so printed graphs read as torch's.

torch names a Node after the ATen overload that recorded it: `MulBackward0`, `SumBackward1` (sum over
dims), `AddmmBackward0` (linear with a bias). Most distgraph ops are that ATen op, and their name is the
op's in CamelCase with `Backward0`. The table lists the ones whose torch name differs, or depends on
how the op was called (read from the Node's inputs and attrs). A torch op that is a composite in
distgraph (mean is a sum and a div, unsqueeze a reshape, t a permute) names its last Node itself with
`named` when it returns: one slot written, only for those ops, and read only when a name is asked for.
A custom Function's Node is `MyFnBackward`, with no overload number, as torch's.
"""

from distgraph.autograd.tensor import Tensor

_grad_fn_slot = Tensor.grad_fn.__get__  # the slot itself (a View's property does more)


def named(out, name):
    """Give the Node that made `out` torch's name `name` (a composite op's last Node); returns `out`."""
    node = _grad_fn_slot(out)
    if node is not None:
        node._torch_name = name
    return out


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


def _sub(node):
    # a Python number on the left comes as a 0-d constant: torch's rsub(Tensor, Scalar), `1 - x`
    return "RsubBackward1" if node.next[0] is None and (_ndims(node) or (1,))[0] == 0 else "SubBackward0"


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
    "getitem": _getitem,
    "reshape": "ViewBackward0",
    "reshape_copy": "UnsafeViewBackward0",
    "cast": "ToCopyBackward0",
    "contiguous": "CloneBackward0",
    "square": "PowBackward0",
    "clamp": "ClampBackward1",
    "sub": _sub,
    "amax": lambda node: "MaxBackward1" if node.attrs.get("evenly") else "AmaxBackward0",  # evenly: max()
    "amin": lambda node: "MinBackward1" if node.attrs.get("evenly") else "AminBackward0",
    "conv2d": "ConvolutionBackward0",
    "conv3d": "ConvolutionBackward0",
    "max_pool2d": "MaxPool2DWithIndicesBackward0",
    "pad": "ConstantPadNdBackward0",
    "batch_norm_train": "NativeBatchNormBackward0",
    "diagonal_embed": "DiagEmbedBackward0",
    "cross_entropy": "NllLossBackward0",  # (one fused op here; torch's is log_softmax then nll_loss)
    "layer_norm": "NativeLayerNormBackward0",
    "vector_norm": "LinalgVectorNormBackward0",
}


def torch_name(node):
    """The name torch gives the Node `node` (see the module docstring)."""
    marked = getattr(node, "_torch_name", None)
    if marked is not None:
        return marked
    op = node.op
    if op.kind == "custom":  # a user's Function keeps its class name's case: MyFnBackward
        return f"{op.name}Backward"
    name = op.name.removesuffix("_saving")  # (the variant that keeps forward's intermediates: the same op)
    known = _NAMES.get(name)
    if known is None:
        return f"{name.title().replace('_', '')}Backward0"
    return known if isinstance(known, str) else known(node)
