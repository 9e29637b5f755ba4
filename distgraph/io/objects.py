"""Objects of higher layers that `dg.save` / `dg.load` handle whole (a Graph, a Plan).

io sits below the graph package, so it cannot import those classes; instead a class names its format
(`__distgraph_format__`, the "format" field of its `to_dict()` tree) and registers how to rebuild it
(`register`). `dg.save(obj)` then stores `obj.to_dict()`, and `dg.load` hands any dict whose "format"
is registered to its rebuilder — at the top of the file or nested in dicts and lists — so the file
stays plain msgpack data and a program that never imports the graph package still reads it as a dict.
"""

FORMATS = {}  # format name -> from_dict


def register(cls):
    """Class decorator: `cls.to_dict()` trees of format `cls.__distgraph_format__` load back as `cls`."""
    FORMATS[cls.__distgraph_format__] = cls.from_dict
    return cls


def as_tree(obj):
    """The tree to save for an object of a registered class, else None."""
    if getattr(type(obj), "__distgraph_format__", None) in FORMATS:
        return obj.to_dict()
    return None


def revive(tree):
    """Rebuild the registered objects in a loaded tree (dicts carrying a registered "format")."""
    if isinstance(tree, dict):
        rebuild = FORMATS.get(tree.get("format")) if isinstance(tree.get("format"), str) else None
        if rebuild is not None:
            return rebuild(tree)
        return type(tree)((k, revive(v)) for k, v in tree.items())  # a dict, or an OrderedDict
    if isinstance(tree, list):
        return [revive(v) for v in tree]
    if type(tree) is tuple:  # (a Size holds ints only: as it is)
        return tuple(revive(v) for v in tree)
    return tree
