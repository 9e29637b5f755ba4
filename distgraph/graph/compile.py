"""dg.compile: capture a function or module once, optimize the graph, and call it like the original.

    step = dg.compile(model, (x, y), loss_fn=F.cross_entropy)   # training step: returns the loss and
    loss = step(x, y)                                          # writes p.grad like loss.backward()
    f = dg.compile(fn, (x,)); out = f(x)                       # inference: outputs without grad

Guards: each captured variant is keyed by the shapes, dtypes and devices of the inputs. A call with
a different signature warns and re-captures (up to `max_variants`, then runs eagerly). At capture,
the function is traced a second time on perturbed inputs (floats scaled and negated, integers
rolled along the batch); if the two graphs differ — Python control flow on values, randomness, data baked into
constants — the graph cannot stand for the function and calls run eagerly, with a warning that says
why. A wrong result is never returned silently.
"""

import warnings

import numpy as np

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.graph.capture import CaptureError, capture
from distgraph.graph.executor import Runner
from distgraph.graph.passes import DEFAULT, optimize
from distgraph.graph.passes.cse import freeze

_EAGER = "eager"


class CompileWarning(UserWarning):
    """A compiled function re-captured or fell back to eager execution."""


class CompiledFunction:
    def __init__(self, fn, example_inputs, loss_fn=None, passes=DEFAULT, check=True, max_variants=8):
        self.fn, self.loss_fn, self.passes, self.check, self.max_variants = fn, loss_fn, passes, check, max_variants
        self.params = list(fn.parameters()) if loss_fn is not None else None
        self.variants = {}
        self._add(_signature(example_inputs), list(example_inputs))

    # ---- capture -----------------------------------------------------------------------------------
    def _traced(self):
        if self.loss_fn is None:
            return self.fn
        model, loss_fn = self.fn, self.loss_fn
        return lambda *batch: loss_fn(model(*batch[:-1]), batch[-1])

    def _add(self, key, inputs):
        try:
            graph, params, rebuild = capture(self._traced(), inputs, grad_of=self.params)
            if self.check:
                with np.errstate(all="ignore"):  # negated inputs may leave a function's domain: only structure matters
                    other = capture(self._traced(), _perturbed(inputs), grad_of=self.params)[0]
                _check_same(graph, other)
        except CaptureError as exc:
            warnings.warn(f"dg.compile: running eagerly: {exc}", CompileWarning, stacklevel=3)
            self.variants[key] = _EAGER
            return _EAGER
        variant = (Runner(optimize(graph, self.passes)), params, rebuild, graph)
        self.variants[key] = variant
        return variant

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
    def __call__(self, *inputs):
        key = _signature(inputs)
        variant = self.variants.get(key)
        if variant is None:
            known = next(iter(self.variants))
            if len(self.variants) >= self.max_variants:
                warnings.warn(
                    f"dg.compile: inputs {_describe(key)} differ from every captured variant and the "
                    f"{self.max_variants}-variant limit is reached; running eagerly",
                    CompileWarning,
                    stacklevel=2,
                )
                variant = self.variants[key] = _EAGER
            else:
                warnings.warn(
                    f"dg.compile: inputs changed from {_describe(known)} to {_describe(key)}; re-capturing",
                    CompileWarning,
                    stacklevel=2,
                )
                variant = self._add(key, list(inputs))
        if variant is _EAGER:
            return self._eager(inputs)
        runner, params, rebuild, _ = variant
        outs = runner(*[t.array for t in inputs], *[p.array for p in params])
        device = inputs[0].device if inputs else params[0].device
        tensors = [Tensor(o, device=device) for o in outs]
        if self.loss_fn is None:
            return rebuild(tensors)
        for p, g in zip(self.params, tensors[1:]):
            p.grad = g if p.grad is None else Tensor(p.grad.array + g.array, device=device)
        return tensors[0]

    def _eager(self, inputs):
        if self.loss_fn is None:
            return self.fn(*inputs)
        with grad_mode.enable_grad():
            loss = self._traced()(*inputs)
        loss.backward()
        return loss.detach()


def compile(fn_or_module, example_inputs, *, loss_fn=None, passes=DEFAULT, check=True):  # noqa: A001
    """A callable backed by the captured, optimized graph of `fn_or_module(*example_inputs)`.

    With `loss_fn`, `example_inputs` is `(*model_inputs, target)` and the graph is the training step:
    forward, loss and backward; calling it returns the loss and accumulates each parameter's `.grad`.
    """
    if isinstance(example_inputs, Tensor):
        example_inputs = (example_inputs,)
    return CompiledFunction(fn_or_module, tuple(example_inputs), loss_fn=loss_fn, passes=passes, check=check)


def _signature(inputs):
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise CaptureError(f"dg.compile: input {i} is a {type(t).__name__}; compiled functions take tensors")
    return tuple((tuple(t.shape), t.array.dtype.name, str(t.device)) for t in inputs)


def _describe(key):
    return "(" + ", ".join(f"{d}{list(s)} on {dev}" for s, d, dev in key) + ")"


def _perturbed(inputs):
    rng = np.random.default_rng(1234)
    out = []
    for t in inputs:
        arr = t.array
        xp = t.device.xp
        if arr.dtype.kind == "f":
            scale = xp.asarray(rng.uniform(-1.5, -0.5, arr.shape).astype(arr.dtype))
            new = arr * scale  # sign flipped too, so comparisons and `if x.sum() > 0` change
        else:
            new = xp.roll(arr, 1, axis=0) if arr.ndim else arr.copy()
        p = Tensor(new, device=t.device)
        if t.requires_grad:
            p.requires_grad_(True)
        out.append(p)
    return out


def _check_same(a, b):
    """Raise CaptureError naming the first difference between two captures of one function."""
    if len(a.nodes) != len(b.nodes) or a.outputs != b.outputs:
        raise CaptureError(
            f"the function records a different graph for other input values ({len(a.nodes)} vs {len(b.nodes)} "
            "ops): Python control flow depends on tensor values"
        )
    for x, y in zip(a.nodes, b.nodes):
        if (x.op, x.inputs, x.spec) != (y.op, y.inputs, y.spec) or freeze(x.attrs) != freeze(y.attrs):
            raise CaptureError(f"the recorded op {x} becomes {y} for other input values")
    for name, arr in a.constants.items():
        other = b.constants.get(name)
        if other is None or arr.shape != other.shape or not bool((arr == other).all()):
            raise CaptureError(
                f"constant {name} ({arr.dtype.name}{list(arr.shape)}) depends on the input values "
                "(randomness or data computed outside distgraph ops); it cannot be baked into a graph"
            )
