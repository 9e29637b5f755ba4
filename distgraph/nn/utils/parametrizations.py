"""nn.utils.parametrizations: weight_norm, spectral_norm and orthogonal as parametrizations (nn/utils/parametrize.py).

weight_norm stores w as magnitude g = ‖v‖ (over every dim but `dim`) and direction v, and recomputes
w = v·g/‖v‖ on each access; spectral_norm recomputes w / σ(w), σ estimated by power iteration on
the buffers u, v, one step per access in training mode (none in eval), as torch's. Both are written
with differentiable ops, so gradients reach the originals (`parametrizations.weight.original0/1`,
`parametrizations.weight.original`) as torch's do.

orthogonal keeps a matrix Q (or a batch) with orthonormal columns (rows, when wide), as torch's: the
original is mapped to Q by the matrix exponential or the Cayley map of a skew-symmetric matrix built from
its lower triangle, or by a product of Householder reflectors; with use_trivialization (the default) Q is
then multiplied by the buffer `base`, which assigning a value (and registering) sets from it.
"""

import numpy as np

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.nn import functional as F
from distgraph.nn.conv import ConvTranspose1d, ConvTranspose2d
from distgraph.nn.conv3d import ConvTranspose3d
from distgraph.nn.module import Module
from distgraph.nn.utils import parametrize
from distgraph.ops.compare import allclose
from distgraph.ops.creation import eye, randn, zeros_like
from distgraph.ops.linalg import dot, mv
from distgraph.ops.linalg_decomp import householder_product, qr
from distgraph.ops.linalg_functions import matrix_exp
from distgraph.ops.linalg_matrix import solve
from distgraph.ops.reduction import norm
from distgraph.ops.shape import cat

