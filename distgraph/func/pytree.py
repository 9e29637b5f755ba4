"""Nested Python containers of tensors (torch's pytrees, the subset torch.func users pass): tuples,
lists, dicts (and namedtuples); anything else is a leaf. `flatten` gives the leaves and a spec
`unflatten` rebuilds from; `broadcast` expands a prefix (an int or None standing for a whole
subtree, as vmap's in_dims/out_dims) to one entry per leaf."""


class Spec:
    """The shape of a container: its kind (None for a leaf), its keys (dicts) and its children's specs."""

    __slots__ = ("kind", "keys", "children")

    def __init__(self, kind=None, keys=None, children=()):
        self.kind, self.keys, self.children = kind, keys, children

    @property
    def num_leaves(self):
        return 1 if self.kind is None else sum(c.num_leaves for c in self.children)

    def __repr__(self):
        if self.kind is None:
            return "*"
        inner = ", ".join(repr(c) for c in self.children)
        if self.kind is dict:
            return "{" + ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.keys, self.children)) + "}"
        return (
            f"({inner},)"
            if self.kind is tuple and len(self.children) == 1
            else (f"[{inner}]" if self.kind is list else f"{'' if self.kind is tuple else self.kind.__name__}({inner})")
        )


def _is_node(x):
    return isinstance(x, tuple | list | dict)


def flatten(tree):
    """(leaves in order, spec)."""
    if not _is_node(tree):
        return [tree], Spec()
    if isinstance(tree, dict):
        keys, items = list(tree.keys()), list(tree.values())
    else:
        keys, items = None, list(tree)
    leaves, children = [], []
    for item in items:
        sub, spec = flatten(item)
        leaves += sub
        children.append(spec)
    return leaves, Spec(type(tree), keys, tuple(children))


def unflatten(leaves, spec):
    """The container `spec` describes, filled with `leaves` in order."""
    it = iter(leaves)

    def build(s):
        if s.kind is None:
            return next(it)
        items = [build(c) for c in s.children]
        if s.kind is dict:
            return dict(zip(s.keys, items))
        if s.kind not in (tuple, list) and issubclass(s.kind, tuple):  # a namedtuple
            return s.kind(*items)
        return s.kind(items)

    return build(spec)


def broadcast(prefix, spec):
    """One entry per leaf of `spec`: a non-container in `prefix` covers its whole subtree, a container
    must match `spec`'s at that level (same kind and length; dicts the same keys). None when it does not."""
    if not _is_node(prefix):
        return [prefix] * spec.num_leaves
    if spec.kind is None or not isinstance(prefix, spec.kind if spec.kind in (dict, list) else tuple):
        return None
    if isinstance(prefix, dict):
        if set(prefix) != set(spec.keys):
            return None
        items = [prefix[k] for k in spec.keys]
    else:
        items = list(prefix)
    if len(items) != len(spec.children):
        return None
    out = []
    for item, child in zip(items, spec.children):
        sub = broadcast(item, child)
        if sub is None:
            return None
        out += sub
    return out
