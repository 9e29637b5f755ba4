"""Reverse-mode differentiation over the recorded Nodes.

Policy: one iterative pass (no recursion, so a 10,000-op chain is fine). First a depth-first walk
counts, for every Node reachable from the roots, how many consumers will send it a gradient. Then a
LIFO ready-list runs each Node once all of its consumers have reported: its hooks (its output's
tensor hooks, then the Node's pre-hooks: nodes.py), then its op's backward rule, then the gradients
are reduced to each input's shape, shown to the Node's post-hooks and routed along the edges fixed at
forward time. Leaf gradients are summed first and accumulated into `.grad` at the end, so
leaf hooks see the total (accumulate.py). Unless `retain_graph`, a Node drops its inputs as soon as it
has run (function.release), which frees their arrays and makes a second backward through a Node that
saved some raise, as PyTorch does; one that saved none keeps their metadata and runs again, as torch's.

Two modes share the loop. With `create_graph=True`, or while graph capture traces (it must see the
backward as differentiable ops), gradients are Tensors and each op's differentiable rule runs. In
the normal case (create_graph=False) nobody needs a graph of the backward, so gradients travel as
raw arrays and each op's array rule (`Op.array_backward`, see ops/registry.py) computes them with
numpy/cupy directly; an op without one runs its differentiable rule on wrapped arrays under
no_grad. Tensors are built only where user code sees them: hooks, captured inputs, `.grad`.
"""

import numpy as np

from distgraph.autograd import grad_mode, layout
from distgraph.autograd.accumulate import accumulate, add_leaf, call_hooks, finish_leaf, hand_over, wrap
from distgraph.autograd.callbacks import backward_pass
from distgraph.autograd.function import Node, get_tracer, inputs_as_recorded, release
from distgraph.autograd.nodes import call_post_hooks, call_pre_hooks, hooks_registered
from distgraph.autograd.saved import read_only_for_unneeded
from distgraph.autograd.tensor import Tensor, _grad_fn_slot
from distgraph.autograd.tensor import non_leaves_detached as _non_leaves_detached
from distgraph.backend import CPU, device_of_array, on
from distgraph.errors import AutogradError, DeviceError, ShapeError

_layout_current = layout.current
_ndarray = np.ndarray


def _make_seed(out, grad, index=0):
    """The gradient backward starts `out` (the `index`th output) from: ones for a one-element output, else `grad`,
    of out's shape and on its device (a 0-d one elsewhere is moved there, as torch's)."""
    if grad is None:
        if out.array.size != 1:
            raise AutogradError(
                f"grad can be implicitly created only for scalar outputs; got an output of shape "
                f"{tuple(out.shape)} (from {out.grad_fn.name() if out.grad_fn else 'a leaf'})"
            )
        return Tensor(out.device.xp.ones_like(out.array), device=out.device)
    if not isinstance(grad, Tensor):
        grad = Tensor(out.device.xp.asarray(grad, dtype=out.array.dtype), device=out.device)
    if grad.shape != out.shape:
        raise ShapeError(
            f"backward: gradient of shape {tuple(grad.shape)} does not match output shape {tuple(out.shape)}"
        )
    if grad.device is not out.device:
        if grad.ndim:
            raise DeviceError(f"invalid gradient at index {index} - expected device {out.device} but got {grad.device}")
        grad = grad.to(out.device)
    return grad


def dependencies(roots):
    """How many gradients each reachable Node will receive (iterative DFS).

    Each Node's edges are counted once: a root that is also reached from another root (backward on
    `out` and on `h_n = out[-1]` together) must not be walked twice, or its inputs wait forever for a
    gradient that never comes.
    """
    deps = {}
    walked = set(roots)
    stack = list(walked)
    while stack:
        node = stack.pop()
        for nxt in node.next:
            if type(nxt) is Node:
                deps[nxt] = deps.get(nxt, 0) + 1
                if nxt not in walked:  # first edge into nxt: walk it once
                    walked.add(nxt)
                    stack.append(nxt)
    return deps


def _hooked_leaf_edges(deps, roots):
    """{id(leaf): edges into it} for the leaves with post-accumulate hooks among reachable Nodes' inputs."""
    edges = {}
    for node in {**roots, **deps}:  # each reachable Node once (a root may also be reached from another)
        for nxt in node.next:
            if nxt is not None and type(nxt) is not Node and getattr(nxt, "_post_hooks", None):
                edges[id(nxt)] = edges.get(id(nxt), 0) + 1
    return edges


