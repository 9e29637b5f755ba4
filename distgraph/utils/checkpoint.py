"""torch.utils.checkpoint: activation checkpointing in eager mode (graph/passes/checkpoint.py is the
same trade for captured graphs).

Policy. The checkpointed function runs under no_grad, so none of its intermediates is kept; one
custom Function Node (autograd/custom.py) stands for it in the graph, holding only its inputs and
the random generators' state. When backward reaches that Node it runs the function again, with grad
enabled and the generators put back where they were (so dropout draws the same mask), inside
`fork_rng` (so the recomputation leaves the caller's random stream alone), and backpropagates
through the recomputed graph. The same ops run in the same order as without checkpointing, so the
gradients are the same bit for bit.

The two variants are torch's:
- use_reentrant=True: the Node's inputs are the tensor arguments; backward runs a nested
  `autograd.backward`, which accumulates the `.grad` of the parameters the function uses. So, as
  torch's, it needs an argument that requires grad, and it refuses a backward that computes only
  some gradients (autograd.grad, backward(inputs=...)).
- use_reentrant=False: the forward is traced (autograd.function's tracer hears every op) to find the
  tensors from outside the function that it reads and that require grad — its arguments, and the
  parameters and other tensors it reaches through closures or keyword arguments. They all become
  inputs of the Node, so their gradients flow through the outer backward like any op's: autograd.grad
  works, and parameters get their gradient even when no argument requires grad. Backward differentiates
  the recomputed graph with `autograd.grad` up to exactly those tensors (`_stand_in`: one with history
  is reached through a fresh view, where the gradient is captured and the outer backward carries it
  on), with create_graph when the outer backward has it, so higher-order gradients work.

Nested checkpoints work with both: the inner Node is recorded when the outer one recomputes.
"""

import warnings

from distgraph.autograd.callbacks import is_checkpoint_valid
from distgraph.autograd.custom import Function
from distgraph.autograd.engine import backward as autograd_backward
from distgraph.autograd.engine import grad as autograd_grad
from distgraph.autograd.function import Node, get_tracer, set_tracer
from distgraph.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError
from distgraph.nn.container import Sequential
from distgraph.ops.random_extra import fork_rng, replay_rng_state, stash_rng_state

__all__ = ["checkpoint", "checkpoint_sequential", "CheckpointError"]


class CheckpointError(AutogradError):
    """torch.utils.checkpoint.CheckpointError: the recomputation did not reproduce the forward."""


def noop_context_fn():
    """The default `context_fn`: no context around the forward or the recomputation."""
    import contextlib

    return contextlib.nullcontext(), contextlib.nullcontext()


def _devices(tensors):
    return {t.device for t in tensors if isinstance(t, Tensor)}


def _detached(args):
    """The tensor arguments as fresh leaves (same requires_grad), so the recomputed graph ends at them."""
    out = []
    for a in args:
        if isinstance(a, Tensor):
            d = a.detach()
            d.requires_grad = a.requires_grad
            a = d
        out.append(a)
    return tuple(out)


def _recompute(run, args, kwargs, preserve, stash):
    """`run(*args, **kwargs)` again with grad enabled and, when `preserve`, the stashed random state."""
    with fork_rng(enabled=preserve), enable_grad():
        if preserve:
            replay_rng_state(stash)
        return run(*args, **kwargs)


class CheckpointFunction(Function):
    """The reentrant variant (torch's CheckpointFunction): apply(run_function, preserve_rng_state, *args)."""

    @staticmethod
    def forward(ctx, run_function, preserve_rng_state, *args):
        if not any(a.requires_grad for a in args if isinstance(a, Tensor)):
            warnings.warn("None of the inputs have requires_grad=True. Gradients will be None", stacklevel=4)
        ctx.run_function = run_function
        ctx.preserve_rng_state = preserve_rng_state
        ctx.stash = stash_rng_state(_devices(args)) if preserve_rng_state else None
        ctx.inputs = [None if isinstance(a, Tensor) else a for a in args]
        ctx.tensor_indices = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        ctx.save_for_backward(*[a for a in args if isinstance(a, Tensor)])
        return run_function(*args)  # (apply runs forward under no_grad)

    @staticmethod
    def backward(ctx, *grads):
        if not is_checkpoint_valid():
            raise AutogradError(
                "When use_reentrant=True, torch.utils.checkpoint is incompatible with .grad() or passing an "
                "`inputs` parameter to .backward(). To resolve this error, you can either set use_reentrant=False, "
                "or call .backward() without passing the `inputs` argument."
            )
        inputs = list(ctx.inputs)
        for i, t in zip(ctx.tensor_indices, ctx.saved_tensors):
            inputs[i] = t
        detached = _detached(inputs)
        outputs = _recompute(ctx.run_function, detached, {}, ctx.preserve_rng_state, ctx.stash)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grads) if isinstance(o, Tensor) and o.requires_grad]
        if not pairs:
            raise AutogradError("none of output has requires_grad=True, this checkpoint() is not necessary")
        autograd_backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None) + tuple(d.grad if isinstance(d, Tensor) else None for d in detached)


