"""distgraph.distributed: Ray runtime, workers, scheduler, all-reduce layer and parameter store.

The only package that imports ray. `dg.distributed.init(address)` connects to a cluster (or starts
a local one); the Trainer with backend="ray" uses the rest.
"""

import importlib

_SUBMODULES = (
    "allreduce",
    "buckets",
    "cluster",
    "param_store",
    "placement",
    "plan_runner",
    "runtime",
    "scheduler",
    "shm",
    "step",
    "worker",
)


def init(address=None, **kwargs):
    """Connect to Ray at `address` (None: start or reuse a local instance; "auto"; "ray://..."; "host:port")."""
    from distgraph.distributed.runtime import init as _init

    return _init(address, **kwargs)


def shutdown():
    from distgraph.distributed.runtime import shutdown as _shutdown

    _shutdown()


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"distgraph.distributed.{name}")
    raise AttributeError(f"module 'distgraph.distributed' has no attribute {name!r}")
