"""dg.autograd.Function: user-defined ops with a forward and a backward, as in PyTorch.

`MyFn.apply(*args)` runs `forward(ctx, *args)` under no_grad and records one Node whose backward
calls `backward(ctx, grad)`; the user's ctx rides along in the Node's `saved` slot.
"""

from distgraph.autograd import grad_mode
from distgraph.autograd.function import _record
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError


class FunctionCtx:
    """The `ctx` a custom Function's forward fills and its backward reads."""

    def __init__(self):
        self._saved = ()
        self._versions = ()
        self.needs_input_grad = ()
        self.non_differentiable = set()

    def save_for_backward(self, *tensors):
        self._saved = tensors
        self._versions = tuple(t._vc[0] if isinstance(t, Tensor) else None for t in tensors)

    @property
    def saved_tensors(self):
        if self._saved is None:
            raise AutogradError("saved_tensors: the saved tensors were freed by a previous backward")
        for i, (t, v) in enumerate(zip(self._saved, self._versions)):
            if isinstance(t, Tensor) and t._vc[0] != v:
                raise AutogradError(
                    f"one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: saved tensor {i} is at version {t._vc[0]}; expected version {v} instead."
                )
        return self._saved

    def mark_non_differentiable(self, *tensors):
        self.non_differentiable.update(id(t) for t in tensors)

    def set_materialize_grads(self, value):
        self.materialize_grads = value


class _CustomOp:
    """Duck-types the Op interface the engine needs, for one Function subclass."""

    kind = "custom"
    save = ()
    saves_output = False
    saves_extra = False
    view = False

    def __init__(self, fn_cls, tensor_positions):
        self.name = fn_cls.__name__
        self.fn_cls = fn_cls
        self.positions = tensor_positions

    def backward(self, node, grad):
        ctx = node.saved
        grads = self.fn_cls.backward(ctx, grad)
        if not isinstance(grads, tuple):
            grads = (grads,)
        if len(grads) != ctx.num_args:
            raise AutogradError(
                f"function {self.name}Backward returned an incorrect number of gradients "
                f"(expected {ctx.num_args}, got {len(grads)})"
            )
        out = []
        for pos in self.positions:
            g = grads[pos]
            if g is not None and not isinstance(g, Tensor):
                raise AutogradError(f"{self.name}.backward must return Tensors or None, got {type(g).__name__}")
            out.append(g)
        return tuple(out)


class Function:
    """Subclass with static `forward(ctx, *args)` and `backward(ctx, *grads)`; call `Cls.apply(*args)`."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args):
        ctx = FunctionCtx()
        ctx.num_args = len(args)
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        with grad_mode.no_grad():
            out = cls.forward(ctx, *args)
        if not isinstance(out, Tensor):
            raise AutogradError(f"{cls.__name__}.forward must return a single Tensor, got {type(out).__name__}")
        positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        inputs = tuple(args[i] for i in positions)
        if grad_mode.state.grad_enabled and any(t.requires_grad for t in inputs):
            out = Tensor(out.array, device=out.device)
            _record(_CustomOp(cls, positions), inputs, {}, ctx, out)
        return out
