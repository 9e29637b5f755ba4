"""Fault injection shared by the distributed tests: real processes, killed for real."""

import os
import signal
import threading
import time

import distgraph as dg


def kill_when(t, after_epochs, pick):
    """In a thread: once `after_epochs` epochs are done, SIGKILL the process `pick(cluster)` names."""

    def run():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (t._cluster is None or len(t.history) < after_epochs):
            time.sleep(0.01)
        time.sleep(0.05)  # into the next epoch
        os.kill(pick(t._cluster), signal.SIGKILL)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def worker_pid(rank):
    """A `pick` for kill_when: the process of worker `rank`."""
    return lambda cluster: dg.distributed.runtime.gather(cluster.group.actors[rank].ping.remote(), timeout_s=10)[1]
