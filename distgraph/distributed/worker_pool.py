"""Warm worker groups: a cleanly closed group's actors kept a while for the next group of the same shape.

Why: every Ray actor is a process of its own, and Ray never reuses an actor's process (it keeps its idle
*task* workers alive for a second, `idle_worker_killing_time_threshold_ms`, and no more). A start costs
~0.75 CPU-s here — Ray's own import and core worker 0.48, distgraph's import, torch's for a gloo rank
1.3 s more — and a placement group's round trips. A sweep that builds Trainer after Trainer (and this
project's test suite, ~800 actors) pays it for every worker of every Trainer.

With `keep_workers_s` > 0 (`dg.distributed.init(keep_workers_s=...)`, or the environment variable
DISTGRAPH_KEEP_WORKERS_S), a WorkerGroup whose owner closed every actor cleanly is parked — its placement
group and actors kept — and the next WorkerGroup of the same key (actor class, which names the CPUs and
default dtype; size; bundle; strategy; core binding) adopts them: each actor's instance is made again in its
process (`reinit`: its attributes dropped, then the class's `__init__` with the new arguments and the seed a
fresh start of that rank draws), so what it computes is what a new process would compute. `launch`'s ranks are
parked after a clean close too (their function's process-wide settings put back as new: process_settings.py).
A parked group still holds its CPUs, so everything of distgraph's that wants CPUs first releases what is
parked: a group of another key, `spawn`, the elastic count of free CPUs, a placement that has to wait. And so
that nothing else waits for them either (a user's own actor or task), a watcher thread asks Ray's GCS every
POLL_S for the resource requests it cannot place yet — what its autoscaler reads — and releases every parked
group that holds resources as soon as there is one (~0.6 ms a query; seen within 0.5 s of an actor's creation
here); it also releases whatever has been parked for `keep_workers_s` (the store shards, which hold no CPUs,
included).

Off by default: a closed Trainer gives its CPUs back at once, as a Ray user expects of actors they
killed; a parked group's CPUs are Ray's to hand out only after the timer (or the next release).
"""

import os
import threading
import time

import ray
from ray.util.placement_group import remove_placement_group

from distgraph.errors import ConfigError, DistributedError
from distgraph.ops.rng import manual_seed

ENV = "DISTGRAPH_KEEP_WORKERS_S"
PING_S = 5.0  # how long a parked actor may take to answer before its group is given up as lost
POLL_S = 0.2  # how often the watcher looks at Ray's waiting requests and the parked groups' age

_keep_s = None  # set by `set_keep_seconds`; None: the environment variable decides
_parked = {}  # key -> [(job id, placement group, actors, parked at), ...]
_lock = threading.RLock()  # the driver's threads and the watcher
_watcher = None  # the thread that releases parked groups (`_watch`), while any is parked


def set_keep_seconds(seconds):
    """How long a closed group stays parked (0: never parked); None hands the choice back to ENV."""
    global _keep_s
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0):
        raise ConfigError(f"keep_workers_s must be a number of seconds >= 0, got {seconds!r}")
    _keep_s = seconds
    if not keep_seconds():
        release(everything=True)


