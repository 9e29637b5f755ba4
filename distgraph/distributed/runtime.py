"""Connecting to Ray and placing distgraph's actors.

`init(address)` follows Ray's conventions: None starts a local instance (or reuses the one this
process already has; with RAY_ADDRESS set it joins that cluster, as `ray.init()` does), "auto" joins the cluster this machine belongs to, "ray://host:port" goes through
Ray Client and "host:port" joins a GCS directly. Token authentication stays as Ray 2.60 sets it
(on by default); distgraph never turns it off.

Workers are placed with one placement-group bundle each — `{"CPU": k}` on cpu, `{"GPU": 1, "CPU": k}`
on cuda — with the PACK strategy by default (SPREAD across nodes when asked); Ray itself sets each
worker's OMP_NUM_THREADS to its k CPUs before distgraph (and its BLAS) is imported there, and the worker
limits its BLAS threads again on start (worker.py). With `bind_to="core"` each worker is also bound to
cores of its own (affinity.py).

No distgraph actor has a runtime_env: Ray starts an actor with one through its setup_worker step, a second
Python start that imports much of Ray (0.5–0.6 s of CPU per actor here, 1.07 s against 0.30 s to a first
call), so a launch of N workers paid N of them and the test suite's ~480 actors minutes. What the
runtime_env carried, each actor's process now sets itself before its class's `__init__` runs
(`remote_class`): the driver's default dtype, and the allocator settings below.

Random streams: a process starts with distgraph's generator at seed 0, so workers left alone would all
draw the same dropout masks (every data-parallel rank) whatever the driver seeded. A `seeded` WorkerGroup
(the Trainer's; a plan's tasks get seeds of their own, plan_runner.py) draws a base seed from the
driver's generator when it is made (at a fit: `dg.manual_seed(s)` before it makes the run repeat), or
takes the one it is given, and each actor it starts seeds its process from
`SeedSequence([base, rank, start])` (`worker_seed`), `start` counting the starts of that rank in the
group: what a worker draws outside a sync training step (an async step) comes from there, and a
restarted worker draws a stream of its own, not its first incarnation's again.
A synchronous training step draws from a stream of its own instead: `step_seed(base, rank, global step)`,
seeded by the worker when the step begins. Its masks are then a function of the step, not of the steps
the process ran before it, so a restarted worker replaying the steps since the snapshot, and a fit
resumed from a checkpoint (which holds the Trainer's base: `Trainer.worker_seed`), draw the masks the
uninterrupted run drew — as batches are a function of (seed, epoch). (Before, a replayed or resumed step
drew from wherever the new process's stream stood, so a model with dropout resumed to other parameters.)
`launch`'s ranks are not seeded: as torchrun's processes (torch's default seed is the same in each), they
start alike, so a script's unseeded model is the same on every rank, and the script seeds them itself.
"""

import contextlib
import gc
import os

import numpy as np
import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from distgraph import dtypes, host_memory
from distgraph.backend import CPU
from distgraph.distributed import affinity, worker_pool
from distgraph.errors import ConfigError, DistributedError
from distgraph.ops.rng import generator, manual_seed

SEED = "_distgraph_seed"  # the keyword `remote_class`'s actors take their (base, rank, start) by


def _probe(address, timeout_s):
    """Fail in seconds, with the address in the message, when nothing listens there (Ray itself retries
    an unreachable GCS for minutes)."""
    import socket

    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except ValueError:
        raise DistributedError(f"Ray address {address!r} is not host:port, ray://host:port or 'auto'") from None
    except OSError as exc:
        raise DistributedError(
            f"no Ray cluster reachable at {address!r} ({exc.strerror or exc}) within {timeout_s}s"
        ) from None


