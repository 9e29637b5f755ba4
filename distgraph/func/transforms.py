"""torch.func's gradient transforms: grad, grad_and_value, vjp, jacrev, jacfwd, hessian, on the
reverse-mode engine (`autograd.grad`).

A transformed call runs the function once with the differentiated arguments (argnums; each may be a
tuple/list/dict of tensors) replaced by fresh tensors that require grad, and differentiates its
output with respect to them. Transforms compose (jacrev(jacrev(f)), grad(grad(f)), vmap(grad(f))):
when an argument already requires grad, as one an outer transform made, the fresh tensor is a view
of it. Under grad mode the gradients are computed with a graph, and a result keeps it when the graph
reaches a tensor that requires grad other than the transform's fresh leaves: an outer level's argument,
or one the function reads from its closure (a module's parameters, as in a gradient penalty), so the
result stays differentiable to it, as torch's. A result that depends on the fresh leaves alone is
detached, as a gradient that no outer level can differentiate.

jacfwd gives jacrev's values and is built on reverse mode too: distgraph's forward mode is double backward
(autograd/forward_ad.py), so a column per input element would cost more than a row per output element.
"""

from distgraph.autograd.functional import grad_allow_unused, jacobian_blocks
from distgraph.autograd.grad_mode import enable_grad, is_grad_enabled
from distgraph.autograd.tensor import Tensor
from distgraph.func.pytree import flatten, unflatten

__all__ = ["grad", "grad_and_value", "vjp", "jacrev", "jacfwd", "hessian"]


def _wrap_argnum(argnum, num_args):
    if not isinstance(argnum, int):
        raise RuntimeError(f"argnum must be int, got: {type(argnum)}")
    if 0 <= argnum < num_args:
        return argnum
    if -num_args <= argnum < 0:
        return argnum + num_args
    raise RuntimeError(f"Got argnum={argnum}, but only {num_args} positional inputs")


def _check_argnums(argnums, num_args):
    """argnums as a tuple of valid indices (torch's checks and wording)."""
    if isinstance(argnums, int):
        return (_wrap_argnum(argnums, num_args),)
    if not isinstance(argnums, tuple):
        raise RuntimeError(f"argnums must be int or Tuple[int, ...], got: {type(argnums)}")
    if len(argnums) == 0:
        raise RuntimeError("argnums must be non-empty")
    if len(set(argnums)) != len(argnums):
        raise RuntimeError(f"argnums elements must be unique, got {argnums}")
    return tuple(_wrap_argnum(a, num_args) for a in argnums)


def _fresh(t):
    """A tensor to differentiate with respect to: a view keeping an outer level's graph, else a new leaf."""
    if not isinstance(t, Tensor):
        raise RuntimeError(f"Thing passed to transform API must be Tensor, got {type(t)}")
    return t.view_as(t) if t.requires_grad else t.detach().requires_grad_()


def _differentiable(args, argnums):
    """(args with argnums' tensors made fresh, each argnum's (fresh leaves, spec))."""
    args = list(args)
    parts = []
    for i in argnums:
        leaves, spec = flatten(args[i])
        leaves = [_fresh(t) for t in leaves]
        args[i] = unflatten(leaves, spec)
        parts.append((leaves, spec))
    return tuple(args), parts


def _pack(per_arg, parts, argnums):
    """Per-argnum results (lists of leaves) rebuilt into each argument's structure; a tuple for tuple argnums."""
    out = tuple(unflatten(leaves, spec) for leaves, (_, spec) in zip(per_arg, parts))
    return out if isinstance(argnums, tuple) else out[0]


def _graph_keeper(parts, grad_on):
    """A predicate: whether a result must keep its graph (see the module docstring). None when grad mode
    was off outside the transform: every result is detached."""
    if not grad_on:
        return None
    fresh = {id(t) for leaves, _ in parts for t in leaves if t.grad_fn is None}
    clean = set()  # Nodes whose whole graph is known to reach only fresh leaves

    def reaches_outside(t):
        if not t.requires_grad:
            return False
        if t.grad_fn is None:
            return id(t) not in fresh
        stack, seen = [t.grad_fn], {id(t.grad_fn)}
        while stack:
            for nxt in stack.pop().next:
                if nxt is None or id(nxt) in seen or id(nxt) in clean:
                    continue
                if isinstance(nxt, Tensor):  # a leaf that requires grad
                    if id(nxt) not in fresh:
                        return True
                    continue
                seen.add(id(nxt))
                stack.append(nxt)
        clean.update(seen)
        return False

    return reaches_outside


def _detach_tree(tree, keeps):
    """`tree` with its tensors detached, but those `keeps` says keep their graph."""
    leaves, spec = flatten(tree)
    return unflatten(
        [t.detach() if isinstance(t, Tensor) and (keeps is None or not keeps(t)) else t for t in leaves], spec
    )


def _split_aux(output, has_aux, api):
    if not has_aux:
        return output, None
    if not (isinstance(output, tuple) and len(output) == 2):
        raise RuntimeError(f"{api}: output of function f should be a tuple: (output, aux) if has_aux is True")
    return output


