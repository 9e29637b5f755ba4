"""Which submodules become FSDP units, and what a unit owns (torch's torch.distributed.fsdp.wrap).

`ModuleWrapPolicy` and `size_based_auto_wrap_policy` are torch's policies; `wrap_children` is its recursive
wrap (descend where the policy says to, innermost first); a unit owns the parameters of its module's tree
outside the units below it. A unit is known by the class attribute `is_fsdp_unit` (no import of fsdp.py).
`state_entries`: every parameter and persistent buffer under the plain model's names, to resolve later.
"""


def is_unit(module):
    return getattr(type(module), "is_fsdp_unit", False)


class ModuleWrapPolicy:
    """torch's: every submodule of the given classes becomes a unit of its own."""

    def __init__(self, module_classes):
        self._classes = tuple(module_classes)

    def __call__(self, module, recurse, nonwrapped_numel):
        return True if recurse else isinstance(module, self._classes)


def size_based_auto_wrap_policy(
    module, recurse, nonwrapped_numel, min_num_params=int(1e8), force_leaf_modules=None, exclude_wrap_modules=None
):
    """torch's: a submodule with at least `min_num_params` parameters not yet in a unit becomes one."""
    from distgraph import nn

    leaves = tuple(force_leaf_modules or (nn.MultiheadAttention,))
    excluded = tuple(exclude_wrap_modules or (nn.ModuleList, nn.ModuleDict))
    if recurse:
        return nonwrapped_numel >= min_num_params and not isinstance(module, leaves)
    return nonwrapped_numel >= min_num_params and not isinstance(module, excluded)


def state_entries(module, prefix=""):
    """(name, (module, attribute, kind)) of every parameter and persistent buffer, by the plain model's names
    (a unit below contributes its own, already made)."""
    if is_unit(module):
        return [(prefix + k, e) for k, e in module._entries]
    out = [(prefix + n, (module, n, "param")) for n, p in module._parameters.items() if p is not None]
    out += [
        (prefix + n, (module, n, "buffer"))
        for n, b in module._buffers.items()
        if b is not None and n not in module._non_persistent
    ]
    for name, child in module._modules.items():
        if child is not None:
            out += state_entries(child, prefix + name + ".")
    return out


def resolve(entry):
    module, name, _ = entry
    return getattr(module, name)  # (a unit's parameter is a plain attribute now, a buffer still registered)


def own_parameters(module):
    """(module, attribute, Parameter) of the parameters under `module` outside the units below it."""
    out = []
    for m in modules_outside_units(module):
        out += [(m, n, p) for n, p in m._parameters.items() if p is not None]
    return out


def modules_outside_units(module):
    yield module
    for child in module._modules.values():
        if child is not None and not is_unit(child):
            yield from modules_outside_units(child)


def numel_outside_units(module):
    return sum(p.numel() for _, _, p in own_parameters(module))


def wrap_children(module, policy, make_unit):
    """torch's recursive wrap: descend where the policy says to, innermost first; `make_unit(child)` where it
    says so."""
    for name, child in list(module._modules.items()):
        if child is None or is_unit(child):
            continue
        if policy(module=child, recurse=True, nonwrapped_numel=numel_outside_units(child)):
            wrap_children(child, policy, make_unit)
            if policy(module=child, recurse=False, nonwrapped_numel=numel_outside_units(child)):
                setattr(module, name, make_unit(child))