def init(address=None, num_cpus=None, num_gpus=None, timeout_s=10.0, keep_workers_s=None, **kwargs):
    """Connect to (or start) Ray; returns ray's context. A second call reuses the connection — unless
    it names another cluster's address, which is an error rather than a silent reuse. `keep_workers_s`:
    how long a closed Trainer's workers (or a finished launch's ranks) stay warm for the next Trainer
    (launch) of the same shape (worker_pool.py; default 0, or DISTGRAPH_KEEP_WORKERS_S)."""
    if keep_workers_s is not None:
        worker_pool.set_keep_seconds(keep_workers_s)
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", "local") and not str(address).startswith("ray://") and address != current:
            raise DistributedError(
                f"already connected to the Ray cluster at {current}, not {address!r}: call "
                "dg.distributed.runtime.shutdown() first to connect elsewhere"
            )
        return ray.get_runtime_context()
    opts = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False, **kwargs}
    if address not in (None, "auto", "local"):
        _probe(address, timeout_s)
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # "local", not None: Ray's None would also join whatever cluster /tmp/ray/ray_current_cluster
        # names — a stale file left by a `ray start` that has ended makes that fail
        address = "local"
        opts.update(num_cpus=num_cpus, num_gpus=num_gpus)
    try:
        return ray.init(address=address, **opts)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DistributedError(f"could not connect to Ray at {address!r}: {exc}") from exc


def is_initialized():
    return ray.is_initialized()


def shutdown():
    if ray.is_initialized():
        worker_pool.release(everything=True)
        ray.shutdown()


