"""distgraph.utils: where torch users look for torch.utils's names — activation checkpointing
(`distgraph.utils.checkpoint`) and the data package (`distgraph.utils.data`).

`distgraph.utils.data` is distgraph.data itself, not a copy or a forwarding module: the package and
each of its loaded submodules are registered under both names, so `from distgraph.utils.data import
DataLoader` and `from distgraph.data import DataLoader` give the same class (isinstance checks and
DataLoader's worker processes see one module).
"""

import sys

from distgraph import data
from distgraph.utils import checkpoint

for _name, _module in list(sys.modules.items()):
    if _name == data.__name__ or _name.startswith(data.__name__ + "."):
        sys.modules["distgraph.utils" + _name.removeprefix("distgraph")] = _module

__all__ = ["checkpoint", "data"]
