"""torch.autograd.forward_ad: dual tensors and their tangents, computed on the reverse-mode engine.

distgraph records only the reverse graph, so a tangent is never pushed forward op by op. Instead:

- `make_dual(x, t)` returns a view of a *seed*: a private leaf sharing x's memory, or, when x requires
  grad, a view of x (so that ordinary backward through results still reaches x). The level records
  each seed with its tangent.
- `unpack_dual(y)` finds the seeds y's graph reaches and computes y's tangent Σᵢ Jᵢ·tᵢ by the
  double-backward trick (`trick_vjps`, `trick_jvps`, also the engine of `dg.func.jvp` and `linearize`):
  with u a dummy shaped like y, gᵢ = ∂(uᵀy)/∂seedᵢ is linear in u, so J·t = ∂(Σᵢ gᵢ·tᵢ)/∂u. That is
  two backward passes per unpacked tensor (the second with a graph under grad mode, so the tangent is
  itself differentiable: forward-over-reverse). The latest results are cached (until changed in place).

Where this differs from torch, and why:
- An op run under no_grad (or inference_mode) records no graph, so nothing links its result to a dual
  and the trick cannot see its tangent. unpack_dual of a float tensor without a graph under no_grad
  inside a level with duals is refused, as it cannot tell such a result from an unrelated tensor; the
  same result unpacked with grad mode on reads as unrelated (tangent None).
- A dual requires grad (the trick differentiates through it). The primal and tangent unpack_dual
  returns are detached unless their graph reaches a tensor of the user's that requires grad.
- The dual is a view of a leaf that requires grad, so an in-place op on the dual itself is refused
  (torch refuses it too when x requires grad); in-place ops on results work.
- The level keeps its seeds and tangents until it exits.
- A tangent needs the graph: after a `.backward()` that freed it, unpack_dual is refused saying so (torch
  pushed the tangent forward already); unpack first, or backward with retain_graph=True.
"""

import contextlib
from collections import namedtuple

from distgraph.autograd.functional import grad_allow_unused, trick_dummy
from distgraph.autograd.grad_mode import enable_grad, is_grad_enabled
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError

__all__ = ["UnpackedDualTensor", "dual_level", "enter_dual_level", "exit_dual_level", "make_dual", "unpack_dual"]

UnpackedDualTensor = namedtuple("UnpackedDualTensor", ["primal", "tangent"])
_LEVEL = 0  # the one level index there is: torch allows no nesting, so each new level is 0 again
_CACHED = 16  # how many unpack_dual results a level keeps (the most recent), so asking twice costs nothing


def trick_vjps(outputs, inputs):
    """The trick's first backward: (a dummy u per output, None for a non-float one (its tangent is zeros, as
    torch's); uᵀJ per input, None where unused), with a graph so that it can be differentiated in u."""
    dummies = [trick_dummy(o) if o.is_floating_point() else None for o in outputs]
    floats = [(o, u) for o, u in zip(outputs, dummies) if u is not None]
    if not floats:
        return dummies, (None,) * len(inputs)
    outs, us = zip(*floats)
    return dummies, grad_allow_unused(outs, inputs, us, create_graph=True)


def trick_jvps(dummies, vjps, tangents, create_graph, retain_graph=None):
    """The trick's second backward: J·t per output of `trick_vjps` (None for a non-float or independent one)."""
    us = [u for u in dummies if u is not None]
    got = iter(grad_allow_unused(vjps, us, tangents, create_graph=create_graph, retain_graph=retain_graph))
    return [next(got) if u is not None else None for u in dummies]


class _Level:
    """What a dual level records: its seeds and their tangents, its duals, and unpack_dual's cache."""

    def __init__(self):
        self.seeds = []  # what the trick differentiates with respect to, one per dual
        self.tangents = []  # each seed's tangent, in its dtype
        self.duals = {}  # id(dual): (dual, the tensor it was made of, the tangent as given)
        self.private = set()  # ids of the seeds that are private leaves
        self.cache = {}  # (id(y), grad mode): (y, y's version, y's grad_fn, result), oldest first


_current = [None]  # the level entered, or None


def enter_dual_level():
    """Open a new forward AD level (its index, always 0: levels do not nest)."""
    if _current[0] is not None:
        raise RuntimeError("Nested forward mode AD is not supported at the moment")
    _current[0] = _Level()
    return _LEVEL


def exit_dual_level(*, level=None):
    """Close the current level: its duals' tangents are forgotten."""
    current = -1 if _current[0] is None else _LEVEL
    if level is None:
        level = current
    if level != current:
        raise RuntimeError(
            "Trying to exit a forward AD level that was not the last one that was created. This is not supported."
        )
    if level < 0:
        raise RuntimeError("Dual level must be a positive number.")
    _current[0] = None


class dual_level(contextlib.ContextDecorator):  # noqa: N801 - PyTorch's name
    """`with dual_level():` (or as a decorator) the scope in which make_dual's tangents exist."""

    def __enter__(self):
        return enter_dual_level()

    def __exit__(self, *exc):
        exit_dual_level()
        return False