def cluster_summary():
    """Alive nodes and total resources: what `distgraph train` prints before it starts."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"nodes": len(nodes), "resources": ray.cluster_resources()}


def _no_room(n, bundle, timeout_s, pg):
    """Why `n` bundles found no room: what the cluster has of each resource asked for, and what the other
    placement groups hold — most often a Trainer or launch of this very process that was never closed."""
    total, free = ray.cluster_resources(), ray.available_resources()
    have = ", ".join(f"{k} {free.get(k, 0):g} free of {total.get(k, 0):g}" for k in bundle)
    others = [g for gid, g in placement_group_table().items() if g["state"] == "CREATED" and gid != pg.id.hex()]
    msg = f"could not place {n} workers with {bundle} each within {timeout_s}s: the cluster has {have}"
    if others:
        held = {k: sum(b.get(k, 0) for g in others for b in g["bundles"].values()) for k in bundle}
        msg += (
            f"; {len(others)} other placement group(s) hold "
            + ", ".join(f"{k} {v:g}" for k, v in held.items())
            + " (an earlier Trainer still open? trainer.close(), or `with dg.Trainer(...) as trainer:`)"
        )
    return msg


# The least a placement waits, whatever the caller's timeout_s (a Trainer's 1 s for hung steps, say): on a
# loaded machine Ray took over a second to place one bundle with the CPU free, and the actors of a group just
# closed give their CPUs back a moment after their kill.
PLACEMENT_FLOOR_S = 5.0


class WorkerGroup:
    """N actors of one class in a placement group (one bundle each), with their device and CPUs."""

    def __init__(self, actor_cls, n, *, device="cpu", cpus_per_worker=1, strategy="PACK", timeout_s=60, bind_to=None,
                 seeded=False):  # fmt: skip
        """`bind_to="core"`: each worker bound to cores of its own on its node (affinity.py; `bound()`);
        `seeded`: each worker's generator seeded from a base seed the driver draws, or from `seeded` itself
        when it is an int (a Trainer's `worker_seed`, kept across its groups and checkpoints): module docstring."""
        self.bind_to = affinity.check_bind_to(bind_to, "WorkerGroup")
        if isinstance(cpus_per_worker, bool) or not isinstance(cpus_per_worker, int | float) or not cpus_per_worker > 0:
            raise ConfigError(  # (Ray refuses a negative bundle, then its raylet dies removing the group)
                f"cpus_per_worker must be a positive number of CPUs (Ray's num_cpus per worker), got {cpus_per_worker!r}"
            )
        gpu = str(device).startswith("cuda")
        bundle = {"CPU": cpus_per_worker, **({"GPU": 1} if gpu else {})}
        self.remote_cls = remote_class(actor_cls, cpus_per_worker)
        self.key = (self.remote_cls, n, tuple(sorted(bundle.items())), strategy, self.bind_to)
        adopted = worker_pool.adopt(self.key)  # a parked group of this shape (worker_pool.py), else None
        self.warm = list(adopted[1]) if adopted else [None] * n  # parked actors, until `start` takes each
        self.pg = adopted[0] if adopted else self._place(n, bundle, strategy, max(timeout_s, PLACEMENT_FLOOR_S))
        self.options = [
            {
                "num_cpus": cpus_per_worker,
                "num_gpus": 1 if gpu else 0,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(
                    placement_group=self.pg, placement_group_bundle_index=i
                ),
            }
            for i in range(n)
        ]
        self.actors = [None] * n
        # the workers' random streams (module docstring)
        self.seed = draw_base_seed() if seeded is True else None if seeded is False else int(seeded)
        self.starts = [0] * n  # starts of each rank so far: a restarted worker's stream is new
        self.cores = max(1, int(cpus_per_worker))
        self._binding = {}  # rank -> the ref of its binding call, until `bound()` collects it
        self._reinit = {}  # rank -> the ref of a parked actor's `reinit`, until `bound()` collects it
        self.reusable = True  # False once a warm actor failed to start again: never parked then

    @staticmethod
    def _place(n, bundle, strategy, timeout_s):
        pg = placement_group([dict(bundle) for _ in range(n)], strategy=strategy)
        ready, _ = ray.wait([pg.ready()], timeout=1.0)
        if not ready:
            # A Trainer dropped after a failed fit sits in a reference cycle (its error's traceback holds the
            # frames that hold it) until the next collection, holding its group (Trainer._own): collect it now,
            # and free what its close parked.
            gc.collect()
            worker_pool.release()
            ready, _ = ray.wait([pg.ready()], timeout=timeout_s - 1.0)
        if not ready:
            why = _no_room(n, bundle, timeout_s, pg)
            remove_placement_group(pg)
            raise DistributedError(why)
        return pg

    def start(self, rank, *args, **kwargs):
        """(Re)start the actor of `rank` in its bundle. With `bind_to`, its first call binds it (Ray runs
        one caller's calls to an actor in order, so it is bound before anything else runs) to the cores of
        its index among the bundles on its node — read at each start: after a node is lost, Ray may have
        placed the bundle elsewhere. Its process's generator is seeded from (the group's base seed, rank,
        the number of earlier starts of this rank): module docstring."""
        if self.seed is not None:
            kwargs[SEED] = (self.seed, rank, self.starts[rank])
        self.starts[rank] += 1
        actor, self.warm[rank] = self.warm[rank], None
        if actor is None:
            actor = self.remote_cls.options(**self.options[rank]).remote(*args, **kwargs)
        else:  # a parked group's actor: its instance made anew in its process (worker_pool.py)
            self._reinit[rank] = actor.__ray_call__.remote(worker_pool.reinit, args, kwargs)
        self.actors[rank] = actor
        if self.bind_to:
            placed = ray.util.placement_group_table(self.pg).get("bundles_to_node_id", {})
            local = affinity.local_ranks([placed.get(i) for i in range(len(self.actors))])[rank]
            self._binding[rank] = actor.__ray_call__.remote(_bind, local, self.cores)
        return actor

    def bound(self, timeout_s=120.0):
        """Wait for the binding of the workers started since the last call → {rank: CPU ids}; a worker
        that could not be bound raises DistributedError naming it."""
        pending, self._binding = self._binding, {}
        reinit, self._reinit = self._reinit, {}
        for rank, ref in sorted(reinit.items()):
            self._wait_start(rank, ref, timeout_s, "starting it again")
        return {
            rank: self._wait_start(rank, ref, timeout_s, "binding it to cores") for rank, ref in sorted(pending.items())
        }

    def _wait_start(self, rank, ref, timeout_s, doing):
        try:
            return ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.reusable = False
            raise DistributedError(f"worker {rank} did not start within {timeout_s}s ({doing})") from None
        except Exception as exc:  # noqa: BLE001  (the worker's error, re-raised with the rank)
            self.reusable = False
            raise DistributedError(f"worker {rank}: {getattr(exc, 'cause', None) or exc}") from None

    def kill(self, rank):
        if self.actors[rank] is not None:
            ray.kill(self.actors[rank], no_restart=True)
            self.actors[rank] = None

    def shutdown(self, park=False):
        """Kill the actors and remove the placement group — or, with `park` (the owner closed every actor
        cleanly) and keep_workers_s > 0, keep both for the next group of this shape (worker_pool.py)."""
        if not ray.is_initialized():
            return  # the Ray session that held the actors and the group ended, and freed them with it
        actors = [a for a in self.actors if a is not None]
        if park and self.reusable and len(actors) == len(self.actors) and not self._reinit:
            if worker_pool.park(self.key, self.pg, actors):
                self.actors, self.pg = [None] * len(self.actors), None  # the pool's now
                return
        if self.pg is None:
            return  # parked by an earlier shutdown
        # (a warm actor of a rank never started is still this group's)
        worker_pool.kill_actors(a if a is not None else w for a, w in zip(self.actors, self.warm))
        self.actors, self.warm = [None] * len(self.actors), [None] * len(self.actors)
        remove_placement_group(self.pg)


def limit_threads(cpus):
    """BLAS threads to the process's CPUs: the variables for libraries loaded later, threadpoolctl (if
    present) for those loaded already — where the environment Ray inherited set OMP_NUM_THREADS itself."""
    n = str(max(1, int(cpus)))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(n))


