"""nn.utils.parametrizations: weight_norm and spectral_norm as parametrizations (nn/utils/parametrize.py).

weight_norm stores w as magnitude g = ‖v‖ (over every dim but `dim`) and direction v, and recomputes
w = v·g/‖v‖ on each access; spectral_norm recomputes w / σ(w), σ estimated by power iteration on
the buffers u, v, one step per access in training mode (none in eval), as torch's. Both are written
with differentiable ops, so gradients reach the originals (`parametrizations.weight.original0/1`,
`parametrizations.weight.original`) as torch's do.
"""

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.nn import functional as F
from distgraph.nn.conv import ConvTranspose1d, ConvTranspose2d
from distgraph.nn.conv3d import ConvTranspose3d
from distgraph.nn.module import Module
from distgraph.nn.utils import parametrize
from distgraph.ops.creation import randn
from distgraph.ops.linalg import dot, mv
from distgraph.ops.reduction import norm

__all__ = ["spectral_norm", "weight_norm"]


def norm_except_dim(v, pow=2, dim=0):
    """torch.norm_except_dim: the p-norm over every dim but `dim`, kept as size-1 dims; dim=-1 means all (0-d)."""
    if dim == -1:
        return norm(v, pow)
    dim %= v.ndim
    kept = [1] * v.ndim
    kept[dim] = v.shape[dim]
    return norm(v.movedim(dim, 0).reshape(v.shape[dim], -1), pow, dim=1).reshape(kept)


def _weight_norm(v, g, dim=0):
    """torch._weight_norm: v scaled so its norm over every dim but `dim` is g."""
    return v * (g / norm_except_dim(v, 2, dim))


class _WeightNorm(Module):
    def __init__(self, dim=0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return _weight_norm(weight_v, weight_g, self.dim)

    def right_inverse(self, weight):
        return norm_except_dim(weight, 2, self.dim), weight


def weight_norm(module, name="weight", dim=0):
    """Reparametrize `module.name` as g·v/‖v‖: original0 is g (the magnitude), original1 is v (the direction)."""
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
    return module


class _SpectralNorm(Module):
    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of [-{ndim}, {ndim - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError(
                f"Expected n_power_iterations to be positive, but got n_power_iterations={n_power_iterations}"
            )
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            weight_mat = self._reshape_weight_to_matrix(weight)
            h, w = weight_mat.shape
            u = randn(h, dtype=weight.dtype, device=weight.device)
            v = randn(w, dtype=weight.dtype, device=weight.device)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=self.eps))
            self._power_method(weight_mat, 15)

    def _reshape_weight_to_matrix(self, weight):
        if self.dim != 0:  # the dim being normalized goes first
            weight = weight.permute(self.dim, *(d for d in range(weight.ndim) if d != self.dim))
        return weight.flatten(1)

    def _power_method(self, weight_mat, n_power_iterations):
        """Refine u, v in place (torch writes them through `out=`), outside autograd."""
        with no_grad():
            for _ in range(n_power_iterations):
                self._u.copy_(F.normalize(mv(weight_mat, self._v), dim=0, eps=self.eps))
                self._v.copy_(F.normalize(mv(weight_mat.T, self._u), dim=0, eps=self.eps))

    def forward(self, weight):
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        weight_mat = self._reshape_weight_to_matrix(weight)
        if self.training:
            self._power_method(weight_mat, self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()  # the next access updates the buffers in place
        return weight / dot(u, mv(weight_mat, v))

    def right_inverse(self, value):
        return value


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Reparametrize `module.name` as w / σ(w), σ its largest singular value estimated by power iteration."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:  # a transposed convolution's output channels are its dim 1
        dim = 1 if isinstance(module, ConvTranspose1d | ConvTranspose2d | ConvTranspose3d) else 0
    parametrize.register_parametrization(module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module