class _Discover:
    """Tracer for the no_grad forward of the non-reentrant variant: the tensors its ops read that it did
    not make and that require grad (in order of first use). Passes every op on to an outer tracer."""

    def __init__(self, outer):
        self.outer, self.made, self.found = outer, set(), {}
        self.host_read = getattr(outer, "host_read", None)

    def record(self, op, inputs, attrs, out):
        for t in inputs:
            if id(t) not in self.made and t.requires_grad:
                self.found.setdefault(id(t), t)
        self.made.add(id(out))
        if self.outer is not None:
            self.outer.record(op, inputs, attrs, out)


class _Cut:
    """Tracer for the recomputation: an edge from a recorded op into a tensor of `cut` (one with history
    that the function reads from outside, not as an argument) is rerouted to its stand-in's Node."""

    def __init__(self, outer, cut):
        self.outer, self.cut = outer, cut
        self.host_read = getattr(outer, "host_read", None)

    def record(self, op, inputs, attrs, out):
        node = out.grad_fn
        if type(node) is Node and any(id(t) in self.cut for t in inputs):
            node.next = tuple(self.cut[id(t)].grad_fn if id(t) in self.cut else n for t, n in zip(inputs, node.next))
        if self.outer is not None:
            self.outer.record(op, inputs, attrs, out)


def _traced(tracer, fn, *args, **kwargs):
    prev = set_tracer(tracer)
    try:
        return fn(*args, **kwargs)
    finally:
        set_tracer(prev)


class _NonReentrant(Function):
    """The non-reentrant variant's Node: apply(state, *args, *extra) with the outputs already computed."""

    @staticmethod
    def forward(ctx, state, *tensors):
        ctx.state = state
        # an output the loss does not read gets None, not zeros: what only it reaches gets no gradient (None, as
        # torch's), where zeros through it gave parameters a zero grad their optimizer then stepped (weight decay)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*[t for t in tensors if isinstance(t, Tensor)])
        return state.outputs if state.multi else state.outputs[0]

    @staticmethod
    def backward(ctx, *grads):
        st = ctx.state
        saved = iter(ctx.saved_tensors)
        everything = [next(saved) if isinstance(a, Tensor) else a for a in st.args + st.extra]
        args, extra = everything[: len(st.args)], everything[len(st.args) :]
        with enable_grad():  # the stand-ins for tensors with history (see _stand_in)
            args = [_stand_in(a) for a in args]
            cut = {id(t): _stand_in(t) for t in extra if t.grad_fn is not None}
        with st.recompute_context:
            outputs = _traced(
                _Cut(get_tracer(), cut) if cut else get_tracer(), _recompute, st.function, args, st.kwargs,
                st.preserve, st.stash,
            )  # fmt: skip
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        if st.check:
            _check_same(st.meta, outputs)
        wanted = [isinstance(a, Tensor) and a.requires_grad for a in args]
        targets = [a for a, w in zip(args, wanted) if w] + [cut.get(id(t), t) for t in extra]
        pairs = [(o, g) for o, g in zip(outputs, grads) if isinstance(o, Tensor) and o.requires_grad and g is not None]
        got = iter(
            autograd_grad([o for o, _ in pairs], targets, [g for _, g in pairs], allow_unused=True,
                          create_graph=is_grad_enabled())
            if pairs and targets else [None] * len(targets)
        )  # fmt: skip
        arg_grads = [next(got) if w else None for w in wanted]
        return (None, *arg_grads, *got)


def _stand_in(t):
    """What the recomputation differentiates to in place of `t`: a leaf itself; a tensor with history a
    fresh view of it. The view's Node is made here, so no graph outside can lead to it: autograd.grad
    captures its gradient without running on into `t`'s history (the outer backward does that), while
    a create_graph backward still sees the recomputed graph reach `t` (higher-order gradients)."""
    return t.view_as(t) if isinstance(t, Tensor) and t.grad_fn is not None else t


def _meta(outputs):
    return [(tuple(o.shape), o.dtype, o.device) if isinstance(o, Tensor) else None for o in outputs]


