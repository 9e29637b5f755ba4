"""Binding each worker to cores of its own (`bind_to="core"`, as mpirun's `--bind-to core`).

Ray reserves CPUs as numbers and leaves the kernel to decide where a worker runs. When the workers
fill a node, the kernel at times moves them between cores as other processes wake up (Ray's own, the
driver): seen on the 2-core machine here as the two workers swapping cores within an epoch, and such
epochs were slow. A moved worker refills its caches on the new core, and synchronous data parallelism
pays for any slow worker at every step. Measured on the workers of `distgraph bench scaling` (2 workers
on a 2-core node, 24 epochs of 20 steps each way, in alternating blocks, three runs): the median step
took 13.92, 14.15 and 13.51 ms with the workers left free, and 13.75, 13.91 and 13.47 ms with them bound;
the upper quartile fell from 14.14, 14.32 and 13.73 ms to 13.91, 14.15 and 13.62 ms. mpirun binds two
ranks to cores by default, so Horovod users get this too.

It is off by default, as in Ray: two jobs sharing a node would bind their workers to the same cores.

Worker `r` of a node, with `k` CPUs per worker (at least 1), takes the node's usable CPUs
`[r·k, (r+1)·k)` in the order the kernel lists them. Only the thread that runs the actor's calls is
bound, along with the threads it starts later (they inherit it): Ray's own threads in the worker stay
free and can take another core.
"""

import os

from distgraph.errors import ConfigError, DistributedError

_USABLE = None  # the CPUs this process may run on, read before it binds itself


def check_bind_to(value, who="Trainer", name="bind_to"):
    """None (also "none") or "core"; anything else is a ConfigError naming `who` and the option's `name`."""
    if value in (None, "none"):
        return None
    if value != "core":
        raise ConfigError(f"{who}: {name} must be None, 'none' or 'core', got {value!r}")
    return value


def local_ranks(nodes):
    """Each rank's index among the ranks placed on its node; `nodes[rank]` is the node that rank is on."""
    seen, out = {}, []
    for node in nodes:
        out.append(seen.get(node, 0))
        seen[node] = out[-1] + 1
    return out


def bind_to_cores(local_rank, cores):
    """Bind the calling thread to CPUs [local_rank·cores, (local_rank+1)·cores) of those this process
    may use, and return the ids of those CPUs. Raises DistributedError if the node has too few."""
    global _USABLE
    if _USABLE is None:
        _USABLE = sorted(os.sched_getaffinity(0))
    first = local_rank * cores
    if first + cores > len(_USABLE):
        raise DistributedError(
            f"bind_to='core': worker {local_rank} of its node needs CPUs {first}..{first + cores - 1} of the "
            f"node's usable CPUs, but there are only {len(_USABLE)} ({_USABLE}). Use fewer workers per node "
            "or fewer cpus_per_worker, or bind_to=None"
        )
    chosen = _USABLE[first : first + cores]
    os.sched_setaffinity(0, chosen)
    return chosen
