"""The global registration hooks of nn.modules.module against torch's: which registrations call them, with what,
in what order, and what a returned value does."""

import pytest

import distgraph as dg

torch = pytest.importorskip("torch")

KINDS = ("buffer", "module", "parameter")


def _register(lib, hooks):
    """Register hooks[kind] (one hook or a list) as lib's global registration hooks; the handles."""
    mod = lib.nn.modules.module
    handles = []
    for kind, fns in hooks.items():
        for fn in fns if isinstance(fns, list) else [fns]:
            handles.append(getattr(mod, f"register_module_{kind}_registration_hook")(fn))
    return handles


def _trace(lib, build):
    """The calls every registration hook sees while build(lib) runs: (kind, module class, name, value's type)."""
    calls = []

    def recorder(kind):
        return lambda m, name, value: calls.append((kind, type(m).__name__, name, type(value).__name__))

    handles = _register(lib, {kind: recorder(kind) for kind in KINDS})
    try:
        build(lib)
    finally:
        for h in handles:
            h.remove()
    return calls


def _assignments(lib):
    m = lib.nn.Module()
    m.p = lib.nn.Parameter(lib.ones(1))
    m.c = lib.nn.ReLU()
    m.b = lib.nn.Buffer(lib.ones(1))
    m.b = lib.zeros(1)  # an existing buffer: through register_buffer in torch
    m.c = None  # an existing submodule
    m.p = None  # an existing parameter: register_parameter(None), which calls no hook
    m.p = lib.nn.Parameter(lib.ones(1))
    m.x = 3  # a plain attribute


def _registrations(lib):
    m = lib.nn.Module()
    m.register_buffer("b", lib.ones(1), persistent=False)
    m.register_buffer("none_b", None)
    m.register_parameter("none_p", None)
    m.register_parameter("p", lib.nn.Parameter(lib.ones(1)))
    m.add_module("c", lib.nn.Identity())
    m.register_module("none_c", None)


def _refused(lib):
    m = lib.nn.Module()
    for bad in (lambda: m.register_buffer("a.b", lib.ones(1)), lambda: m.register_buffer("x", 3)):
        with pytest.raises((KeyError, TypeError)):
            bad()
    with pytest.raises(TypeError):
        m.register_parameter("p", lib.ones(1))
    with pytest.raises(TypeError):
        m.add_module("c", 3)


@pytest.mark.parametrize(
    "build",
    [
        lambda lib: lib.nn.Linear(2, 2),
        lambda lib: lib.nn.Linear(2, 2, bias=False),
        lambda lib: lib.nn.Sequential(lib.nn.ReLU(), lib.nn.Linear(1, 1)),
        lambda lib: lib.nn.BatchNorm1d(2),
        _assignments,
        _registrations,
        _refused,
    ],
    ids=["linear", "linear_no_bias", "sequential", "batchnorm", "assignments", "registrations", "refused"],
)
def test_hooks_see_the_registrations_torchs_do(build):
    assert _trace(dg, build) == _trace(torch, build)


@pytest.mark.parametrize("lib", [torch, dg], ids=["torch", "dg"])
def test_returned_values_replace_in_registration_order(lib):
    seen = []
    replacements = {
        "buffer": lambda value: lib.full((1,), 5.0),
        "module": lambda value: lib.nn.Tanh(),
        "parameter": lambda value: lib.nn.Parameter(value.detach() * 2),
    }

    def first(kind):
        return lambda m, name, value: seen.append(("first", name)) or replacements[kind](value)

    def second(m, name, value):
        seen.append(
            ("second", name, type(value).__name__, float(value.detach().sum()) if hasattr(value, "sum") else None)
        )

    handles = _register(lib, {kind: [first(kind), second] for kind in KINDS})
    try:
        m = lib.nn.Module()
        m.p = lib.nn.Parameter(lib.ones(1))
        m.register_buffer("b", lib.ones(1))
        m.nb = lib.nn.Buffer(lib.ones(1), persistent=False)
        m.c = lib.nn.ReLU()
        m.add_module("d", lib.nn.ReLU())
    finally:
        for h in handles:
            h.remove()
    assert float(m.p.detach().sum()) == 2.0 and isinstance(m.p, lib.nn.Parameter)
    assert float(m.b.sum()) == float(m.nb.sum()) == 5.0
    assert "nb" not in m.state_dict()  # the replacement keeps the Buffer's persistence
    assert type(m.c).__name__ == type(m.d).__name__ == "Tanh"
    assert seen == [
        ("first", "p"), ("second", "p", "Parameter", 2.0),
        ("first", "b"), ("second", "b", "Tensor", 5.0),
        ("first", "nb"), ("second", "nb", "Tensor", 5.0),
        ("first", "c"), ("second", "c", "Tanh", None),
        ("first", "d"), ("second", "d", "Tanh", None),
    ]  # fmt: skip


@pytest.mark.parametrize("lib", [torch, dg], ids=["torch", "dg"])
def test_a_returned_value_is_stored_unchecked(lib):
    handles = _register(lib, {kind: lambda m, name, value: 3 for kind in KINDS})
    try:
        m = lib.nn.Module()
        m.register_parameter("p", lib.nn.Parameter(lib.ones(1)))
        m.register_buffer("b", lib.ones(1))
        m.add_module("c", lib.nn.ReLU())
    finally:
        for h in handles:
            h.remove()
    assert (m._parameters["p"], m._buffers["b"], m._modules["c"]) == (3, 3, 3)


@pytest.mark.parametrize("lib", [torch, dg], ids=["torch", "dg"])
def test_the_hook_runs_before_the_value_is_stored(lib):
    before = []
    m = lib.nn.Module()
    m.register_buffer("b", lib.ones(1))
    handles = _register(lib, {"buffer": lambda m, name, value: before.append(float(getattr(m, name).sum()))})
    try:
        m.b = lib.zeros(1)
    finally:
        handles[0].remove()
    assert before == [1.0] and float(m.b.sum()) == 0.0


def test_removed_hooks_stop_running():
    calls = []
    mod = dg.nn.modules.module
    handles = [
        mod.register_module_buffer_registration_hook(lambda *a: calls.append("buffer")),
        mod.register_module_module_registration_hook(lambda *a: calls.append("module")),
        mod.register_module_parameter_registration_hook(lambda *a: calls.append("parameter")),
    ]
    dg.nn.Sequential(dg.nn.BatchNorm1d(1))
    assert sorted(set(calls)) == ["buffer", "module", "parameter"]
    for h in handles:
        h.remove()
    calls.clear()
    dg.nn.Sequential(dg.nn.BatchNorm1d(1))
    assert calls == []