def _check_same(meta, outputs):
    """determinism_check="default": the recomputed outputs have the forward's shapes, dtypes and devices."""
    now = _meta(outputs)
    if now != meta:
        diff = [
            f"tensor at position {i}: forward {m} recomputed {n}" for i, (m, n) in enumerate(zip(meta, now)) if m != n
        ]
        raise CheckpointError(
            "torch.utils.checkpoint: Recomputed values for the following tensors have different metadata than "
            "during the forward pass.\n" + "\n".join(diff or [f"{len(meta)} outputs in forward, {len(now)} now"])
        )


class _State:
    """What the non-reentrant Node needs to recompute (held by its ctx, freed with its graph)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _checkpoint_without_reentrant(function, preserve, context_fn, determinism_check, args, kwargs):
    if determinism_check not in ("default", "none"):
        raise ValueError(f"determinism_check should be one of ['default', 'none'], but got {determinism_check}")
    forward_context, recompute_context = context_fn()
    if not is_grad_enabled():
        with forward_context:
            return function(*args, **kwargs)
    tensors = [a for a in args if isinstance(a, Tensor)] + [v for v in kwargs.values() if isinstance(v, Tensor)]
    stash = stash_rng_state(_devices(tensors)) if preserve else None
    tracer = _Discover(get_tracer())
    with no_grad(), forward_context:
        outputs = _traced(tracer, function, *args, **kwargs)
    multi = isinstance(outputs, tuple)
    outs = outputs if multi else (outputs,)
    arg_ids = {id(a) for a in args if isinstance(a, Tensor)}
    extra = tuple(t for i, t in tracer.found.items() if i not in arg_ids)
    state = _State(
        function=function, args=tuple(args), extra=extra, kwargs=kwargs, preserve=preserve, stash=stash,
        outputs=outs, multi=multi, meta=_meta(outs), check=determinism_check == "default", recompute_context=recompute_context,
    )  # fmt: skip
    result = _NonReentrant.apply(state, *args, *extra)
    state.outputs = None  # (apply has them; the Node must not keep them alive)
    return result


def checkpoint(
    function, *args, use_reentrant=None, context_fn=noop_context_fn, determinism_check="default", debug=False,
    early_stop=True, **kwargs,
):  # fmt: skip
    """torch.utils.checkpoint.checkpoint: `function(*args, **kwargs)` without keeping its intermediates;
    backward recomputes them (module docstring). `preserve_rng_state=True` (a keyword) replays the random
    draws. `early_stop` is accepted: the recomputation always runs the whole function (same values);
    `debug=True` is refused."""
    if use_reentrant is None:
        warnings.warn(
            "torch.utils.checkpoint: the use_reentrant parameter should be passed explicitly. Starting in "
            "PyTorch 2.9, calling checkpoint without use_reentrant will raise an exception. use_reentrant=False is "
            "recommended, but if you need to preserve the current default behavior, you can pass "
            "use_reentrant=True. Refer to docs for more details on the differences between the two variants.",
            stacklevel=2,
        )
        use_reentrant = True
    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs and use_reentrant:
        raise ValueError("Unexpected keyword arguments: " + ",".join(arg for arg in kwargs))
    if use_reentrant:
        if context_fn is not noop_context_fn or debug is not False:
            raise ValueError("Passing `context_fn` or `debug` is only supported when use_reentrant=False.")
        return CheckpointFunction.apply(function, preserve, *args)
    if debug:
        raise NotImplementedError("checkpoint: debug=True (torch's recomputation log) is not supported")
    return _checkpoint_without_reentrant(function, preserve, context_fn, determinism_check, args, kwargs)


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """torch.utils.checkpoint.checkpoint_sequential: run `functions` (a list, or a Sequential's children)
    in `segments` chunks, checkpointing every chunk but the last, which backward needs first."""
    if use_reentrant is None:
        warnings.warn(
            "torch.utils.checkpoint.checkpoint_sequential: the use_reentrant parameter should be passed "
            "explicitly. In version 2.9 we will raise an exception if use_reentrant is not passed. "
            "use_reentrant=False is recommended, but if you need to preserve the current default behavior, you "
            "can pass use_reentrant=True. Refer to docs for more details on the differences between the two "
            "variants.",
            stacklevel=2,
        )
        use_reentrant = True
    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError("Unexpected keyword arguments: " + ",".join(arg for arg in kwargs))

    def run_function(start, end):
        def forward(x):
            for j in range(start, end + 1):
                x = functions[j](x)
            return x

        return forward

    if isinstance(functions, Sequential):
        functions = list(functions.children())
    segment_size = len(functions) // segments
    end = -1
    for start in range(0, segment_size * (segments - 1), segment_size):
        end = start + segment_size - 1
        input = checkpoint(run_function(start, end), input, use_reentrant=use_reentrant, preserve_rng_state=preserve)
    return run_function(end + 1, len(functions) - 1)(input)