def sum_to_shape(grad, shape):
    """Reduce a broadcast gradient back to `shape` (a differentiable op, so higher orders work)."""
    if grad.shape == shape:
        return grad
    from distgraph.ops.reduction import sum_to

    return sum_to(grad, shape)


def sum_to_array(g, shape):
    """Reduce a broadcast gradient array back to `shape`: the array form of `sum_to_shape`."""
    have = g.shape
    lead = len(have) - len(shape)
    axes = list(range(lead))  # leading dims broadcasting added, then the size-1 dims it stretched
    for i, s in enumerate(shape):
        if s == 1 and have[i + lead] != 1:
            axes.append(i + lead)
    out = g.sum(tuple(axes), None, None, True) if axes else g
    return out.reshape(shape) if lead else out


def _check_versions(node, inputs):
    """Refuse saved inputs written in place since they were saved, or, as torch, a saved output of
    another Node detached in place since (detach_ moves no version, but the graph it was part of is gone)."""
    if _non_leaves_detached[0]:
        _check_detached(node, inputs)
    for i, v in zip(node.op.save, node.versions):  # versions covers the saved inputs that exist
        if v is not None and inputs[i]._vc[0] != v:  # (None: not saved, see function._saved_version)
            if read_only_for_unneeded(node.op, i, node.next):
                continue
            t = inputs[i]
            raise AutogradError(
                f"one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: [{t.dtype.name} {tuple(t.shape)}], which is input {i} of {node.name()}, is at "
                f"version {t._vc[0]}; expected version {v} instead."
            )


def _check_detached(node, inputs):
    for i, v in zip(node.op.save, node.versions):
        if v is not None and type(node.next[i]) is Node and _grad_fn_slot.__get__(inputs[i]) is None:
            raise AutogradError(
                f"Trying to use a saved tensor that has been detached in-place, i.e. with .detach_() (input {i} "
                f"of {node.name()}). This is not supported, please use out-of-place `.detach()` instead"
            )


def _run_node_arrays(node, grad, retain_graph):
    """The fast mode's step: array grad in, one array (or None) per input out, reduced to its shape.

    Gradients for inputs that need none (`node.next[i] is None`) are left as the rule returned them:
    the caller drops them, so they are never reduced or cast.
    """
    inputs = node.inputs
    if inputs is None or node.epoch is not _layout_current[0]:  # freed, or a tensor's layout changed since
        inputs = inputs_as_recorded(node)
    if node.versions:
        _check_versions(node, inputs)
    op = node.op
    rule = op.array_backward
    if rule is not None:
        grads = rule(node, grad)
        if type(grads) is not tuple:
            grads = (grads,)
    else:
        got = op.backward(node, wrap(grad, device_of_array(grad)))
        grads = tuple(None if g is None else g.array for g in (got if type(got) is tuple else (got,)))
    if not retain_graph:
        release(node)
    result = grads
    nxt = node.next
    for i, g in enumerate(grads):
        if g is None or nxt[i] is None:
            continue
        want = inputs[i].array
        reshape = g.shape != want.shape
        if reshape or (g.dtype is not want.dtype and g.dtype != want.dtype and want.dtype.kind == "f"):
            if reshape:
                g = sum_to_array(g, want.shape)
            if g.dtype != want.dtype and want.dtype.kind == "f":
                g = g.astype(want.dtype)
            if result is grads:
                result = list(grads)
            result[i] = g
    return result


def _run_node(node, grad, retain_graph):
    inputs = node.inputs
    if inputs is None or node.epoch is not _layout_current[0]:  # freed, or a tensor's layout changed since
        inputs = inputs_as_recorded(node)
    op = node.op
    if node.versions:
        _check_versions(node, inputs)
    grads = op.backward(node, grad)
    if type(grads) is not tuple:
        grads = (grads,)
    if not retain_graph:
        release(node)
    result = grads
    for i, g in enumerate(grads):
        if g is None:
            continue
        want, got = inputs[i].array, g.array
        if got.shape != want.shape or (got.dtype != want.dtype and want.dtype.kind == "f"):
            if got.shape != want.shape:
                g = sum_to_shape(g, want.shape)
            if g.array.dtype != want.dtype and want.dtype.kind == "f":
                g = g.to(inputs[i].dtype)
            if result is grads:
                result = list(grads)
            result[i] = g
    return result


