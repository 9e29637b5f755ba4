"""Finite-difference checks of analytic gradients (central differences, float64), as torch's gradcheck."""

import numpy as np

from distgraph.autograd.engine import grad as autograd_grad
from distgraph.autograd.grad_mode import enable_grad, no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError


def _outputs(fn, inputs):
    out = fn(*inputs)
    return list(out) if isinstance(out, tuple | list) else [out]


def numerical_jacobian(fn, inputs, eps=1e-6):
    """J[i][k]: d(flattened output k) / d(flattened input i), by central differences."""
    jac = []
    for x in inputs:
        if not (isinstance(x, Tensor) and x.requires_grad):
            jac.append(None)
            continue
        flat = x.array.reshape(-1)
        cols = []
        for j in range(flat.size):
            orig = flat[j].item()
            with no_grad():
                flat[j] = orig + eps
                plus = np.concatenate([np.asarray(o.__array__(), np.float64).ravel() for o in _outputs(fn, inputs)])
                flat[j] = orig - eps
                minus = np.concatenate([np.asarray(o.__array__(), np.float64).ravel() for o in _outputs(fn, inputs)])
                flat[j] = orig
            cols.append((plus - minus) / (2 * eps))
        jac.append(np.stack(cols, axis=0) if cols else np.zeros((0, 0)))
    return jac


def analytical_jacobian(fn, inputs):
    outs = _outputs(fn, inputs)
    diff = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    sizes = [o.array.size for o in outs]
    total = sum(sizes)
    jac = [np.zeros((x.array.size, total)) for x in diff]
    col = 0
    for o in outs:
        if not o.requires_grad:
            col += o.array.size
            continue
        for k in range(o.array.size):
            seed = np.zeros(o.array.size, dtype=o.array.dtype)
            seed[k] = 1
            gs = autograd_grad(o, diff, Tensor(seed.reshape(o.shape)), retain_graph=True, allow_unused=True)
            for i, g in enumerate(gs):
                if g is not None:
                    jac[i][:, col + k] = np.asarray(g.__array__()).ravel()
        col += o.array.size
    return jac


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """True when analytic and numerical Jacobians agree; else raise (naming the input) or return False."""
    inputs = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad and x.array.dtype != np.float64:
            import warnings

            warnings.warn(
                f"gradcheck: input {i} is {x.dtype.name}, not float64; the check may fail from rounding", stacklevel=2
            )
    numerical = [j for j in numerical_jacobian(fn, inputs, eps) if j is not None]
    analytical = analytical_jacobian(fn, inputs)
    for i, (n, a) in enumerate(zip(numerical, analytical)):
        if n.shape != a.shape or not np.allclose(a, n, rtol=rtol, atol=atol):
            if not raise_exception:
                return False
            err = np.max(np.abs(a - n)) if n.shape == a.shape else "shape mismatch"
            raise AutogradError(
                f"Jacobian mismatch for differentiable input {i}: max abs diff {err}\nnumerical:\n{n}\nanalytical:\n{a}"
            )
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check second derivatives: gradcheck of the function x -> d(sum fn(x) * v)/dx."""
    inputs = tuple(inputs)
    outs = _outputs(fn, inputs)
    rng = np.random.default_rng(0)
    seeds = [Tensor(rng.standard_normal(o.shape)) for o in outs]
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]

    def first(*xs):
        with enable_grad():  # the numerical Jacobian calls this under no_grad; the first derivative needs a graph
            os = _outputs(fn, xs)
            gs = autograd_grad(os, [xs[i] for i in diff_idx], seeds, create_graph=True, allow_unused=True)
        return tuple(g for g in gs if g is not None)

    return gradcheck(first, inputs, eps, atol, rtol)
