"""dg.compile: capture a function or module once, optimize the graph, and call it like the original.

    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy)   # training step: returns the loss and
    loss = step(x, y)                                          # writes p.grad like loss.backward()
    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy, optimizer=opt)  # + opt.step() in the graph
    f = dg.compile(fn, (x,)); out = f(x)                       # inference: outputs without grad
    model = dg.compile(model); out = model(x)                 # torch's way: captured at the first call

Guards (graph/guards.py): each captured variant is keyed by the shapes, dtypes and devices of the
inputs and, for a module, the train/eval mode, the public int/float/bool attributes of its submodules
(`self.temperature`), its parameters' requires_grad and the identity of every submodule, parameter, buffer
and tensor attribute it holds (one replaced, `model.fc = nn.Linear(...)`, leaves the graph reading the old
one: calls then run eagerly, with a warning). A call whose inputs and module state match the
previous call's (checked field by field by small generated functions, no key built) goes straight to
that variant's generated graph function (`codegen`), so the wrapper costs a few microseconds. A call
with a different signature or module state warns and re-captures (up to `max_variants`, then runs
eagerly). A module's parameters and buffers (running statistics, frozen weights) are graph inputs read
at each call, so loading or training them needs no re-capture; a tensor from a closure or a global that
the graph holds as a constant is guarded by its version, array and requires_grad, and a change
re-captures. At capture, the function is traced a second time on perturbed inputs (floats scaled,
negated and shifted, integers rolled along every axis); if the two graphs differ — Python control flow
on values, randomness, data baked into constants — or the capture sees what a graph cannot replay (a
tensor's values read on the host, a write into an input, a parameter or a buffer, a module attribute
changed by the forward), the graph cannot stand for the function and calls run eagerly, with a warning
that says why. A wrong result is never returned silently — with one exception: Python numbers read
from closures or globals are baked in unguarded (compile again after changing them).

With `optimizer=` (every optimizer of `distgraph.optim`: SGD, Adam, AdamW, NAdam, RAdam, Adamax, RMSprop,
Adagrad, Adadelta, Rprop, ASGD; a user's own optimizer, whose rule has no traced twin, is refused with a
ConfigError) the update is traced into the same graph as functional ops (`graph/optimizer_capture.py`,
rules in `graph/optimizer_rules.py`), giving the eager optimizer's bits: the optimizer's state arrays are
inputs, its per-step scalars (learning rate, bias corrections, NAdam's momentum coefficients, ASGD's eta)
are inputs computed on the host before each call, and the generated code writes the new parameters and
state back into their arrays, so a call is the whole training step in one generated function, as
`zero_grad(); loss.backward(); step()` is eagerly.
"""

import contextlib
import warnings

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.backend import to_device
from distgraph.errors import ConfigError
from distgraph.graph.capture import CaptureError, capture, single
from distgraph.graph.compiled_module import OptimizedModule
from distgraph.graph.executor import Runner
from distgraph.graph.guards import ConstantGuards, ModuleState, check_same, perturbed, unpacker
from distgraph.graph.optimizer_capture import CapturedUpdate
from distgraph.graph.passes import DEFAULT, optimize
from distgraph.nn.module import Module
from distgraph.ops.random_extra import fork_rng

_EAGER = "eager"


class CompileWarning(UserWarning):
    """A compiled function re-captured or fell back to eager execution."""


