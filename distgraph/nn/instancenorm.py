"""InstanceNorm1d/2d/3d, LocalResponseNorm and CrossMapLRN2d, with torch's arguments, state and reprs.

InstanceNorm keeps _NormBase's state (weight, bias, running_mean, running_var, num_batches_tracked,
each only when switched on) and repr, with torch's other defaults: affine=False and
track_running_stats=False. Unlike batch norm it never counts batches, and it takes unbatched input.
"""

import warnings

import numpy as np

from distgraph.errors import ShapeError
from distgraph.nn.functional.norms import instance_norm, local_response_norm
from distgraph.nn.module import Module
from distgraph.nn.normalization import _NormBase
from distgraph.ops.creation import as_tensor
from distgraph.ops.linalg import einsum


class _InstanceNorm(_NormBase):
    _unbatched_dims = 2

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=False,
        track_running_stats=False,
        device=None,
        dtype=None,
        *,
        bias=True,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def forward(self, input):
        name, nb = type(self).__name__, self._unbatched_dims
        if input.ndim not in (nb, nb + 1):
            raise ShapeError(f"{name}: expected {nb}D or {nb + 1}D input (got {input.ndim}D input)")
        feature_dim = input.ndim - nb
        if input.shape[feature_dim] != self.num_features:
            if self.affine:
                raise ShapeError(
                    f"{name}: expected input's size at dim={feature_dim} to match num_features "
                    f"({self.num_features}), but got: {input.shape[feature_dim]}."
                )
            warnings.warn(
                f"input's size at dim={feature_dim} does not match num_features. You can silence this warning by "
                "not passing in num_features, which is not used because affine=False",
                stacklevel=2,
            )
        batched = input if input.ndim == nb + 1 else input.unsqueeze(0)
        out = instance_norm(
            batched,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )
        return out if input.ndim == nb + 1 else out.squeeze(0)


class InstanceNorm1d(_InstanceNorm):
    _unbatched_dims = 2


class InstanceNorm2d(_InstanceNorm):
    _unbatched_dims = 3


class InstanceNorm3d(_InstanceNorm):
    _unbatched_dims = 4


class LocalResponseNorm(Module):
    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input):
        return local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class CrossMapLRN2d(Module):
    """torch's legacy cross-channel LRN on (N, C, H, W): x / (k + alpha/size · Σ x²)^beta, the sum over channels
    c - p + 1 .. c + p - 1 with p = int((size - 1) / 2 + 1), as torch's running sum computes it — which also
    never drops channel 0 (so it differs from LocalResponseNorm). The sum is one matmul with that
    0/1 channel matrix, so autograd gives the true derivative (torch's hand-written backward is not the
    derivative of its forward: torch's gradcheck fails on it)."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input):
        if input.ndim != 4:
            raise ShapeError(f"CrossMapLRN2d: Expected input to be 4D, got {input.ndim}D instead.")
        channels = input.shape[1]
        p = int((self.size - 1) / 2 + 1)
        c = np.arange(channels)[:, None]
        j = np.arange(channels)[None, :]
        window = ((j >= c - p + 1) & (j <= c + p - 1)) | ((j == 0) & (c >= p))
        window = as_tensor(window.astype(input.array.dtype), device=input.device)
        summed = einsum("cj,njhw->nchw", window, input * input)
        return input * (summed * (self.alpha / self.size) + self.k) ** -self.beta

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
