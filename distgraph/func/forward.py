"""torch.func.jvp and torch.func.linearize: the Jacobian-vector product J·t, on the reverse-mode engine
(forward-mode AD included: autograd/forward_ad.py). The double-backward trick: the vector-Jacobian product
u ↦ uᵀJ is linear in u, so J·t is the gradient of (uᵀJ)·t with respect to u. This needs a first backward
with create_graph (through a dummy u of ones: `autograd.functional.trick_dummy` says why not zeros) and a
second one through it (`forward_ad.trick_vjps`, `trick_jvps`); every distgraph backward rule is
differentiable, so it holds for every op. linearize runs the function and the first backward once and
keeps their graph: each call of its jvp_fn is one more backward. Results keep their graph as the other
transforms' do (transforms.py's module docstring)."""

from distgraph.autograd.forward_ad import trick_jvps, trick_vjps
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
    run = _Linearized(func, primals, has_aux, API)
    tangents_out = run.jvps(flat_t, retain_graph=None)
    if strict and any(t is None for t in tangents_out):
        raise RuntimeError(
            f"{API[:-1]}, strict=True): The output of f is independent of the inputs. This is not allowed with "
            "strict=True."
        )
    result = (_detach_tree(run.out, run.keeps), run.tangents_tree(tangents_out))
    return (*result, _detach_tree(run.aux, run.keeps)) if has_aux else result


def linearize(func, *primals):
    """(func(*primals), jvp_fn): jvp_fn(*tangents) is J·tangents at `primals`, shaped as func's output.
    func runs once; each jvp_fn call is one backward through the graph kept from the first."""
    run = _Linearized(func, primals, False, "linearize(func, *primals)")
    flat_p, p_spec = flatten(primals)

    def jvp_fn(*tangents):
        flat_t, t_spec = flatten(tangents)
        if repr(t_spec) != repr(p_spec):
            raise RuntimeError(f"Expected the tangents {t_spec} to have the same argspec as the primals {p_spec}")
        for i, (p, t) in enumerate(zip(flat_p, flat_t)):
            for what, got, want in (("shape", t.shape, p.shape), ("dtype", t.dtype, p.dtype)):
                if got != want:
                    raise RuntimeError(
                        f"tangent:{i} with {what} {got} in flattened pytree doesn't match the {what} {want} of the "
                        "corresponding primal."
                    )
        return run.tangents_tree(run.jvps(flat_t, retain_graph=True))

    return _detach_tree(run.out, run.keeps), jvp_fn


class _Linearized:
    """func run once on fresh primals, and the trick's first backward (uᵀJ, with its graph) through it."""

    def __init__(self, func, primals, has_aux, api):
        self.grad_on = is_grad_enabled()
        with enable_grad():
            args, parts = _differentiable(primals, tuple(range(len(primals))))
            self.out, self.aux = _split_aux(func(*args), has_aux, api)
            self.flat_out, self.out_spec = flatten(self.out)
            _check_outputs(self.flat_out, api)
            self.dummies, self.vjps = trick_vjps(self.flat_out, [t for leaves, _ in parts for t in leaves])
        self.keeps = _graph_keeper([*parts, ([u for u in self.dummies if u is not None], None)], self.grad_on)

    def jvps(self, flat_t, retain_graph):
        """J·t per output (None where independent of the primals): the trick's second backward, with a graph
        under the grad mode of the call (retain_graph: another call will follow)."""
        grad_on = self.grad_on and is_grad_enabled()
        with enable_grad():
            return trick_jvps(self.dummies, self.vjps, flat_t, grad_on, retain_graph=retain_graph)

    def tangents_tree(self, flat):
        """Output-shaped tangents: zeros where independent (and for integer outputs, as torch's)."""
        flat = [zeros_like(o) if t is None else t for o, t in zip(self.flat_out, flat)]
        return _detach_tree(unflatten(flat, self.out_spec), self.keeps)


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


def _check_outputs(flat_out, api):
    if not flat_out or (len(flat_out) == 1 and flat_out[0] is None):
        raise RuntimeError(f"{api}: Expected f to be a function that has non-empty output (got output = {flat_out})")
    for o in flat_out:
        if not isinstance(o, Tensor):
            raise RuntimeError(f"{api}: expected f(*primals) to return only tensors, got unsupported type {type(o)}")
