"""torch.gradient: the derivative of sampled values along each asked dimension, by finite differences.

torch's (and numpy's) rule: second-order central differences inside; at the two ends one-sided differences
of first order (edge_order=1) or second order (edge_order=2). Spacing is 1, one scalar for every dimension,
a scalar per dimension, or a 1-D coordinates tensor per dimension (samples unevenly spaced: the weights of
the three-point formula come from the neighbouring gaps). Written with slicing, arithmetic and cat, so the
result is differentiable in the input and in the coordinates, as torch's.
"""

import numbers

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.errors import InputRangeError, ShapeError
from distgraph.ops.reduction import normalize_dim
from distgraph.ops.shape import cat


def _sl(x, d, start, stop=None):
    """x sliced along d, [start:stop]; a one-element slice keeps the dim."""
    idx = [slice(None)] * x.ndim
    idx[d] = slice(start, stop)
    return x[tuple(idx)]


def _uniform(x, d, h, edge_order):
    center = (_sl(x, d, 2) - _sl(x, d, 0, -2)) / (2.0 * h)
    if edge_order == 1:
        first = (_sl(x, d, 1, 2) - _sl(x, d, 0, 1)) / h
        last = (_sl(x, d, -1) - _sl(x, d, -2, -1)) / h
    else:
        first = (-1.5 * _sl(x, d, 0, 1) + 2.0 * _sl(x, d, 1, 2) - 0.5 * _sl(x, d, 2, 3)) / h
        last = (0.5 * _sl(x, d, -3, -2) - 2.0 * _sl(x, d, -2, -1) + 1.5 * _sl(x, d, -1)) / h
    return cat([first, center, last], d)


def _coordinates(x, d, coords, edge_order):
    if coords.ndim != 1 or coords.shape[0] != x.shape[d]:
        raise ShapeError(f"torch.gradient expected the coordinates for dimension {d} to be a 1-D tensor of "
                         f"{x.shape[d]} values, got shape {tuple(coords.shape)}")  # fmt: skip
    shape = [1] * x.ndim
    shape[d] = -1
    dx = (coords[1:] - coords[:-1]).reshape(shape)
    dx1, dx2 = _sl(dx, d, 0, -1), _sl(dx, d, 1)
    a = -dx2 / (dx1 * (dx1 + dx2))
    b = (dx2 - dx1) / (dx1 * dx2)
    c = dx1 / (dx2 * (dx1 + dx2))
    center = a * _sl(x, d, 0, -2) + b * _sl(x, d, 1, -1) + c * _sl(x, d, 2)
    x0, x1, x2 = _sl(x, d, 0, 1), _sl(x, d, 1, 2), _sl(x, d, 2, 3)
    xl, xm, xn = _sl(x, d, -3, -2), _sl(x, d, -2, -1), _sl(x, d, -1)
    h0, h1, hm, hl = _sl(dx, d, 0, 1), _sl(dx, d, 1, 2), _sl(dx, d, -2, -1), _sl(dx, d, -1)
    if edge_order == 1:
        first, last = (x1 - x0) / h0, (xn - xm) / hl
    else:
        first = (-(2.0 * h0 + h1) / (h0 * (h0 + h1)) * x0 + (h0 + h1) / (h0 * h1) * x1
                 - h0 / (h1 * (h0 + h1)) * x2)  # fmt: skip
        last = (hl / (hm * (hm + hl)) * xl - (hl + hm) / (hm * hl) * xm
                + (2.0 * hl + hm) / (hl * (hm + hl)) * xn)  # fmt: skip
    return cat([first, center, last], d)


def gradient(input, *, spacing=1, dim=None, edge_order=1):
    """torch.gradient: a tuple with the estimated derivative of `input` along each dim of `dim` (all by default)."""
    if edge_order not in (1, 2):
        raise InputRangeError("torch.gradient only supports edge_order=1 and edge_order=2.")
    given_dim = dim is not None
    dims = list(range(input.ndim)) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    dims = [normalize_dim(d, input.ndim, "torch.gradient") for d in dims]
    if len(set(dims)) != len(dims):
        raise ShapeError(f"dim {next(d for d in dims if dims.count(d) > 1)} appears multiple times in the list of dims")
    if isinstance(spacing, numbers.Number) or (isinstance(spacing, Tensor) and spacing.ndim == 0):
        spacing = [spacing] * len(dims)
    spacing = list(spacing)
    if len(spacing) != len(dims):
        if given_dim:
            raise ShapeError(
                "torch.gradient expected spacing to be unspecified, a scalar or it's spacing and dim arguments to "
                f"have the same length, but got a spacing argument of length {len(spacing)} and a dim argument "
                f"of length {len(dims)}."
            )
        raise ShapeError(
            "torch.gradient expected spacing to be unspecified, a scalar, or a list of length equal to "
            f"'self.dim() = {input.ndim}', since dim argument was not given, but got a list of length {len(spacing)}"
        )
    if any(input.shape[d] < edge_order + 1 for d in dims):
        raise InputRangeError("torch.gradient expected each dimension size to be at least edge_order+1")
    x = input if input.array.dtype.kind in "fc" else input.to(dtypes.get_default_dtype())
    return tuple(
        _coordinates(x, d, h, edge_order) if isinstance(h, Tensor) and h.ndim == 1 else _uniform(x, d, h, edge_order)
        for d, h in zip(dims, spacing)
    )
