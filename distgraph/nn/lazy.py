"""Lazy modules: LazyLinear, LazyConv1d/2d/3d, LazyConvTranspose1d/2d/3d, LazyBatchNorm1d/2d/3d and
LazyInstanceNorm1d/2d/3d infer their input size at the first forward.

Until then their parameters (and BatchNorm's running statistics) are UninitializedParameter /
UninitializedBuffer: empty placeholders that refuse to tell a shape. A forward pre-hook reads the
first input, `materialize`s each placeholder in place (the same object becomes a Parameter / a plain
Tensor, so an optimizer built before the first forward keeps valid references and works, as torch's),
runs the usual initialization, and turns the module into its eager class (LazyLinear → Linear).
Loading a state_dict into a lazy module materializes the placeholders with the checkpoint's shapes.
"""

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError
from distgraph.nn.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, _tuple
from distgraph.nn.conv3d import Conv3d, ConvTranspose3d
from distgraph.nn.instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from distgraph.nn.linear import Linear
from distgraph.nn.normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d
from distgraph.nn.parameter import Parameter
from distgraph.ops.creation import empty, tensor


class _Uninitialized:
    """The placeholder behaviour shared by UninitializedParameter and UninitializedBuffer."""

    __slots__ = ()
    cls_to_become = None

    @property
    def shape(self):
        raise AutogradError(
            f"Can't access the shape of an uninitialized parameter or buffer ({type(self).__name__}): call "
            "`forward` (or load a state_dict) to initialize it before accessing its attributes"
        )

    def materialize(self, shape, device=None, dtype=None):
        """Give the placeholder an (uninitialized) array of `shape`; it becomes a cls_to_become in place."""
        made = empty(*shape, device=device or self.device, dtype=dtype or self.dtype)
        self.array, self.device = made.array, made.device
        self._vc[0] += 1
        self.__class__ = self.cls_to_become

    def __repr__(self):
        return f"<{type(self).__name__}>"

    def __deepcopy__(self, memo):
        """A new placeholder of the same dtype and device (torch's deepcopy of a lazy module stays lazy)."""
        if id(self) not in memo:
            memo[id(self)] = type(self)(self.requires_grad, self.device, self.dtype)
        return memo[id(self)]

    def __reduce__(self):
        return (type(self), (self.requires_grad, self.device, self.dtype))


class UninitializedParameter(_Uninitialized, Parameter):
    __slots__ = ()
    cls_to_become = Parameter

    def __init__(self, requires_grad=True, device=None, dtype=None):
        super().__init__(empty(0, device=device, dtype=dtype), requires_grad)


class UninitializedBuffer(_Uninitialized, Tensor):
    __slots__ = ()
    cls_to_become = Tensor

    def __init__(self, requires_grad=False, device=None, dtype=None):
        super().__init__(empty(0, device=device, dtype=dtype).array, requires_grad)


def _infer_parameters(module, args):
    """The forward pre-hook: initialize from the first input, then become the eager class."""
    module.initialize_parameters(*args)
    if module.has_uninitialized_params():
        raise AutogradError(f"module {module._get_name()} has not been fully initialized")
    module._initialize_hook.remove()
    del module._initialize_hook
    module.__class__ = module.cls_to_become


class LazyModuleMixin:
    """initialize_parameters(input) materializes the placeholders; reset_parameters waits for them."""

    cls_to_become = None

    def _lazy_init(self):
        self._initialize_hook = self.register_forward_pre_hook(_infer_parameters)

    def has_uninitialized_params(self):
        tensors = (*self._parameters.values(), *self._buffers.values())
        return any(isinstance(t, _Uninitialized) for t in tensors)

    def _inferred_size(self):
        return 0

    def reset_parameters(self):
        if not self.has_uninitialized_params() and self._inferred_size() != 0:
            super().reset_parameters()


class LazyLinear(LazyModuleMixin, Linear):
    cls_to_become = Linear

    def __init__(self, out_features, bias=True, device=None, dtype=None):
        super().__init__(0, 0, False, device, dtype)
        self.weight = UninitializedParameter(device=device, dtype=dtype)
        self.out_features = out_features
        if bias:
            self.bias = UninitializedParameter(device=device, dtype=dtype)
        self._lazy_init()

    def _inferred_size(self):
        return self.in_features

    def initialize_parameters(self, input):
        if self.has_uninitialized_params():
            self.in_features = input.shape[-1]
            self.weight.materialize((self.out_features, self.in_features))
            if self.bias is not None:
                self.bias.materialize((self.out_features,))
            self.reset_parameters()
        self.in_features = self.weight.shape[-1]  # loaded from a state_dict: the checkpoint's size


