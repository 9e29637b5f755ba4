"""What a compiled variant assumes beyond its graph, and the checks of it (`dg.compile`, graph/compile.py).

A captured graph stands for its function only while what the trace read outside the inputs' values
stays as it was. Each assumption gets the cheapest check that is still exact:

- the inputs' shapes, dtypes and devices: `unpacker`, a generated function comparing them field by
  field on every call (the fast path);
- a module's Python state: `ModuleState`, a generated function reading every submodule's train/eval
  mode, its public plain attributes (`self.temperature`, dropout's `p`, a flag or a mode string a
  forward branches on, None; tuples, and lists and dicts of up to CONTAINER_ITEMS such values, read by
  value: `self.cfg["scale"]`: the trace baked them in) and each parameter's requires_grad (which
  gradients a training step computes) into one tuple, part of the variant's key; a forward that
  changes any of them while it is captured has a side effect no graph replays, and runs eagerly;
- tensors a graph keeps as constants although they outlive the capture (a closure's frozen tensor; a
  module's own parameters and buffers are lifted into inputs instead, see graph/capture.py):
  `ConstantGuards` holds each weakly with its version counter, array and requires_grad, and a change
  re-captures. A constant made during the trace (`x * 2`'s 2) is gone once the capture returns and
  costs nothing per call;
- the values themselves: `perturbed` inputs are captured a second time at compile time and
  `check_same` compares the two graphs (control flow on values, data baked into constants).

Not guarded: Python numbers in closures and globals (`scale = 2.0; f = lambda x: x * scale`): the
trace bakes them in, and a later change is not seen (compile the function again).
"""

import builtins
import keyword
import weakref

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import CaptureError
from distgraph.graph.capture import version_of
from distgraph.graph.passes.cse import freeze

_PLAIN = (bool, int, float, str, type(None))
CONTAINER_ITEMS = 32  # a list or dict attribute longer than this is not read per call (nor guarded)


def _attribute_reader(cell, name, v):
    """The expression `ModuleState` reads attribute `name` of module `cell` by, or None where it does not
    guard it: a plain value or a tuple of them as it is (compared by value; the same object is equal at
    once), a list or dict of them copied into a tuple (the object itself would compare equal to itself
    after it changed in place)."""
    attr = f"{cell}.{name}"
    if type(v) in _PLAIN or (type(v) is tuple and all(type(e) in _PLAIN for e in v)):
        return attr
    if type(v) is list and len(v) <= CONTAINER_ITEMS and all(type(e) in _PLAIN for e in v):
        return f"tuple({attr})"
    if type(v) is dict and len(v) <= CONTAINER_ITEMS and all(type(e) in _PLAIN for kv in v.items() for e in kv):
        return f"tuple({attr}.items())"
    return None


def _generated(name, cells, body):
    """`name` built by generated source whose text holds only the identifiers in `cells` (closure values)."""
    source = f"def _make({', '.join(cells)}):\n" + "".join(f"    {line}\n" for line in body) + f"    return {name}\n"
    namespace = {}
    exec(builtins.compile(source, "<distgraph guard>", "exec"), namespace)  # noqa: S102 - generated source only
    return namespace["_make"]


def unpacker(inputs):
    """The fast-path guard for calls like this one: a generated function that returns the inputs'
    arrays when every input has the same shape, dtype object and (interned) device as here, else None
    (a different or Tensor-less call then takes the slow path, which builds the full signature).
    Its source holds only generated names; the shapes, dtypes and devices are closure values."""
    if not all(isinstance(t, Tensor) for t in inputs):  # Python scalars: the slow path keys them by value
        return lambda *args: None
    n = len(inputs)
    ts, arrays = [f"t{i}" for i in range(n)], [f"a{i}" for i in range(n)]
    lines = ["def unpack(*args):", "    if len(args) != N:", "        return None", "    try:"]
    lines.append(f"        ({''.join(t + ', ' for t in ts)}) = args")
    for i in range(n):
        lines.append(f"        a{i} = t{i}.array")
        lines.append(f"        if a{i}.shape != s{i} or a{i}.dtype is not d{i} or t{i}.device is not v{i}:")
        lines.append("            return None")
    lines += ["    except AttributeError:", "        return None", f"    return ({''.join(a + ', ' for a in arrays)})"]
    make = _generated("unpack", ["N"] + [f"{c}{i}" for i in range(n) for c in "sdv"], lines)
    return make(n, *[v for t in inputs for v in (t.array.shape, t.array.dtype, t.device)])