class CompiledFunction:
    def __init__(
        self, fn, example_inputs, loss_fn=None, optimizer=None, passes=DEFAULT, check=True, max_variants=8,
        grad_scaler=None,
    ):  # fmt: skip
        self.fn, self.loss_fn, self.passes, self.check, self.max_variants = fn, loss_fn, passes, check, max_variants
        self.params = list(fn.parameters()) if loss_fn is not None else None
        self.scaler = grad_scaler if grad_scaler is not None and grad_scaler.enabled else None
        if self.scaler is not None and loss_fn is None:
            raise ConfigError("dg.compile: grad_scaler= needs loss_fn= (it scales the loss of a training step)")
        # under loss scaling the update waits for the overflow check: the optimizer steps eagerly after it
        self.optimizer = optimizer
        self.update = CapturedUpdate(optimizer, self.params) if optimizer is not None and self.scaler is None else None
        self._scale = None  # a graph input, on the parameters' device (a cpu scale beside cuda weights is refused)
        if self.scaler is not None:
            where = self.params[0].device if self.params else "cpu"
            self._scale = Tensor(to_device(np.ones((), np.float32), where), device=where)
        self.variants = {}
        self._unused_of = {}  # id(variant) -> indices of the parameters its loss does not depend on
        self._guards = {}  # id(variant) -> ConstantGuards of its constants from closure tensors
        self._paths = {}  # key -> (guard, call, state, constant guards): the fast path of each captured variant
        self._last = None  # the fast path of the last call
        self._recaptures, self._eager_only = 0, False  # (a forward with Python side effects always runs eagerly)
        # a module's train/eval modes, numbers and requires_grad flags are part of what a graph was captured under
        root = fn if callable(getattr(fn, "named_modules", None)) else getattr(fn, "__self__", None)  # (model.forward)
        has_modules = callable(getattr(root, "named_modules", None))
        self._module_state = ModuleState(root) if has_modules else None
        self._modules = [m for _, m in self._module_state.modules] if has_modules else []
        self._state = self._module_state.read if has_modules else tuple
        # an inference graph (no loss_fn) cannot give its outputs autograd history: see `_autograd_call`
        self._differentiable, self._warned_autograd, self._trainable = loss_fn is None, False, False
        self._at_first_call = example_inputs is None  # (captured by `_variant` then, as a first capture)
        if example_inputs is None:
            return
        try:
            self._add((_signature(example_inputs), self._state()), list(example_inputs))
        except CaptureError as exc:  # an argument no graph can take: every call runs the original
            warnings.warn(f"dg.compile: running eagerly: {exc}", CompileWarning, stacklevel=3)

    # ---- capture -----------------------------------------------------------------------------------
    def _traced(self):
        if self.loss_fn is None:
            return self.fn
        model, loss_fn, scale = self.fn, self.loss_fn, self._scale
        if scale is not None:  # the loss × the scaler's current scale (an input): every gradient scaled
            return lambda *batch, **kw: loss_fn(model(*batch[:-1], **kw), batch[-1]) * scale
        return lambda *batch, **kw: loss_fn(model(*batch[:-1], **kw), batch[-1])

    def _capture(self, inputs, sources=None):
        update = self.update.trace if self.update is not None else None
        hyper = self.update.tensors if self.update is not None else (self._scale,) if self._scale is not None else ()
        fn, tensors = self._traced(), [t for t in inputs if isinstance(t, Tensor)]
        if len(tensors) < len(inputs):  # Python scalars are constants of this variant (its key holds their values)
            traced, where = fn, [i for i, t in enumerate(inputs) if isinstance(t, Tensor)]

            def fn(*ts):
                args = list(inputs)
                for i, t in zip(where, ts):
                    args[i] = t
                return traced(*args)

        self._unused = []  # indices into self.params of parameters the loss does not depend on
        state = [t for _, t in self._module_state.tensors] if self._module_state is not None else ()
        return capture(
            fn, tensors, grad_of=self.params, update=update, hyper=hyper, unused=self._unused, state=state,
            sources=sources,
        )  # fmt: skip

    def _add(self, key, inputs):
        sources = {}  # tensors the graph's constants come from: guarded where they outlive the capture
        try:
            # capturing runs the function (twice, with the check): its random ops (dropout) draw from the
            # generator, so without fork_rng a call after `dg.manual_seed(s)` that captures a new variant
            # drew other masks than eager code seeded the same way
            with fork_rng(), _buffers_untouched(self._modules):
                versions = self._module_state.versions() if self._module_state is not None else None
                graph, params, rebuild = self._capture(inputs, sources)
                if self.check:
                    other = self._check_capture(inputs)
                    check_same(graph, other)
                self._side_effects(key, versions)
        except CaptureError as exc:
            warnings.warn(f"dg.compile: running eagerly: {exc}", CompileWarning, stacklevel=3)
            self._drop_rebuilt()  # (its eager calls rebuild them too: no replacement to warn of)
            self.variants[key] = _EAGER
            return _EAGER
        write_back = None
        if self.update is not None:  # outputs 1.. are the new parameters, then the new optimizer state:
            first = len(graph.inputs) - len(params)  # each is stored into the input it replaces
            index = {id(p): first + j for j, p in enumerate(params)}
            write_back = {1 + k: index[id(p)] for k, p in enumerate(self.params)}
            states = first - self.update.n_states  # the state inputs end the `hyper` inputs
            write_back |= {1 + len(self.params) + j: states + j for j in range(self.update.n_states)}
        variant = (Runner(optimize(graph, self.passes), write_back=write_back), params, rebuild, graph)
        self._unused_of[id(variant)] = tuple(self._unused) if self.params is not None else ()
        self._guards[id(variant)] = ConstantGuards(sources)  # (after the capture's temporaries are gone)
        self.variants[key] = variant
        self._trainable = self._trainable or any(p.requires_grad for p in params)
        return variant

    def _check_capture(self, inputs):
        """The graph captured on perturbed inputs. Any error there (a value outside the function's domain
        that it checks) means the graph cannot be checked: calls run eagerly, warned, as for a CaptureError."""
        try:
            with np.errstate(all="ignore"):  # negated inputs may leave a function's domain: only structure matters
                return self._capture(perturbed(inputs))[0]
        except CaptureError:
            raise
        except Exception as exc:
            raise CaptureError(
                f"the check capture on perturbed input values raised {type(exc).__name__}: {exc}"
            ) from exc

    def _drop_rebuilt(self):
        """The tensor attributes the forward reassigned while captured are its values, not inputs to guard."""
        if self._module_state is not None and self._module_state.drop_rebuilt():
            self._state = self._module_state.read

    def _side_effects(self, key, versions):
        """Refuse a forward that changed its module while captured: a parameter or buffer written
        (`self.calls += 1` on a buffer) or a guarded number (`self.step += 1`). No graph replays either,
        and a changed number would never match the key again, so the function always runs eagerly."""
        if self._module_state is None:
            return
        written = self._module_state.written(versions)
        self._drop_rebuilt()
        changed = self._state() != key[1]
        if written or changed:
            self._eager_only, self._last = True, None
            what = (
                f"writes in place into {', '.join(written)}"
                if written
                else self._module_state.change(key[1], self._state())
            )
            raise CaptureError(f"the module's forward {what} (a side effect a graph cannot replay)")

    def unused(self, variant):
        """Indices into `params` of the parameters `variant`'s loss does not depend on: their gradient
        outputs are zeros, where eager backward leaves no gradient (an optimizer skips them)."""
        return set(self._unused_of[id(variant)])

    @property
    def graph(self):
        """The optimized graph of the first captured variant."""
        for v in self.variants.values():
            if v is not _EAGER:
                return v[0].graph
        return None

    @property
    def captured_graph(self):
        """The graph as captured, before passes."""
        for v in self.variants.values():
            if v is not _EAGER:
                return v[3]
        return None

    # ---- call ------------------------------------------------------------------------------------------
    def __call__(self, *inputs, **kwargs):
        if kwargs:  # the graph takes its inputs by position only: the original runs, as for any argument it cannot
            warnings.warn(
                f"dg.compile: running eagerly: keyword argument(s) {', '.join(kwargs)} are not captured (pass "
                "tensors by position to the compiled call, as at capture)",
                CompileWarning,
                stacklevel=2,
            )
            return self._eager(inputs, kwargs)
        if self._differentiable and grad_mode.state.grad_enabled and self._needs_autograd(inputs):
            return self._autograd_call(inputs)
        fast = self._last
        if fast is not None and fast[2] == self._state() and (fast[3] is None or fast[3].hold()):
            arrays = fast[0](*inputs)
            if arrays is not None:
                return fast[1](arrays)
        key, variant = self._variant(inputs)
        if variant is _EAGER:
            return self._eager(inputs)
        if self._differentiable and grad_mode.state.grad_enabled and self._trainable:
            # the capture just made found a lifted tensor requiring grad (unfrozen since the last one): its
            # outputs need autograd history from this call on, this one included (it returned them without)
            return self._autograd_call(inputs)
        fast = self._paths.get(key)
        if fast is None:
            guards = self._guards[id(variant)] or None
            fast = self._paths[key] = (unpacker(inputs), self._runner_call(variant, inputs), key[1], guards)
        self._last = fast
        return fast[1]([t.array for t in inputs if isinstance(t, Tensor)])

    def _runner_call(self, variant, inputs):
        """`call(input arrays) -> result` for one variant: the generated function plus what the
        original returns or does (output Tensors; `.grad` accumulation; in-place parameter update)."""
        runner, params, rebuild, _ = variant
        device = next((t.device for t in inputs if isinstance(t, Tensor)), None) or params[0].device
        run, trained, update = runner.run, self.params, self.update
        if trained is not None:  # a parameter the loss does not depend on keeps its .grad, as after backward
            unused = set(self._unused_of[id(variant)])
            trained = [p if i not in unused else None for i, p in enumerate(trained)]

        if self.loss_fn is None and rebuild is single and not params:  # the hot case of small functions

            def call(arrays):
                return Tensor(run(*arrays)[0], device=device)

        elif self.loss_fn is None:

            def call(arrays):
                outs = run(*arrays, *[p.array for p in params])
                return rebuild([Tensor(o, device=device) for o in outs])

        elif update is not None:
            self.optimizer.note_step()  # (its update runs in the graph from the first call: no step() records it)

            def call(arrays):
                outs = run(*arrays, *update.arrays(), *[p.array for p in params])
                update.after()
                for p in trained:
                    if p is not None:
                        p._vc[0] += 1  # updated in place, as optimizer.step() does
                return Tensor(outs[0], device=device)

        elif self.scaler is not None:
            scaler, scale, optimizer = self.scaler, self._scale.array, self.optimizer

            def call(arrays):
                scale[()] = scaler.get_scale()
                outs = run(*arrays, scale, *[p.array for p in params])
                if optimizer is not None:  # the whole step: fresh gradients, then unscale, check, step or skip
                    optimizer.zero_grad()
                    for p, g in zip(trained, outs[1:]):
                        if p is not None:
                            p.grad = Tensor(g, device=device)
                    scaler.step(optimizer)
                    scaler.update()
                else:  # gradients of loss × scale accumulate in .grad, as after scaler.scale(loss).backward()
                    _accumulate(trained, outs[1:], device)
                return Tensor(device.xp.asarray(outs[0] / scale), device=device)  # (0-d / 0-d: a numpy scalar)

        else:

            def call(arrays):
                outs = run(*arrays, *[p.array for p in params])
                _accumulate(trained, outs[1:], device)
                return Tensor(outs[0], device=device)

        return call

    def _variant(self, inputs):
        """The variant for these inputs' signature and module state, re-capturing (with a warning) when
        none matches or a closure tensor its graph holds as a constant changed (`ConstantGuards`)."""
        if self._eager_only:
            return None, _EAGER
        try:
            key = (_signature(inputs), self._state())
        except CaptureError as exc:  # an argument no graph can take: the original runs, as it would
            warnings.warn(f"dg.compile: running eagerly: {exc}", CompileWarning, stacklevel=3)
            return None, _EAGER
        if key[1] and key[1][-1] is False:  # the module holds another object where the graph reads the old one
            warnings.warn(
                f"dg.compile: {self._module_state.replaced()} was replaced since the capture, and the graph reads "
                "the old one; running eagerly from now on (compile again to capture the new one)",
                CompileWarning,
                stacklevel=3,
            )
            self._eager_only, self._last = True, None
            return None, _EAGER
        try:
            variant = self.variants.get(key)
        except TypeError:  # a guarded list or dict attribute took an unhashable value (a list in it, say)
            warnings.warn(
                "dg.compile: running eagerly: a list or dict attribute of the module now holds a value that cannot "
                "be a key of its variants (a list or dict inside it)",
                CompileWarning,
                stacklevel=3,
            )
            return None, _EAGER
        if variant is _EAGER or (variant is not None and self._guards[id(variant)].hold()):
            return key, variant
        if self._at_first_call:  # compiled without example inputs: these are the first, captured quietly
            self._at_first_call = False
            return key, self._add(key, list(inputs))
        if not self.variants:
            return None, _EAGER
        if variant is not None:  # its constants changed: captured again, counted against the limit
            why = self._guards[id(variant)].change()
            self._paths.pop(key, None)
            self._last, self._recaptures = None, self._recaptures + 1
        else:
            why = self._change(next(reversed(self.variants)), key)  # against the latest capture
        if len(self.variants) + self._recaptures > self.max_variants or (
            variant is None and len(self.variants) >= self.max_variants
        ):
            warnings.warn(
                f"dg.compile: {why}, and the {self.max_variants}-variant limit is reached; running eagerly",
                CompileWarning,
                stacklevel=3,
            )
            variant = self.variants[key] = _EAGER
            return key, variant
        warnings.warn(f"dg.compile: {why}; re-capturing", CompileWarning, stacklevel=3)
        return key, self._add(key, list(inputs))

    def _change(self, old, new):
        if old[0] != new[0]:
            return f"inputs changed from {_describe(old)} to {_describe(new)}"
        if not old[1] or not new[1] or old[1][0] == new[1][0]:
            return self._module_state.change(old[1], new[1])
        return (
            f"the module's mode changed from {_mode(old[1][0])} to {_mode(new[1][0])} (dropout, batch norm act "
            "differently)"
        )

    def _needs_autograd(self, inputs):
        """`_trainable`: a lifted tensor required grad at some capture (requires_grad is in a module's key,
        so unfreezing a parameter re-captures and sets it)."""
        return self._trainable or any(getattr(t, "requires_grad", False) for t in inputs)

    def _autograd_call(self, inputs):
        """An inference graph's outputs carry no autograd history, so where the caller could
        differentiate them (grad mode on, an input or parameter requiring grad) the original runs,
        as torch.compile's outputs are differentiable; warned once."""
        if not self._warned_autograd:
            self._warned_autograd = True
            warnings.warn(
                "dg.compile: an input or parameter requires grad and grad mode is on, so the call runs eagerly "
                "to give outputs autograd history; capture the training step with loss_fn=, or call under "
                "dg.no_grad() to run the graph",
                CompileWarning,
                stacklevel=3,
            )
        return self.fn(*inputs)

    def _eager(self, inputs, kwargs=None):
        kwargs = kwargs or {}
        if self.loss_fn is None:
            return self.fn(*inputs, **kwargs)
        if self.optimizer is not None:
            self.optimizer.zero_grad()
        if self._scale is not None:
            self._scale.array[()] = self.scaler.get_scale()
        with grad_mode.enable_grad():
            loss = self._traced()(*inputs, **kwargs)
        loss.backward()
        if self.optimizer is not None and self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif self.optimizer is not None:
            self.optimizer.step()
        return loss.detach() / self._scale.array if self._scale is not None else loss.detach()