def setup_process(default_dtype, cpus, seed=None):
    """What every distgraph actor's process sets first: the driver's default dtype, the allocator, BLAS
    threads to its CPUs, and its random generator from `seed` ((base, rank, start): `worker_seed`)."""
    host_memory.keep_freed_memory(host_memory.WORKER)  # distgraph's own process: keep all of it
    limit_threads(cpus)
    dtypes.set_default_dtype(default_dtype)
    if seed is not None:
        manual_seed(worker_seed(*seed))


def draw_base_seed():
    """A base seed for a group of workers, drawn from the driver's generator (so `dg.manual_seed` fixes it)."""
    return int(generator(CPU).integers(0, 2**63))


def worker_seed(base, rank, start=0):
    """The seed of worker `rank`'s generator in its `start`-th process: independent streams per rank and start."""
    return int(np.random.SeedSequence([base, rank, start]).generate_state(1, np.uint64)[0])


STEP_STREAMS = 0x53544550  # "STEP": keeps step streams apart from the start streams above (numpy pads an
# entropy list with zeros, so [base, rank, t, 0] would be the start stream [base, rank, t])


def step_seed(base, rank, step):
    """The seed worker `rank` draws global step `step`'s random numbers from (module docstring)."""
    return int(np.random.SeedSequence([base, rank, step, STEP_STREAMS]).generate_state(1, np.uint64)[0])


def seed_step(streams, rank, k=0):
    """Seed this process's generators for a training step: `streams` is (base, the global step of the
    call's first step) or None (a caller that keys no steps: the process's stream goes on), `k` the step's
    place in its call."""
    if streams is not None:
        base, first = streams
        manual_seed(step_seed(base, rank, first + k))


# (class, cpus, default dtype, options) -> the Ray actor class made for them. Ray exports an actor class to
# its cluster once per job; a class made anew for every group was pickled, hashed (its bytecode
# disassembled) and stored again at each Trainer's start, and each new worker fetched it again.
_REMOTE_CLASSES = {}