def _check_anomaly(node, grads):
    for i, g in enumerate(grads):
        if g is None:
            continue
        array = g.array if isinstance(g, Tensor) else g
        if bool(device_of_array(array).xp.isnan(array).any()):  # NaN only, as torch's (an inf gradient is a value)
            where = "".join(node.stack or ["(no forward trace recorded)\n"])
            raise AutogradError(
                f"Function '{node.name()}' returned nan values in its {i}th output.\n"
                f"The forward call that created it:\n{where}"
            )


def run_backward(outputs, *args, **kwargs):
    """Core of backward() and grad() (`_run_backward`), without numpy's warnings: an inf or NaN in a
    gradient (sqrt's at 0, 0·inf) is a value, as in torch, which warns of none (`detect_anomaly` names
    the op that made one). One errstate per backward call, not per op. On a GPU, the outputs' one is
    cupy's current device throughout (where the gradients between Nodes are summed), and each Node's
    rule runs on the GPU of the gradient it is given."""
    partial = kwargs.get("capture") is not None or kwargs.get("inputs") is not None
    dev = outputs[0].device if outputs else CPU
    with np.errstate(all="ignore"), backward_pass(partial):  # (callbacks.py: what hooks queued runs at the end)
        if dev.index is None:
            return _run_backward(outputs, *args, **kwargs)
        with on(dev):
            return _run_backward(outputs, *args, **kwargs)