def compile(
    fn_or_module, example_inputs=None, *, loss_fn=None, optimizer=None, passes=DEFAULT, check=True, grad_scaler=None
):  # noqa: A001
    """A callable backed by the captured, optimized graph of `fn_or_module(*example_inputs)`; without
    `example_inputs`, of the first call's inputs (torch.compile's way: `model = dg.compile(model)`).

    A module compiled without `loss_fn` comes back as a module (`OptimizedModule`, compiled_module.py),
    as torch.compile's: its parameters, modes and state dict are the original's, its calls compiled.

    With `loss_fn`, `example_inputs` is `(*model_inputs, target)` and the graph is the training step:
    forward, loss and backward; calling it returns the loss and accumulates each parameter's `.grad`.
    With `optimizer` too (any of `distgraph.optim`'s), the update is captured into the same graph: a call
    is the whole step (like zero_grad, backward, step); it updates the parameters in place and
    returns the loss, leaving `.grad` untouched (the gradients live inside the step; only a step that
    falls back to eager execution sets `.grad`, as `loss.backward()` does).
    With `grad_scaler` (a `dg.amp.GradScaler`; for mixed precision, `passes=(amp, *DEFAULT)`), the graph
    computes the gradients of loss × the scaler's scale (an input, read at every call) and the call
    returns the unscaled loss: alone, the scaled gradients accumulate in `.grad` for `scaler.step(opt)`;
    with `optimizer` too, a call is the whole step — unscale, skip and count the step on inf/NaN, else
    `optimizer.step()`, then `scaler.update()` (the update runs eagerly, after the check).
    """
    if isinstance(example_inputs, Tensor):
        example_inputs = (example_inputs,)
    if example_inputs is not None and (not isinstance(example_inputs, tuple | list) or not example_inputs):
        raise ConfigError(
            f"dg.compile: example_inputs must be a tensor or a non-empty tuple of them (what the function is "
            f"captured on), or None (captured at the first call), got {type(example_inputs).__name__}"
        )
    compiled = CompiledFunction(
        fn_or_module, example_inputs and tuple(example_inputs), loss_fn=loss_fn, optimizer=optimizer, passes=passes,
        check=check, grad_scaler=grad_scaler,
    )  # fmt: skip
    if loss_fn is None and isinstance(fn_or_module, Module):
        return OptimizedModule(fn_or_module, compiled)
    return compiled