def remote_class(cls, cpus=1, **options):
    """`ray.remote(cls)`, its actors' processes set up (`setup_process`, for `cpus` CPUs) before
    `cls.__init__` runs, with the default dtype the driver has now (made once per combination)."""
    default_dtype = dtypes.get_default_dtype().name
    key = (cls, cpus, default_dtype, tuple(sorted(options.items())))
    if key not in _REMOTE_CLASSES:
        _REMOTE_CLASSES[key] = _make_remote_class(cls, cpus, default_dtype, options)
    return _REMOTE_CLASSES[key]


def _make_remote_class(cls, cpus, default_dtype, options):
    class Actor(cls):
        def __init__(self, *args, **kwargs):
            setup_process(default_dtype, cpus, kwargs.pop(SEED, None))
            super().__init__(*args, **kwargs)

    Actor.__name__, Actor.__qualname__, Actor.__doc__ = cls.__name__, cls.__qualname__, cls.__doc__
    return ray.remote(**options)(Actor) if options else ray.remote(Actor)


def start_store(shard_cls, *args, timeout_s=60.0, **kwargs):
    """A parameter-store shard actor: no CPU reserved (its work is a few array updates per step). A closed
    Trainer's parked shard of the class is made anew instead of a new process started (worker_pool.py)."""
    taken = worker_pool.take(_store_key(shard_cls), args, kwargs, timeout_s)
    return taken or remote_class(shard_cls).options(num_cpus=0).remote(*args, **kwargs)


def stop_store(shard_cls, actor):
    """Park a store shard its Trainer is done with for the next Trainer's (worker_pool.py), or kill it. (One
    that died parked is found out by the ping of `take`, and a new one started.)"""
    if not worker_pool.park(_store_key(shard_cls), None, [actor]):
        ray.kill(actor)


def _store_key(shard_cls):
    """A parked store shard's key (worker_pool.py): the class's name, for errors, and its Ray class."""
    return ("store", shard_cls.__name__, remote_class(shard_cls))


def spawn(cls, args_per_rank, num_cpus=1):
    """One plain actor per argument tuple (benchmarks and tests: no placement group needed), set up as a
    worker's process is, so what it measures is what a worker would see."""
    worker_pool.release()  # their CPUs
    remote_cls, base = remote_class(cls, num_cpus, num_cpus=num_cpus), draw_base_seed()
    return [remote_cls.remote(*args, **{SEED: (base, r, 0)}) for r, args in enumerate(args_per_rank)]


def gather(refs, timeout_s=None):
    """ray.get for callers outside `distributed/` (which never import ray themselves)."""
    return ray.get(refs, timeout=timeout_s)


def kill(actors):
    for a in actors:
        ray.kill(a)


def local_pids(actors, timeout_s=30.0):
    """The process ids of those of `actors` that run on this driver's node (the only ones its signals
    reach), asked through Ray's `__ray_call__`, so any actor class answers."""
    here = ray.get_runtime_context().get_node_id()
    where = ray.get([a.__ray_call__.remote(_pid_and_node) for a in actors], timeout=timeout_s)
    return [pid for pid, node in where if node == here]


def _bind(_actor, local_rank, cores):
    return affinity.bind_to_cores(local_rank, cores)


def bind_actors(actors, cores=1, timeout_s=60.0):
    """Bind actors started without a WorkerGroup (`spawn`) to cores of their own on their nodes, as
    `bind_to="core"` does → the CPU ids of each."""
    nodes = [node for _, node in ray.get([a.__ray_call__.remote(_pid_and_node) for a in actors], timeout=timeout_s)]
    ranks = affinity.local_ranks(nodes)
    return ray.get([a.__ray_call__.remote(_bind, r, cores) for a, r in zip(actors, ranks)], timeout=timeout_s)


def _pid_and_node(_actor):
    return os.getpid(), ray.get_runtime_context().get_node_id()