def grad_and_value(func, argnums=0, has_aux=False):
    """torch.func.grad_and_value: a function returning (gradient, value) of scalar-valued `func`
    (with has_aux: (gradient, (value, aux)))."""

    def wrapper(*args, **kwargs):
        api = "grad_and_value(f)(*args)"
        nums = _check_argnums(argnums, len(args))
        grad_on = is_grad_enabled()
        with enable_grad():
            args, parts = _differentiable(args, nums)
            output, aux = _split_aux(func(*args, **kwargs), has_aux, api)
            if not isinstance(output, Tensor):
                raise RuntimeError(f"{api}: Expected f(*args) to return a Tensor, got {type(output)}")
            if output.ndim != 0:
                raise RuntimeError(
                    f"{api}: Expected f(*args) to return a scalar Tensor, got tensor with {output.ndim} dims. "
                    "Maybe you wanted to use the vjp or jacrev APIs instead?"
                )
            inputs = [t for leaves, _ in parts for t in leaves]
            grads = grad_allow_unused((output,), inputs, create_graph=grad_on)
        grads = iter(_zeros_for_none(grads, inputs))
        per_arg = [[next(grads) for _ in leaves] for leaves, _ in parts]
        keeps = _graph_keeper(parts, grad_on)
        grad_out = _detach_tree(_pack(per_arg, parts, argnums), keeps)
        value = _detach_tree(output, keeps)
        return (grad_out, (value, _detach_tree(aux, keeps))) if has_aux else (grad_out, value)

    return wrapper


def _zeros_for_none(grads, refs):
    from distgraph.ops.creation import zeros_like

    return [zeros_like(r) if g is None else g for g, r in zip(grads, refs)]


def grad(func, argnums=0, has_aux=False):
    """torch.func.grad: a function returning the gradient of scalar-valued `func` with respect to the
    arguments `argnums` (with has_aux: (gradient, aux))."""
    both = grad_and_value(func, argnums, has_aux)

    def wrapper(*args, **kwargs):
        g, value = both(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    return wrapper


def vjp(func, *primals, has_aux=False):
    """torch.func.vjp: (func(*primals), vjp_fn[, aux]); vjp_fn(cotangents) gives one gradient per primal
    (as a tuple), and may be called more than once."""
    grad_on = is_grad_enabled()
    with enable_grad():
        primals, parts = _differentiable(primals, tuple(range(len(primals))))
        out, aux = _split_aux(func(*primals), has_aux, "vjp(f, *primals)")
        flat_out, out_spec = flatten(out)
        if not flat_out:
            raise RuntimeError(
                f"vjp(f, *primals): Expected f to be a function that has non-empty output (got output = {out})"
            )
        for o in flat_out:
            if not isinstance(o, Tensor):
                raise RuntimeError(
                    f"vjp(f, *primals): expected f(*primals) to return only tensors, got unsupported type {type(o)}"
                )
            if not o.is_floating_point():
                raise RuntimeError(
                    f"vjp(f, ...): All outputs of f must be floating-point or complex Tensors, got Tensor with dtype "
                    f"{o.dtype}"
                )
    inputs = [t for leaves, _ in parts for t in leaves]
    keeps = _graph_keeper(parts, grad_on)

    def vjp_fn(cotangents):
        flat_ct, ct_spec = flatten(cotangents)
        if repr(ct_spec) != repr(out_spec):
            raise RuntimeError(
                "Expected pytree structure of cotangents to be the same as pytree structure of outputs to the "
                f"function. cotangents: {ct_spec}, primal output: {out_spec}"
            )
        with enable_grad():
            grads = grad_allow_unused(tuple(flat_out), inputs, tuple(flat_ct), create_graph=grad_on, retain_graph=True)
        it = iter(_zeros_for_none(grads, inputs))
        per_arg = [[next(it) for _ in leaves] for leaves, _ in parts]
        return _detach_tree(_pack(per_arg, parts, tuple(range(len(parts)))), keeps)

    result = _detach_tree(out, keeps)
    return (result, vjp_fn, _detach_tree(aux, keeps)) if has_aux else (result, vjp_fn)


def jacrev(func, argnums=0, *, has_aux=False, chunk_size=None, _preallocate_and_copy=False):
    """torch.func.jacrev: a function returning the Jacobian of `func` with respect to `argnums`: for each
    output, each argument's block is shaped output.shape + argument.shape (nested as output and argnums).
    `chunk_size` is accepted: the rows are computed one backward each, whatever it is."""
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError("jacrev: `chunk_size` should be greater than 0.")

    def wrapper(*args, **kwargs):
        nums = _check_argnums(argnums, len(args))
        grad_on = is_grad_enabled()
        with enable_grad():
            args, parts = _differentiable(args, nums)
            out, aux = _split_aux(func(*args, **kwargs), has_aux, "jacrev(f, ...)(*args)")
            flat_out, out_spec = flatten(out)
            for o in flat_out:
                if not isinstance(o, Tensor):
                    raise RuntimeError(
                        f"jacrev(f, ...)(*args): expected f(*args) to return only tensors, got unsupported type {type(o)}"
                    )
            inputs = [t for leaves, _ in parts for t in leaves]
            blocks = []
            for i, o in enumerate(flat_out):
                it = iter(jacobian_blocks(i, o, inputs, grad_on, strict=False))
                blocks.append(_pack([[next(it) for _ in leaves] for leaves, _ in parts], parts, argnums))
        keeps = _graph_keeper(parts, grad_on)
        jac = _detach_tree(unflatten(blocks, out_spec), keeps)
        return (jac, _detach_tree(aux, keeps)) if has_aux else jac

    return wrapper


def jacfwd(func, argnums=0, has_aux=False, *, randomness="error"):
    """torch.func.jacfwd: the same Jacobian as jacrev (computed in reverse mode, see the module docstring)."""
    if randomness not in ("error", "different", "same"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or 'same'. Got {randomness}")
    return jacrev(func, argnums, has_aux=has_aux)


def hessian(func, argnums=0):
    """torch.func.hessian: jacfwd(jacrev(func, argnums), argnums)."""
    return jacfwd(jacrev(func, argnums), argnums)
