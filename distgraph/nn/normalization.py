"""LayerNorm, RMSNorm, GroupNorm and BatchNorm1d/2d (running statistics, momentum, train vs eval), as torch."""

from distgraph import dtypes
from distgraph.errors import ShapeError
from distgraph.nn import functional as F
from distgraph.nn import init
from distgraph.nn.module import Module
from distgraph.nn.parameter import Parameter
from distgraph.ops.creation import ones, tensor, zeros


def _reset_affine(module):
    """weight to ones and bias to zeros, where the module has them (torch's reset_parameters)."""
    if module.weight is not None:
        init.ones_(module.weight)
    if getattr(module, "bias", None) is not None:
        init.zeros_(module.bias)


def _affine(module, shape, affine, bias, device, dtype):
    """weight (ones) and bias (zeros) of `shape`, or None for each that is switched off, as torch registers them."""
    module.register_parameter("weight", Parameter(ones(*shape, device=device, dtype=dtype)) if affine else None)
    on = affine and bias
    module.register_parameter("bias", Parameter(zeros(*shape, device=device, dtype=dtype)) if on else None)


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        _affine(self, self.normalized_shape, elementwise_affine, bias, device, dtype)

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class RMSNorm(Module):
    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(ones(*self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, x):  # torch's parameter name
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        _affine(self, (num_channels,), affine, bias, device, dtype)

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


class _NormBase(Module):
    """The state batch and instance norm share, as torch's _NormBase: affine weight and bias, running
    statistics and the batch count, their resets, loading and repr. Instance norm is not a _BatchNorm."""

    _version = 2  # version 2 added num_batches_tracked (torch 0.4.1)
    _optional_state = ("num_batches_tracked",)  # for FSDP's flat loader, which reads no versions

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        device=None,
        dtype=None,
        *,
        bias=True,
    ):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        _affine(self, (num_features,), affine, bias, device, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, device=device, dtype=dtype))
            self.register_buffer("running_var", ones(num_features, device=device, dtype=dtype))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=dtypes.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        """A checkpoint older than version 2 (a plain dict has no version) has no num_batches_tracked: the
        module keeps its own count, as torch's. A version-2 one without it is missing the key."""
        key = prefix + "num_batches_tracked"
        version = local_metadata.get("version")
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = self.num_batches_tracked if self.num_batches_tracked is not None else tensor(0)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def reset_running_stats(self):
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        _reset_affine(self)

    def extra_repr(self):
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class _BatchNorm(_NormBase):
    _expected_dims = (2, 3)

    def forward(self, input):
        self._check_input(input)
        return F.batch_norm(
            input,
            self.running_mean,  # None when not tracking: batch statistics in eval mode too
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self._momentum(),
            self.eps,
        )

    def _channels_fixed(self):
        """Whether a weight or running statistics hold num_features values: torch checks the channel count only
        through them, so without both any count goes (as a LazyBatchNorm that has neither runs on any input)."""
        return self.weight is not None or self.running_mean is not None

    def _check_input(self, input):
        if input.ndim not in self._expected_dims or (input.shape[1] != self.num_features and self._channels_fixed()):
            raise ShapeError(
                f"{type(self).__name__}({self.num_features}): expected "
                f"{' or '.join(f'{d}-D' for d in self._expected_dims)} input with {self.num_features} channels "
                f"in dim 1, got shape {tuple(input.shape)}"
            )

    def _momentum(self):
        """This forward's momentum; in training, count the batch first (momentum None: a cumulative average)."""
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.array[...] += 1
            self.num_batches_tracked._vc[0] += 1
            if momentum is None:  # cumulative moving average, as torch
                momentum = 1.0 / int(self.num_batches_tracked.array)
        return 0.0 if momentum is None else momentum


class BatchNorm1d(_BatchNorm):
    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    _expected_dims = (4,)


class BatchNorm3d(_BatchNorm):
    _expected_dims = (5,)
