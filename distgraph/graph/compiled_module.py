"""`dg.compile(module)`'s result: torch.compile's OptimizedModule, a Module whose forward is the compiled call.

A script that writes `model = torch.compile(model)` goes on to use `model` as the module it was:
`model.parameters()` for the optimizer, `model.train()` / `model.eval()`, `model.state_dict()`,
`isinstance(model, nn.Module)`, forward hooks. A bare compiled function (`CompiledFunction`) has none
of that, so the module comes back wrapped, as torch's: the original is the child `_orig_mod` (so
`state_dict()` keys carry torch's `_orig_mod.` prefix, and a state dict saved from a compiled torch
model loads), its modes and parameters are the wrapper's, and an attribute the wrapper lacks is looked
up on the compiled function (`graph`, `variants`: what dg.compile's result always offered), then on the
original module, as torch's OptimizedModule does.
"""

from distgraph.nn.module import Module


class OptimizedModule(Module):
    """`module` whose calls go through `compiled` (a CompiledFunction of it)."""

    def __init__(self, module, compiled):
        super().__init__()
        self._orig_mod = module
        self.__dict__["_compiled"] = compiled  # (not a child: its state is the original module's)

    @property
    def training(self):
        """The original's mode, as torch's (train() and eval() reach it as the wrapper's child)."""
        return self._modules["_orig_mod"].training

    @training.setter
    def training(self, mode):
        if "_orig_mod" in self.__dict__.get("_modules", ()):  # (Module.__init__ sets it before the child is in)
            self._modules["_orig_mod"].training = mode

    def forward(self, *args, **kwargs):
        return self.__dict__["_compiled"](*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("__") or "_compiled" not in self.__dict__:  # (copy/pickle probing a half-built one)
                raise
        compiled = self.__dict__["_compiled"]
        if hasattr(compiled, name):
            return getattr(compiled, name)
        return getattr(self._modules["_orig_mod"], name)

    def __reduce__(self):
        """Pickled and deep-copied as the module it wraps, compiled again where it lands: the compiled
        function holds generated code and runners, which neither pickle nor deepcopy takes (torch's
        OptimizedModule is rebuilt from its module the same way). Hooks on the wrapper itself are not kept."""
        compiled = self.__dict__["_compiled"]
        return _compiled_again, (self._orig_mod, compiled.passes, compiled.check)


def _compiled_again(module, passes, check):
    from distgraph.graph.compile import compile  # (compile.py imports this module)

    return compile(module, passes=passes, check=check)