class ModuleState:
    """`state()` -> ((train/eval mode per submodule), (public plain attributes per submodule, then
    requires_grad per parameter)): what a module's forward reads besides tensors, as one tuple per call.

    The attributes are those the modules hold when the function is compiled (`vars(m)` values that
    `_attribute_reader` reads — bool, int, float, str, None, and tuples, lists and dicts of them — whose name
    is an identifier not starting with `_`). Reading them is one generated function (about 20 ns an
    attribute; a list or dict more); a deleted attribute reads as None (no variant matches)."""

    def __init__(self, root):
        self.modules = list(root.named_modules())
        self.labels = []  # what each entry of state()[1] is, for warnings
        cells, modes, values = [], [], []
        for k, (path, m) in enumerate(self.modules):
            cells.append(f"m{k}")
            modes.append(f"m{k}.training")
            for name, v in vars(m).items():
                read = _attribute_reader(f"m{k}", name, v) if name != "training" and _plain_name(name) else None
                if read is not None:
                    values.append(read)
                    self.labels.append(f"module attribute {path or type(m).__name__}.{name}")
        self.params = list(root.named_parameters())
        for k, (name, _) in enumerate(self.params):
            cells.append(f"p{k}")
            values.append(f"p{k}.requires_grad")
            self.labels.append(f"requires_grad of parameter {name}")
        self.tensors = self.params + list(root.named_buffers())  # (name, tensor): lifted when read
        self._base = (cells, modes, values, [*[m for _, m in self.modules], *[p for _, p in self.params]])
        self._held = self._held_objects()
        self._build()

    def _build(self):
        """`read`: the generated state function over the modes, numbers and identity tests of `_held`."""
        cells, modes, values, args = self._base
        same = [f"d{j}[{name!r}] is o{j}" for j, (_, _, _, name, _) in enumerate(self._held)]
        body = [
            "def state():",
            "    try:",
            f"        return (({''.join(e + ', ' for e in modes)}), ({''.join(e + ', ' for e in values)}), "
            f"{' and '.join(same) or 'True'})",
            "    except (AttributeError, KeyError, TypeError):",
            "        return None",
        ]
        held_cells = [f"o{j}" for j in range(len(self._held))] + [f"d{j}" for j in range(len(self._held))]
        make = _generated("state", [*cells, *held_cells], body)
        self.read = make(*args, *[h[1] for h in self._held], *[h[2] for h in self._held])

    def _held_objects(self):
        """[(label, object, the dict holding it, its name there, whether it is a plain tensor attribute)] of every
        submodule, parameter, buffer and tensor attribute the modules hold now. Each is tested by identity in
        the dict that holds it (`d5['weight'] is o5`, ~35 ns; a module's dicts are made once, with it): the graph
        reads those objects, so one replaced (`model.fc = nn.Linear(...)`, `m.weight = Parameter(...)`) would
        leave it reading the old."""
        held = []
        for path, m in self.modules:
            where = path or type(m).__name__
            for store, kind in (("_modules", "module"), ("_parameters", "parameter"), ("_buffers", "buffer"), ("__dict__", "tensor attribute")):  # fmt: skip
                d = getattr(m, store, None)
                for name, obj in (d or {}).items():
                    if obj is not None and (store != "__dict__" or isinstance(obj, Tensor)):
                        held.append((f"{kind} {where}.{name}", obj, d, name, store == "__dict__"))
        return held

    def drop_rebuilt(self):
        """Stop testing the tensor attributes the forward itself reassigned while captured (weight_norm's
        `weight`, a cache the forward rebuilds): the graph computes them, so they are its values, not inputs it
        could read stale. True when any was dropped (`read` is then rebuilt: take it again)."""
        kept = [h for h in self._held if not (h[4] and h[2].get(h[3]) is not h[1])]
        if len(kept) == len(self._held):
            return False
        self._held = kept
        self._build()
        return True

    def replaced(self):
        """The label of the first held object its module no longer holds, else a general phrase."""
        for label, obj, store, name, _ in self._held:
            if store.get(name) is not obj:
                return label
        return "a submodule, parameter, buffer or tensor attribute"

    def versions(self):
        return [version_of(t) for _, t in self.tensors]

    def written(self, before):
        """Names of the parameters and buffers whose version moved since `versions()` gave `before`."""
        return [name for (name, t), v in zip(self.tensors, before) if version_of(t) != v]

    def change(self, old, new):
        """The first attribute (not mode) that differs between two states, worded for a warning."""
        if old is None or new is None:
            return "a module attribute was deleted"
        for label, a, b in zip(self.labels, old[1], new[1]):
            if a is not b and a != b:
                return f"{label} changed from {a!r} to {b!r}"
        if old[2] != new[2]:
            return f"replaced {self.replaced()}"
        return "the module's state changed"


