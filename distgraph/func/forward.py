"""torch.func.jvp: the Jacobian-vector product J·t, on the reverse-mode engine (distgraph has no forward
mode). The double-backward trick: the vector-Jacobian product u ↦ uᵀJ is linear in u, so J·t is the
gradient of (uᵀJ)·t with respect to u. This needs a first backward with create_graph (through a dummy u
of ones: `autograd.functional.trick_dummy` says why not zeros) and a second one through it; every distgraph backward rule is differentiable, so it holds for
every op. Results keep their graph as the other transforms' do (transforms.py's module docstring)."""

from distgraph.autograd.functional import grad_allow_unused, trick_dummy
from distgraph.autograd.grad_mode import enable_grad, is_grad_enabled
from distgraph.autograd.tensor import Tensor
from distgraph.func.pytree import flatten, unflatten
from distgraph.func.transforms import _detach_tree, _differentiable, _graph_keeper, _split_aux
from distgraph.ops.creation import zeros_like

API = "jvp(f, primals, tangents)"


def jvp(func, primals, tangents, *, strict=False, has_aux=False):
    """(func(*primals), J·tangents), each shaped as func's output (with has_aux: (output, jvp_out, aux)).
    `primals` is a tuple of arguments (each a tensor or a container of them); `tangents` matches it."""
    flat_t = _check_inputs(primals, tangents)
    grad_on = is_grad_enabled()
    with enable_grad():
        args, parts = _differentiable(primals, tuple(range(len(primals))))
        out, aux = _split_aux(func(*args), has_aux, API)
        flat_out, out_spec = flatten(out)
        _check_outputs(flat_out)
        inputs = [t for leaves, _ in parts for t in leaves]
        # u, one per float output (an integer output's tangent is zeros, as torch's): uᵀJ, then its gradient in u
        dummies = [trick_dummy(o) if o.is_floating_point() else None for o in flat_out]
        us = [u for u in dummies if u is not None]
        vjps = grad_allow_unused([o for o, u in zip(flat_out, dummies) if u is not None], inputs, us, create_graph=True)
        jvps = iter(grad_allow_unused(vjps, us, flat_t, create_graph=grad_on) if us else ())
    tangents_out = [next(jvps) if u is not None else None for u in dummies]
    if strict and any(t is None for t in tangents_out):
        raise RuntimeError(
            f"{API[:-1]}, strict=True): The output of f is independent of the inputs. This is not allowed with "
            "strict=True."
        )
    tangents_out = [zeros_like(o) if t is None else t for o, t in zip(flat_out, tangents_out)]
    keeps = _graph_keeper([*parts, (us, None)], grad_on)
    result = (_detach_tree(out, keeps), _detach_tree(unflatten(tangents_out, out_spec), keeps))
    return (*result, _detach_tree(aux, keeps)) if has_aux else result


def _check_inputs(primals, tangents):
    """The tangents' leaves, after torch's checks of both trees."""
    if not isinstance(primals, tuple):
        raise RuntimeError(f"{API}: Expected primals to be a tuple. E.g. it should be valid to call f(*primals).")
    flat_p, p_spec = flatten(primals)
    flat_t, t_spec = flatten(tangents)
    if repr(p_spec) != repr(t_spec):
        raise RuntimeError(
            f"{API}: Expected primals and tangents to have the same python structure. For example, if primals is "
            f"a tuple of 3 tensors, tangents also must be. Got primals with structure {p_spec} and tangents with "
            f"structure {t_spec}"
        )
    for name, flat in (("primals", flat_p), ("tangents", flat_t)):
        if not flat:
            raise RuntimeError(f"{API}: Expected {name} to contain at least one Tensor.")
        for t in flat:
            if not isinstance(t, Tensor):
                raise RuntimeError(f"{API}: Expected {name} to only contain Tensors, got {type(t)}")
    for p, t in zip(flat_p, flat_t):
        if tuple(p.shape) != tuple(t.shape):
            raise RuntimeError(
                f"{API}: Expected primals and tangents to have the same shapes, got primal {tuple(p.shape)} and "
                f"tangent {tuple(t.shape)}"
            )
    return flat_t


def _check_outputs(flat_out):
    if not flat_out or (len(flat_out) == 1 and flat_out[0] is None):
        raise RuntimeError(f"{API}: Expected f to be a function that has non-empty output (got output = {flat_out})")
    for o in flat_out:
        if not isinstance(o, Tensor):
            raise RuntimeError(f"{API}: expected f(*primals) to return only tensors, got unsupported type {type(o)}")
