"""Fault injection shared by the distributed tests: real processes, killed for real."""

import os
import signal
import threading
import time

import distgraph as dg


def kill_when(t, after_epochs, pick):
    """In a thread: once `after_epochs` epochs are done, SIGKILL the process `pick(cluster)` names.

    The process is picked as soon as the cluster is up: picking asks the actor (a call queued behind
    whatever it runs — with a call carrying up to a second of steps, that is an epoch or more), and
    the kill must land while epochs remain, not after the fit."""

    def run():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and t._cluster is None:
            time.sleep(0.01)
        pid = pick(t._cluster)
        while time.monotonic() < deadline and len(t.history) < after_epochs:
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)  # at the epoch's end: during its checkpoint, or the next epoch's first steps

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def worker_pid(rank):
    """A `pick` for kill_when: the process of worker `rank`."""
    # the ping waits behind the calls in flight (two, of up to a second of steps each; longer on a loaded host)
    return lambda cluster: dg.distributed.runtime.gather(cluster.group.actors[rank].ping.remote(), timeout_s=60)[1]


def free_between_steps(monkeypatch, t, after_steps, free):
    """Elastic runs: `free()` (a ray.kill of what holds a CPU) at the driver's first look at the cluster
    between two segments once `after_steps` steps of the coming fit are in, and that look waits until Ray
    shows the CPU free. A thread that freed it while the steps ran raced the epoch's end: freed after
    the epoch's last look (ray.kill returns before the CPU is back; seconds on a loaded host), the CPU
    was taken at the next epoch's start, not between steps — and the test failed."""
    import ray

    cluster, freed = t._cluster, []
    first, look = cluster.scheduler.version, cluster._fitting_workers

    def look_once_freed(lo, hi):
        if not freed and cluster.scheduler.version >= first + after_steps:
            freed.append(free())
            deadline = time.monotonic() + 60
            while ray.available_resources().get("CPU", 0) < 1:
                assert time.monotonic() < deadline, f"no CPU free 60 s after freeing one: {ray.available_resources()}"
                time.sleep(0.05)
        return look(lo, hi)

    monkeypatch.setattr(cluster, "_fitting_workers", look_once_freed)
