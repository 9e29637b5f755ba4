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