def keep_seconds():
    if _keep_s is not None:
        return float(_keep_s)
    raw = os.environ.get(ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else 0.0
    except ValueError:
        raise ConfigError(f"{ENV}={raw!r} is not a number of seconds") from None


def _job():
    return ray.get_runtime_context().get_job_id() if ray.is_initialized() else None


def park(key, pg, actors):
    """Keep a closed group's placement group and actors for the next group of `key` → True if parked
    (the caller must then leave them alone), False if parking is off (the caller frees them). `pg` None:
    actors that hold no resources (parameter-store shards), kept for `take`. Their instances drop what
    they hold (a worker's dataset pins it in the object store) until they are made again."""
    keep = keep_seconds()
    if keep <= 0 or not ray.is_initialized():
        return False
    for actor in actors:
        actor.__ray_call__.remote(_clear)
    with _lock:
        _parked.setdefault(key, []).append((_job(), pg, list(actors), time.monotonic()))
        _arm()
    return True


def adopt(key):
    """The placement group and live actors of a parked group of `key` → (pg, actors), or None. Every
    other parked group that holds resources is released: the caller is about to want some."""
    with _lock:
        entries = _parked.pop(key, [])
        release()
    found = _first_alive(entries)
    return found and (found[1], found[2])


def take(key, args, kwargs, timeout_s):
    """A parked actor of `key` (one that holds no resources), made anew with (args, kwargs) → the actor,
    or None when none is parked. Its `__init__`'s error is raised here."""
    with _lock:
        entries = _parked.get(key, [])
        entry = entries.pop() if entries else None
        if entries == [] and key in _parked:
            del _parked[key]
    found = _first_alive([entry] if entry else [])
    if not found:
        return None
    (actor,) = found[2]
    try:
        ray.get(actor.__ray_call__.remote(reinit, args, kwargs), timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001  (its __init__'s error, or no answer: said with what it was)
        _free([found])
        cause = getattr(exc, "cause", None) or exc
        raise DistributedError(
            f"a parked {key[1]} actor could not be made again within {timeout_s}s: {cause}"
        ) from None
    return actor


def _first_alive(entries):
    """The last of `entries` (from this Ray session) whose actors all answer; the others freed."""
    job = _job()
    while entries:
        entry = entries.pop()
        if entry[0] == job and _alive(entry[2]):
            _free(entries)  # (two groups of one key closed together: one is enough)
            return entry
        _free([entry])
    return None


def release(everything=False, settle_s=0.0):
    """Free the parked groups that hold resources now (their actors killed, their placement groups
    removed); with `everything`, the actors that hold none too. `settle_s`: wait up to that long for Ray's
    count of free CPUs to show the ones freed (a caller about to read it: Ray updates it a moment later)."""
    with _lock:
        entries = _take_out(lambda entry: everything or _holds(entry))
    job = _job()
    cpus = sum(b.get("CPU", 0) for e in entries if _holds(e) and e[0] == job for b in e[1].bundle_specs)
    before = ray.available_resources().get("CPU", 0.0) if cpus and settle_s else None
    _free(entries)
    deadline = time.monotonic() + settle_s
    while before is not None and time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0.0) >= before + cpus:
            break
        time.sleep(0.02)


def _holds(entry):
    """Whether a parked entry holds resources (a placement group), not only processes."""
    return entry[1] is not None


def _take_out(goes):
    """Remove the parked entries that `goes(entry)` picks → them (call with the lock held)."""
    out = []
    for key in list(_parked):
        out += [e for e in _parked[key] if goes(e)]
        _parked[key] = [e for e in _parked[key] if not goes(e)]
        if not _parked[key]:
            del _parked[key]
    return out


def _free(entries):
    job = _job()
    for entry_job, pg, actors, _ in entries:
        if entry_job != job:
            continue  # that Ray session ended and freed them with it
        kill_actors(actors)
        if pg is not None:
            try:
                remove_placement_group(pg)
            except Exception:  # noqa: BLE001  (already removed)
                pass


def kill_actors(actors):
    """ray.kill each of `actors` (None skipped) for good; one already dead is no error."""
    for actor in actors:
        if actor is not None:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001  (already dead)
                pass


def _alive(actors):
    try:
        ray.get([a.__ray_call__.remote(_pong) for a in actors], timeout=PING_S)
        return True
    except Exception:  # noqa: BLE001  (one died while parked, or its node did)
        return False


def _pong(_actor):
    return True


def _arm():
    """Start the watcher, unless it runs (call with the lock held: the watcher decides to end under it)."""
    global _watcher
    if _watcher is None:
        _watcher = threading.Thread(target=_watch, name="distgraph-worker-pool", daemon=True)
        _watcher.start()


def _watch():
    """While anything is parked: free it all when Ray has a request it cannot place, and what has been
    parked for keep_seconds() in any case."""
    global _watcher
    while True:
        time.sleep(POLL_S)
        keep, now = keep_seconds(), time.monotonic()
        with _lock:
            if not _parked or not ray.is_initialized():
                _parked.clear()
                _watcher = None
                return
            waiting = _waiting_requests()  # those that hold resources go at once; every one after keep
            old = _take_out(lambda entry: (waiting and _holds(entry)) or now - entry[3] >= keep)
        _free(old)


def _waiting_requests():
    """Whether Ray holds a resource request (a task's, an actor's, a placement group's) it cannot place now.
    (Ray's autoscaler's own query; without it — Ray Client, another Ray — the watcher keeps only the timer.)"""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        state = get_cluster_resource_state(ray._private.worker.global_worker.gcs_client)
    except Exception:  # noqa: BLE001
        return False
    return bool(state.pending_resource_requests or state.pending_gang_resource_requests)


def _clear(instance):
    instance.__dict__.clear()


def reinit(instance, args, kwargs):
    """Run in a parked actor's process (`__ray_call__`): make its instance anew, as a new actor's would be —
    its generator back at a new process's seed too (0; a seeded group's class seeds it again in `__init__`)."""
    manual_seed(0)
    instance.__dict__.clear()
    type(instance).__init__(instance, *args, **kwargs)