class _LazyConvMixin(LazyModuleMixin):
    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):  # fmt: skip
        super().__init__(0, 0, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False,
                         padding_mode=padding_mode, device=device, dtype=dtype)  # fmt: skip
        self.weight = UninitializedParameter(device=device, dtype=dtype)
        self.out_channels = out_channels
        if bias:
            self.bias = UninitializedParameter(device=device, dtype=dtype)
        self._lazy_init()

    def _inferred_size(self):
        return self.in_channels

    def _weight_shape(self):
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def initialize_parameters(self, input):
        n, name = self._dims, type(self).__name__
        if input.ndim not in (n + 1, n + 2):
            raise AutogradError(f"Expected {n + 1}D (unbatched) or {n + 2}D (batched) input to {name}, but got input "
                                f"of size: {tuple(input.shape)}")  # fmt: skip
        if self.has_uninitialized_params():
            self.in_channels = input.shape[1] if input.ndim == n + 2 else input.shape[0]
            if self.in_channels % self.groups:
                raise ValueError(
                    f"{name}: in_channels ({self.in_channels}) must be divisible by groups ({self.groups})"
                )
            self.weight.materialize(self._weight_shape())
            if self.bias is not None:
                self.bias.materialize((self.out_channels,))
            self.reset_parameters()


class LazyConv1d(_LazyConvMixin, Conv1d):
    cls_to_become = Conv1d


class LazyConv2d(_LazyConvMixin, Conv2d):
    cls_to_become = Conv2d


class LazyConv3d(_LazyConvMixin, Conv3d):
    cls_to_become = Conv3d


class _LazyConvTransposeMixin(_LazyConvMixin):
    """The transposed layers' constructor order (output_padding after padding, dilation after bias) and
    weight (in_channels, out_channels/groups, *kernel)."""

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
                 dilation=1, padding_mode="zeros", device=None, dtype=None):  # fmt: skip
        super().__init__(out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device,
                         dtype)  # fmt: skip
        self.output_padding = _tuple(output_padding, self._dims)

    def _weight_shape(self):
        return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)


class LazyConvTranspose1d(_LazyConvTransposeMixin, ConvTranspose1d):
    cls_to_become = ConvTranspose1d


class LazyConvTranspose2d(_LazyConvTransposeMixin, ConvTranspose2d):
    cls_to_become = ConvTranspose2d


class LazyConvTranspose3d(_LazyConvTransposeMixin, ConvTranspose3d):
    cls_to_become = ConvTranspose3d


class _LazyNormMixin(LazyModuleMixin):
    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None, *,
                 bias=True):  # fmt: skip
        super().__init__(0, eps, momentum, False, False, device, dtype)
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = UninitializedParameter(device=device, dtype=dtype)
            if bias:  # bias=False: an affine scale without a shift, as the eager norms
                self.bias = UninitializedParameter(device=device, dtype=dtype)
        if track_running_stats:
            self.register_buffer("running_mean", UninitializedBuffer(device=device, dtype=dtype))
            self.register_buffer("running_var", UninitializedBuffer(device=device, dtype=dtype))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=dtypes.int64, device=device))
        self._lazy_init()

    def _inferred_size(self):
        return self.num_features

    def initialize_parameters(self, input):
        if self.has_uninitialized_params():
            self.num_features = input.shape[1]
            for t in (self.weight, self.bias, self.running_mean, self.running_var):
                if isinstance(t, _Uninitialized):
                    t.materialize((self.num_features,))
            self.reset_parameters()


class LazyBatchNorm1d(_LazyNormMixin, BatchNorm1d):
    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyNormMixin, BatchNorm2d):
    cls_to_become = BatchNorm2d


class LazyBatchNorm3d(_LazyNormMixin, BatchNorm3d):
    cls_to_become = BatchNorm3d


class LazyInstanceNorm1d(_LazyNormMixin, InstanceNorm1d):
    cls_to_become = InstanceNorm1d


class LazyInstanceNorm2d(_LazyNormMixin, InstanceNorm2d):
    cls_to_become = InstanceNorm2d


class LazyInstanceNorm3d(_LazyNormMixin, InstanceNorm3d):
    cls_to_become = InstanceNorm3d