__all__ = ["orthogonal", "spectral_norm", "weight_norm"]


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
    """Reparametrize `module.name` as g·v/‖v‖: original0 is g (the magnitude), original1 is v (the direction).
    A state dict saved with the old nn.utils.weight_norm (`name_g`, `name_v`) loads into it, as torch's does."""
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)

    def old_keys(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        g_key, v_key = f"{prefix}{name}_g", f"{prefix}{name}_v"
        if g_key in state_dict and v_key in state_dict:
            state_dict[f"{prefix}parametrizations.{name}.original0"] = state_dict.pop(g_key)
            state_dict[f"{prefix}parametrizations.{name}.original1"] = state_dict.pop(v_key)

    module._register_load_state_dict_pre_hook(old_keys)
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


_ORTHOGONAL_MAPS = ("matrix_exp", "cayley", "householder")


def _is_orthogonal(Q):
    n, k = Q.shape[-2:]
    eps = 10.0 * n * float(np.finfo(Q.array.dtype).eps)
    return allclose(Q.mH @ Q, eye(k, dtype=Q.dtype, device=Q.device), atol=eps)


def _make_orthogonal(A):
    """The Q of A = QR (A tall) with diag(R) made non-negative: torch's geqrf + householder_product, whose Q
    is LAPACK's, as linalg.qr's is."""
    Q, R = qr(A)
    return Q * R.diagonal(dim1=-2, dim2=-1).sgn().unsqueeze(-2)


def _geqrf(Q):
    """torch.geqrf of a tall matrix or batch: LAPACK's packed QR (reflectors below the diagonal, R on and
    above it) and the reflectors' scales tau, as arrays of Q's dtype (numpy's qr(mode="raw") gives them
    transposed; cupy's, float64 for a float32 Q)."""
    xp, (n, k), dtype = Q.device.xp, Q.shape[-2:], Q.array.dtype
    packed = [xp.linalg.qr(m, mode="raw") for m in Q.array.reshape(-1, n, k)]
    a = xp.stack([h.T for h, _ in packed]).reshape(Q.shape).astype(dtype, copy=False)
    tau = xp.stack([t for _, t in packed]).reshape(*Q.shape[:-2], min(n, k)).astype(dtype, copy=False)
    return a, tau


class _Orthogonal(Module):
    def __init__(self, weight, orthogonal_map, *, use_trivialization=True):
        super().__init__()
        if weight.is_complex() and orthogonal_map == "householder":
            raise ValueError("The householder parametrization does not support complex tensors.")
        self.shape = tuple(weight.shape)
        self.orthogonal_map = orthogonal_map
        if use_trivialization:
            self.register_buffer("base", None)

    def forward(self, X):
        n, k = X.shape[-2:]
        transposed = n < k
        if transposed:  # work on the tall form
            X = X.mT
            n, k = k, n
        if self.orthogonal_map == "householder":
            A = X.tril(diagonal=-1)
            tau = 2.0 / (1.0 + (A * A).sum(dim=-2))
            Q = householder_product(A, tau) * X.diagonal(dim1=-2, dim2=-1).int().unsqueeze(-2)
        else:
            X = X.tril()
            if n != k:  # (..., n, k) -> (..., n, n): A is square
                X = cat([X, X.new_zeros(*X.shape[:-2], n, n - k)], dim=-1)
            A = X - X.mH  # skew-symmetric (skew-Hermitian)
            if self.orthogonal_map == "matrix_exp":
                Q = matrix_exp(A)
            else:  # Cayley: (I - A/2)^-1 (I + A/2)
                Id = eye(n, dtype=A.dtype, device=A.device)
                Q = solve(Id - 0.5 * A, Id + 0.5 * A)
            if n != k:
                Q = Q[..., :k]
        if "base" in self._buffers:
            Q = self.base @ Q
        return Q.mT if transposed else Q

    def right_inverse(self, Q):
        """An original whose forward is Q: with a base, base takes Q (orthogonalized by QR where it is not
        orthogonal; a tall one completed by random columns) and the original becomes -I, which every map
        sends to I; without, householder's reflectors of Q (the exponential and Cayley maps refuse)."""
        if tuple(Q.shape) != self.shape:
            raise ValueError(
                f"Expected a matrix or batch of matrices of shape {self.shape}. Got a tensor of shape {tuple(Q.shape)}."
            )
        with no_grad():
            Q_init = Q
            n, k = Q.shape[-2:]
            transpose = n < k
            if transpose:
                Q = Q.mT
                n, k = k, n
            if "base" not in self._buffers:
                if self.orthogonal_map != "householder":
                    raise NotImplementedError(
                        "It is not possible to assign to the matrix exponential or the Cayley parametrizations "
                        "when use_trivialization=False."
                    )
                a, tau = _geqrf(Q)
                xp, i = Q.device.xp, np.arange(k)
                diag = xp.sign(a[..., i, i])
                a[..., i, i] = xp.where(tau == 0.0, -diag, diag)
                A = Tensor(a, device=Q.device)
                return A.mT if transpose else A
            if n == k:
                Q = Q.clone() if _is_orthogonal(Q) else _make_orthogonal(Q)
            else:
                N = randn(*Q.shape[:-2], n, n - k, dtype=Q.dtype, device=Q.device)
                Q = _make_orthogonal(cat([Q, N], dim=-1))
            self.base = Q
            neg_Id = zeros_like(Q_init)
            neg_Id.diagonal(dim1=-2, dim2=-1).fill_(-1.0)
            return neg_Id


def orthogonal(module, name="weight", orthogonal_map=None, *, use_trivialization=True):
    """Keep `module.name` (a matrix or a batch of them) orthogonal: orthonormal columns, or rows when it is wide.

    orthogonal_map: "matrix_exp", "cayley" or "householder"; by default "matrix_exp" for a square or complex
    matrix and "householder" otherwise (torch's choice). Registering keeps the current value where it is
    orthogonal, else its QR orthogonalization (with a base, or with householder)."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if weight.ndim < 2:
        raise ValueError(f"Expected a matrix or batch of matrices. Got a tensor of {weight.ndim} dimensions.")
    if orthogonal_map is None:
        square = weight.shape[-2] == weight.shape[-1]
        orthogonal_map = "matrix_exp" if square or weight.is_complex() else "householder"
    if orthogonal_map not in _ORTHOGONAL_MAPS:
        raise ValueError(
            f'orthogonal_map has to be one of "matrix_exp", "cayley", "householder". Got: {orthogonal_map}'
        )
    orth = _Orthogonal(weight, orthogonal_map, use_trivialization=use_trivialization)
    parametrize.register_parametrization(module, name, orth, unsafe=True)
    return module
