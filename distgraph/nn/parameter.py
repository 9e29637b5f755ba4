"""Parameter: a Tensor that a Module registers as trainable when assigned as an attribute."""

from distgraph.autograd.tensor import Tensor


class Parameter(Tensor):
    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            from distgraph.ops.creation import empty

            data = empty(0)
        array = data.array if isinstance(data, Tensor) else data
        super().__init__(array, requires_grad=requires_grad, device=data.device if isinstance(data, Tensor) else None)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce__(self):
        return (_rebuild_parameter, (self.detach(), self.requires_grad))


def _rebuild_parameter(data, requires_grad):
    return Parameter(data, requires_grad)


class Buffer(Tensor):
    """Marks a tensor to register as a buffer (`self.running_mean = Buffer(...)`), as torch.nn.Buffer."""

    __slots__ = ("persistent",)

    def __init__(self, data, persistent=True):
        super().__init__(data.array if isinstance(data, Tensor) else data)
        self.persistent = persistent
