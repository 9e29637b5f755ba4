"""Parameter and Buffer: Tensor markers a Module registers when they are assigned as attributes.

A Parameter is a leaf that requires grad and shares its array with the tensor it wraps, so
`Parameter(t)` costs no copy; Module.to() swaps the array inside it, keeping the object (and every
optimizer reference to it) alive. Buffer marks non-trained state (running statistics).
"""

from distgraph.autograd.storage import deepcopy_array
from distgraph.autograd.tensor import Tensor


class Parameter(Tensor):
    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            from distgraph.ops.creation import empty

            data = empty(0)
        if isinstance(data, Tensor):
            super().__init__(data.array, requires_grad=requires_grad, device=data.device)
        else:
            super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce__(self):
        return (_rebuild_parameter, (self.detach(), self.requires_grad))

    def __deepcopy__(self, memo):
        """A new Parameter with copies of the data and of .grad, as torch's deepcopy: Parameters that are views
        of one buffer (a flat bucket) become views of one copy of it (autograd/storage.py)."""
        if id(self) not in memo:
            new = Parameter(Tensor(deepcopy_array(self.array, memo), device=self.device), self.requires_grad)
            if self.grad is not None:
                new.grad = Tensor(self.grad.array.copy(), device=self.grad.device)
            memo[id(self)] = new
        return memo[id(self)]


def _rebuild_parameter(data, requires_grad):
    return Parameter(data, requires_grad)


class Buffer(Tensor):
    """Marks a tensor to register as a buffer (`self.running_mean = Buffer(...)`), as torch.nn.Buffer."""

    __slots__ = ("persistent",)

    def __init__(self, data, persistent=True):
        if isinstance(data, Tensor):
            super().__init__(data.array, device=data.device)
        else:
            super().__init__(data)
        self.persistent = persistent