@contextlib.contextmanager
def _buffers_untouched(modules):
    """Capturing runs the module's forward (twice, with the check): batch norm counted those runs in
    `num_batches_tracked` (and a capture that then fell back to eager left the count one ahead of the
    same training run eagerly). The buffers' values are put back afterwards."""
    saved = [(b, b.array.copy()) for m in modules for b in m._buffers.values() if b is not None]
    try:
        yield
    finally:
        for b, array in saved:
            b.array[...] = array


def _accumulate(params, grads, device):
    """Add new gradient arrays into the parameters' `.grad`, as `loss.backward()` does."""
    for p, g in zip(params, grads):
        if p is not None:  # None: a parameter the loss does not depend on
            total = g if p.grad is None else device.xp.asarray(p.grad.array + g)  # (0-d + 0-d: a numpy scalar)
            p.grad = Tensor(total, device=device)


SCALARS = (bool, int, float, str, type(None))  # arguments a variant holds as constants, keyed by value


def _signature(inputs):
    for i, t in enumerate(inputs):
        if not isinstance(t, (Tensor, *SCALARS)):
            raise CaptureError(f"input {i} is a {type(t).__name__}; a graph takes tensors and Python scalars")
    return tuple(
        (tuple(t.shape), t.array.dtype.name, str(t.device)) if isinstance(t, Tensor) else (type(t).__name__, t)
        for t in inputs
    )


def _describe(key):
    signature, state = key
    modes = state[0] if state else ()
    shown = (
        "(" + ", ".join(f"{x[1]}{list(x[0])} on {x[2]}" if len(x) == 3 else f"{x[0]} {x[1]!r}" for x in signature) + ")"
    )
    return shown + (f" in {_mode(modes)} mode" if modes else "")


def _mode(modes):
    return (
        "train"
        if all(modes)
        else "eval"
        if not any(modes)
        else f"mixed train/eval ({sum(modes)} of {len(modes)} training)"
    )