def _run_backward(outputs, grad_outputs, retain_graph=False, create_graph=False, capture=None, inputs=None):
    """`capture` (autograd.grad): tensors whose total gradient is returned in a dict by id; no `.grad`
    changes. `inputs` (backward(inputs=...)): the only tensors whose `.grad` accumulates (the
    non-leaves among them are made to retain their grad). With either, only the Nodes leading to
    them run, as torch's (so their hooks fire, and their saved tensors are checked, only there).

    As torch, autograd.grad captures a non-leaf's gradient before its hooks run when its Node runs
    (the hooks still shape what flows on), after them when it need not run.
    """
    fast = not create_graph and get_tracer() is None  # gradients as arrays (see module docstring)
    owned = {}  # fast mode: id(array) -> the Tensor around it already handed out (accumulate.hand_over)
    run = _run_node_arrays if fast else _run_node
    roots = []
    leaf_grads = {}  # id(leaf) -> [leaf, grad]
    captured = {}
    capture_nodes = {}
    goal_leaves = None  # ids of the leaves whose gradient is wanted (None: every leaf's)
    goal_nodes = {}  # Nodes that must run (backward's non-leaf inputs)
    if capture is not None or inputs is not None:
        goal_leaves = set()
        for t in capture if capture is not None else inputs:
            if t.grad_fn is None:
                goal_leaves.add(id(t))
            elif capture is not None:
                capture_nodes[t.grad_fn] = t
            else:
                goal_nodes[t.grad_fn] = t
    grads = {}
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        node = out.grad_fn
        if node is None and not out._own_requires_grad:  # (a view requiring grad through its base only
            # has no place for a gradient, as torch's: see View.requires_grad)
            raise AutogradError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        seed = _make_seed(out, g, i)
        if fast:
            owned[id(seed.array)] = seed  # (the caller's: a .grad it reaches is a copy, an autograd.grad
            seed = seed.array  # result it is, as torch's)
        if node is None:
            if goal_leaves is None or id(out) in goal_leaves:
                add_leaf(leaf_grads, out, seed, create_graph)
            continue
        grads[node] = grads[node] + seed if node in grads else seed
        roots.append(node)
    for i, t in enumerate(inputs or ()):  # backward's inputs, checked once the roots passed theirs
        if not t.requires_grad:
            raise AutogradError(f"backward: inputs[{i}] does not require grad, so no gradient can be kept for it")
        if t.grad_fn is not None:
            t.retain_grad()  # as torch, its .grad is kept, in this backward and the next ones
    deps = dependencies(roots)
    needed = (
        None if goal_leaves is None else _needed(roots, deps, {**goal_nodes, **capture_nodes}, goal_nodes, goal_leaves)
    )
    # leaves with post-accumulate hooks get their .grad (and the hooks run) as soon as their last
    # gradient arrives; the others at the end, all together
    early = _hooked_leaf_edges(deps, dict.fromkeys(roots)) if capture is None and _post_hooks_exist() else {}
    ready = [n for n in dict.fromkeys(roots) if deps.get(n, 0) == 0]
    anomaly = grad_mode.anomaly["enabled"]
    node_hooks = hooks_registered[0]  # (nodes.py: Node hooks are looked for only once some were registered)
    with grad_mode.set_grad_enabled(create_graph):
        while ready:
            node = ready.pop()
            grad = grads.pop(node, None)
            if needed is not None and node not in needed:  # only a captured one reaches here with a grad
                if grad is not None and node in capture_nodes:
                    if node.hooks:
                        grad = call_hooks(node.hooks, grad, fast)
                    captured[id(capture_nodes[node])] = hand_over(grad, owned, True) if fast else grad
                continue
            if capture_nodes and grad is not None and node in capture_nodes:
                captured[id(capture_nodes[node])] = hand_over(grad, owned, True) if fast else grad
            if grad is not None and node.hooks:
                grad = call_hooks(node.hooks, grad, fast)
            if grad is not None:
                if node_hooks:
                    grad = call_pre_hooks(node, grad, fast)
                if type(grad) is _ndarray:  # (numpy's: the cpu fast path's one test for devices)
                    in_grads = run(node, grad, retain_graph)
                else:  # on the GPU the gradient is on: cupy's current one is where cupy allocates
                    with on(grad.device if isinstance(grad, Tensor) else device_of_array(grad)):
                        in_grads = run(node, grad, retain_graph)
                if node_hooks:
                    in_grads = call_post_hooks(node, in_grads, grad, fast)
                if anomaly:
                    _check_anomaly(node, in_grads)
            else:
                in_grads = (None,) * len(node.next)
            for nxt, g in zip(node.next, in_grads):
                if nxt is None:
                    continue
                if type(nxt) is Node:
                    if needed is not None and nxt not in needed and nxt not in capture_nodes:
                        continue
                    if g is not None:
                        prev = grads.get(nxt)
                        if prev is None:
                            grads[nxt] = g
                        else:
                            grads[nxt] = prev + g if fast else accumulate(prev, g, create_graph)
                    left = deps[nxt] - 1
                    deps[nxt] = left
                    if left == 0:
                        ready.append(nxt)
                elif goal_leaves is None or id(nxt) in goal_leaves:
                    if g is not None:
                        add_leaf(leaf_grads, nxt, g, create_graph)
                    if early and id(nxt) in early:
                        early[id(nxt)] -= 1
                        if early[id(nxt)] == 0 and id(nxt) in leaf_grads:
                            finish_leaf(*leaf_grads.pop(id(nxt)), owned, fast, create_graph, captured, capture)
        for leaf, g in leaf_grads.values():
            finish_leaf(leaf, g, owned, fast, create_graph, captured, capture)
    return captured


def topological_order(roots, deps):
    """The Nodes reachable from `roots`, each after every Node that consumes it: Kahn's order over the
    gradient counts `deps` (`dependencies`, left as they are). A depth-first order that marks a Node
    when it is first pushed is not one: a Node pushed from a root and reached again through another
    consumer could come first."""
    left = dict(deps)
    order, ready = [], [n for n in dict.fromkeys(roots) if left.get(n, 0) == 0]
    while ready:
        node = ready.pop()
        order.append(node)
        for nxt in node.next:
            if type(nxt) is Node:
                left[nxt] -= 1
                if left[nxt] == 0:
                    ready.append(nxt)
    return order


def _needed(roots, deps, goals, run_goals, goal_leaves):
    """The Nodes that must run for a gradient to reach a goal (a Node in `goals`, a leaf in
    `goal_leaves`), as torch's exec_info: those with a path to one, and `run_goals` themselves. A
    Node feeding a needed one is needed too, so the ones that run still count their inputs right."""
    needed = set(run_goals)
    for node in reversed(topological_order(roots, deps)):
        for nxt in node.next:
            if nxt in needed or nxt in goals or (nxt is not None and type(nxt) is not Node and id(nxt) in goal_leaves):
                needed.add(node)
                break
    return needed