def _plain_name(name):
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")


class ConstantGuards:
    """The constants of one variant taken from tensors that outlive the capture, each with its version,
    array and requires_grad at capture; `hold()` tells whether all are unchanged (a tensor since freed
    cannot have changed). Made from `capture(..., sources=)`'s dict, which it empties: the caller must
    hold no other reference to the capture's temporaries, so that only tensors someone else keeps stay."""

    def __init__(self, sources):
        refs = [(name, weakref.ref(t), version_of(t), t.array, t.requires_grad) for name, t in sources.items()]
        sources.clear()
        self.items = tuple(r for r in refs if r[1]() is not None)

    def __bool__(self):
        return bool(self.items)

    def hold(self):
        return self.change() is None

    def change(self):
        """What changed first, in words; None while every tensor holds (the words are made only then)."""
        for name, ref, version, array, grad in self.items:
            t = ref()
            if t is not None and (t.array is not array or version_of(t) != version or t.requires_grad is not grad):
                what = "requires_grad" if t.requires_grad is not grad else "value"
                return (
                    f"the {what} of {name} ({tuple(t.shape)} {t.dtype.name}: a closure's or a global's tensor the "
                    "graph was captured with) changed"
                )
        return None


def perturbed(inputs):
    """Other values of the same signature: floats scaled by −1.5..−0.5 and shifted by 0.5..1.5 (signs flip,
    zeros move, so comparisons, masks and `if x.sum() > 0` change), integers and bools rolled by one
    along every axis (a permutation of the values keeps class labels and indices valid)."""
    rng = np.random.default_rng(1234)
    out = []
    for t in inputs:
        if not isinstance(t, Tensor):  # a Python scalar: a constant of the variant, not perturbed
            out.append(t)
            continue
        arr = t.array
        xp = t.device.xp
        if arr.dtype.kind in "fc":
            scale = xp.asarray(rng.uniform(-1.5, -0.5, arr.shape).astype(arr.dtype))
            offset = xp.asarray(rng.uniform(0.5, 1.5, arr.shape).astype(arr.dtype))
            new = xp.asarray(arr * scale + offset)  # (a 0-d product is a numpy scalar: kept an array)
        else:
            new = xp.roll(arr, 1, axis=tuple(range(arr.ndim))) if arr.ndim else arr.copy()
        p = Tensor(new, device=t.device)
        if t.requires_grad:
            p.requires_grad_(True)
        out.append(p)
    return out


def check_same(a, b):
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
