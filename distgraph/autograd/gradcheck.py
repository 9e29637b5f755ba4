"""Finite-difference checks of analytic gradients (central differences, float64), as torch's gradcheck.

torch's keywords are taken: `nondet_tol` as torch's (the analytic Jacobian is computed twice and must
agree within it: a backward that is not reentrant fails); `fast_mode` and `check_undefined_grad` are
accepted and ignored (the check is always the full Jacobian one, which a fast-mode check would pass).
"""

import numpy as np

from distgraph.autograd.engine import grad as autograd_grad
from distgraph.autograd.grad_mode import enable_grad, no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.backend import on
from distgraph.errors import AutogradError


class GradcheckError(AutogradError):
    """What a failed gradcheck / gradgradcheck raises (raise_exception=True): torch's name, a RuntimeError."""


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
        array = x.array  # perturbed in place, element by element (a reshape of a non-contiguous one is a copy)
        cols = []
        for j in range(array.size):
            at = np.unravel_index(j, array.shape)
            orig = array[at].item()
            with no_grad():
                array[at] = orig + eps
                plus = np.concatenate([np.asarray(o.__array__(), np.float64).ravel() for o in _outputs(fn, inputs)])
                array[at] = orig - eps
                minus = np.concatenate([np.asarray(o.__array__(), np.float64).ravel() for o in _outputs(fn, inputs)])
                array[at] = orig
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
            with on(o.device):  # the seed on the output's device, as backward wants it
                seed = o.device.xp.zeros(o.array.size, dtype=o.array.dtype)
                seed[k] = 1
            seed = Tensor(seed.reshape(o.shape), device=o.device)
            gs = autograd_grad(o, diff, seed, retain_graph=True, allow_unused=True)
            for i, g in enumerate(gs):
                if g is not None:
                    jac[i][:, col + k] = np.asarray(g.__array__()).ravel()
        col += o.array.size
    return jac


def gradcheck(
    fn,
    inputs,
    eps=1e-6,
    atol=1e-5,
    rtol=1e-3,
    raise_exception=True,
    *,
    nondet_tol=0.0,
    check_undefined_grad=True,
    fast_mode=False,
):
    """True when analytic and numerical Jacobians agree (and the analytic one is reproducible within
    `nondet_tol`); else raise (naming the input) or return False."""
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
            raise GradcheckError(
                f"Jacobian mismatch for differentiable input {i}: max abs diff {err}\nnumerical:\n{n}\nanalytical:\n{a}"
            )
    for a, again in zip(analytical, analytical_jacobian(fn, inputs)):
        if a.size and np.max(np.abs(a - again)) > nondet_tol:
            if not raise_exception:
                return False
            raise GradcheckError(
                "Backward is not reentrant, i.e., running backward with same input and grad_output multiple times "
                "gives different values, although analytical gradient matches numerical gradient. The tolerance "
                f"for nondeterminism was {nondet_tol}."
            )
    return True


def gradgradcheck(
    fn,
    inputs,
    grad_outputs=None,
    *,
    eps=1e-6,
    atol=1e-5,
    rtol=1e-3,
    raise_exception=True,
    nondet_tol=0.0,
    check_undefined_grad=True,
    fast_mode=False,
):
    """Check second derivatives: gradcheck of the function x -> d(sum fn(x) * v)/dx, with `grad_outputs`
    as v (random normal ones when None)."""
    inputs = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
    outs = _outputs(fn, inputs)
    if grad_outputs is None:
        rng = np.random.default_rng(0)  # (drawn on the host, the same numbers on every device)
        seeds = [Tensor(rng.standard_normal(o.shape)).to(o.device) for o in outs]
    else:
        seeds = list(grad_outputs) if isinstance(grad_outputs, tuple | list) else [grad_outputs]
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]

    def first(*xs):
        with enable_grad():  # the numerical Jacobian calls this under no_grad; the first derivative needs a graph
            os = _outputs(fn, xs)
            gs = autograd_grad(os, [xs[i] for i in diff_idx], seeds, create_graph=True, allow_unused=True)
        return tuple(g for g in gs if g is not None)

    return gradcheck(first, inputs, eps, atol, rtol, raise_exception, nondet_tol=nondet_tol)