def _post_hooks_exist():
    """Whether any leaf may have a post-accumulate hook (checked per backward, so plain runs pay nothing)."""
    from distgraph.autograd import tensor

    return tensor.post_hooks_registered[0] > 0


def _paired_gradients(outputs, grads):
    """One gradient (or None) per output, as torch pairs them: None for all, a lone Tensor, or a sequence;
    fewer than the outputs are refused (torch's zip ignores extra ones)."""
    if grads is None:
        return [None] * len(outputs)
    grads = [grads] if isinstance(grads, Tensor) else list(grads)
    if len(grads) < len(outputs):
        raise AutogradError(f"got {len(outputs)} tensors and {len(grads)} gradients")
    return grads[: len(outputs)]


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """torch.autograd.backward: accumulate d(tensors)/d(leaf) into each leaf's `.grad`."""
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    grad_tensors = _paired_gradients(tensors, grad_tensors)
    if retain_graph is None:
        retain_graph = create_graph
    if inputs is not None:
        inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        if not inputs:
            raise AutogradError("backward: the `inputs` argument cannot be empty (leave it None for every leaf)")
        run_backward(tensors, grad_tensors, retain_graph, create_graph, inputs=inputs)
        return
    run_backward(tensors, grad_tensors, retain_graph, create_graph)


def grad(
    outputs,
    inputs,
    grad_outputs=None,
    retain_graph=None,
    create_graph=False,
    only_inputs=True,
    allow_unused=None,
    is_grads_batched=False,
    materialize_grads=False,
):
    """torch.autograd.grad: the gradients of `outputs` w.r.t. `inputs`, without touching `.grad`.

    `only_inputs` is accepted for torch compatibility and ignored (as torch does); `materialize_grads`
    returns zeros instead of None for unused inputs (and implies allow_unused). `is_grads_batched`: the first
    dim of each grad_output indexes a batch of them, and each input's gradient gets that dim too (torch's
    vmap over the backward; here one backward per batch element, stacked: the same values).
    """
    if is_grads_batched:
        return _batched_grad(outputs, inputs, grad_outputs, retain_graph, create_graph, allow_unused, materialize_grads)
    if allow_unused is None:
        allow_unused = materialize_grads
    elif materialize_grads and not allow_unused:
        raise AutogradError("grad: expected allow_unused to be True or not passed when materialize_grads=True")
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    grad_outputs = _paired_gradients(outputs, grad_outputs)
    if retain_graph is None:
        retain_graph = create_graph
    for t in inputs:
        if not t.requires_grad:
            raise AutogradError("One of the differentiated Tensors does not require grad")
    got = run_backward(outputs, grad_outputs, retain_graph, create_graph, capture=inputs)
    result = []
    for i, t in enumerate(inputs):
        g = got.get(id(t))
        if g is None and not allow_unused:
            raise AutogradError(
                f"One of the differentiated Tensors (input {i}, shape {tuple(t.shape)}) appears to not have "
                "been used in the graph. Set allow_unused=True if this is the desired behavior."
            )
        if g is None and materialize_grads:
            g = Tensor(t.device.xp.zeros_like(t.array), requires_grad=create_graph, device=t.device)  # (torch's)
        result.append(g)
    return tuple(result)


def _batched_grad(outputs, inputs, grad_outputs, retain_graph, create_graph, allow_unused, materialize_grads):
    """`grad` with is_grads_batched: one backward per row of the grad_outputs, each input's gradients stacked."""
    from distgraph.ops.shape import stack  # (ops build on autograd: imported where used)

    listed = [grad_outputs] if isinstance(grad_outputs, Tensor) else list(grad_outputs or ())
    if not listed or any(not isinstance(g, Tensor) or g.ndim == 0 for g in listed):
        raise AutogradError("grad: is_grads_batched=True needs grad_outputs, each a tensor with a batch dim first")
    rows = {g.shape[0] for g in listed}
    if len(rows) != 1:
        raise AutogradError(f"grad: is_grads_batched=True needs one batch size in grad_outputs, got {sorted(rows)}")
    (n,) = rows
    per_row = [
        grad(outputs, inputs, [g[k] for g in listed], True if k < n - 1 else retain_graph, create_graph,
             allow_unused=allow_unused, materialize_grads=materialize_grads)
        for k in range(n)
    ]  # fmt: skip
    return tuple(None if col[0] is None else stack(list(col)) for col in zip(*per_row))