def make_dual(tensor, tangent, *, level=None):
    """A tensor with `tensor`'s values whose tangent is `tangent`: a view of a seed the level records."""
    lvl = _current[0]
    if lvl is None and (level is None or level < 0):
        raise RuntimeError(
            "Trying to create a dual Tensor for forward AD but no level exists, make sure to enter_dual_level() first."
        )
    if not tensor.is_floating_point():
        raise ValueError(f"Expected primal to be floating point or complex, but got: {tensor.dtype}")
    if not tangent.is_floating_point():
        raise ValueError(f"Expected tangent to be floating point or complex, but got: {tangent.dtype}")
    if lvl is None or level not in (None, _LEVEL):
        raise RuntimeError("Invalid level given to _make_dual")
    if tuple(tensor.shape) != tuple(tangent.shape):
        raise RuntimeError(
            "Trying to set a forward gradient that has a different size than that of the original Tensor, this is "
            f"not supported. Tensor is of size {list(tensor.shape)} while the given forward gradient is of size "
            f"{list(tangent.shape)}."
        )
    if id(tensor) in lvl.duals or _seeds_reached(lvl, tensor):
        raise RuntimeError(
            f"Making a dual Tensor based on a Tensor that already has a forward gradient at the same level {_LEVEL} "
            "is not supported."
        )
    with enable_grad():
        seed = tensor.view_as(tensor) if tensor.requires_grad else tensor.detach().requires_grad_()
        dual = seed.view_as(seed)
        lvl.tangents.append(tangent if tangent.dtype == tensor.dtype else tangent.to(tensor.dtype))
    if seed.grad_fn is None:
        lvl.private.add(id(seed))
    lvl.seeds.append(seed)
    lvl.duals[id(dual)] = (dual, tensor, tangent)
    return dual


def unpack_dual(tensor, *, level=None):
    """(primal, tangent) of `tensor`: tangent None where it depends on no dual of the level (outside any level,
    for an integer tensor, for one that needs no grad), else J·t by double backward (module docstring)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"unpack_dual(): argument 'dual' (position 1) must be Tensor, not {type(tensor).__name__}")
    lvl = _current[0]
    if lvl is None or level not in (None, _LEVEL):
        return UnpackedDualTensor(tensor, None)
    dual = lvl.duals.get(id(tensor))
    if dual is not None and dual[0] is tensor:
        return UnpackedDualTensor(dual[1].view_as(dual[1]), dual[2])
    if not tensor.is_floating_point():
        return UnpackedDualTensor(tensor, None)
    grad_on = is_grad_enabled()
    if not tensor.requires_grad:
        if lvl.seeds and not grad_on:
            raise AutogradError(
                "unpack_dual: this tensor has no autograd graph and grad mode is off, so its tangent cannot be told: "
                "distgraph computes tangents by double backward through the graph ops record, and ops run under "
                "no_grad or inference_mode record none. Compute it with grad mode on inside the dual level."
            )
        return UnpackedDualTensor(tensor, None)
    key = (id(tensor), grad_on)
    hit = lvl.cache.pop(key, None)
    if hit is None or hit[0] is not tensor or hit[1] != tensor._version or hit[2] is not tensor.grad_fn:
        hit = (tensor, tensor._version, tensor.grad_fn, _unpack(lvl, tensor, grad_on))
    lvl.cache[key] = hit  # (now the most recent)
    if len(lvl.cache) > _CACHED:
        del lvl.cache[next(iter(lvl.cache))]
    return hit[3]


def _unpack(lvl, y, grad_on):
    leaves, nodes = _reach(y)
    used = _seeds_in(lvl, leaves, nodes)
    if not used:
        return UnpackedDualTensor(y, None)
    try:
        with enable_grad():
            dummies, vjps = trick_vjps([y], [lvl.seeds[i] for i in used])
            (tangent,) = trick_jvps(dummies, vjps, [lvl.tangents[i] for i in used], grad_on, retain_graph=True)
    except AutogradError as exc:  # a tensor backward needs changed in place since, a graph a backward() freed
        raise type(exc)(
            f"unpack_dual computes the tangent by backward through the graph, which failed (unpack before a "
            f"backward() that frees the graph, or call backward(retain_graph=True)): {exc}"
        ) from exc
    if tangent is None:  # y depends on a dual only through ops with a zero derivative
        from distgraph.ops.creation import zeros_like

        tangent = zeros_like(y)
    private = lvl.private | {id(dummies[0])}
    primal = y if _reaches_users(leaves, private) else y.detach()
    if tangent.requires_grad and not _reaches_users(_reach(tangent)[0], private):
        tangent = tangent.detach()
    return UnpackedDualTensor(primal, tangent)


def _reach(t):
    """(ids of the leaves that require grad, ids of the Nodes) of `t`'s graph."""
    if t.grad_fn is None:
        return ({id(t)} if t.requires_grad else set()), set()
    leaves, nodes, stack = set(), {id(t.grad_fn)}, [t.grad_fn]
    while stack:
        for nxt in stack.pop().next:
            if isinstance(nxt, Tensor):
                leaves.add(id(nxt))
            elif nxt is not None and id(nxt) not in nodes:
                nodes.add(id(nxt))
                stack.append(nxt)
    return leaves, nodes


def _seeds_in(lvl, leaves, nodes):
    """The indices of the level's seeds among a graph's leaves and Nodes (`_reach`)."""
    return [i for i, s in enumerate(lvl.seeds) if (id(s) in leaves if s.grad_fn is None else id(s.grad_fn) in nodes)]


def _seeds_reached(lvl, t):
    return t.requires_grad and bool(lvl.seeds) and bool(_seeds_in(lvl, *_reach(t)))


def _reaches_users(leaves, private):
    """Whether a graph with these leaves reaches a tensor that requires grad other than the level's own."""
    return not leaves <= private
