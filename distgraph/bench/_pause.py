"""`Paused`: the systems a benchmark is not measuring, stopped (SIGSTOP) while one runs."""

import contextlib
import os
import signal


class Paused:
    """While one system runs its epochs, the worker processes of the others are stopped (SIGSTOP) and
    take no CPU. Idle, each Ray actor still costs ~0.7 % of a core (measured here: its core worker's
    timers and RPC polling) — ~4 % of a core for the six idle ranks of a default run, which a 1-worker
    epoch absorbs on its spare core and a 2-worker epoch takes from its workers. A system is asked for
    its processes while it is not stopped: until it has some (a Trainer starts its workers on its first
    fit), and each time it is about to run. Only processes on this node can be signalled. `release()`
    continues all (before any system is closed)."""

    def __init__(self, peers):
        self.peers, self.pids = peers, {}  # {key: peer}, {key: [pid, ...]}

    def only(self, key):
        self._signal(self.pids.pop(key, ()), signal.SIGCONT)
        for k, peer in self.peers.items():  # the running one asked again: a Plan's workers change with the batch
            if k not in self.pids and (pids := peer.pids()):
                self.pids[k] = pids
        for k, pids in self.pids.items():
            if k != key:
                self._signal(pids, signal.SIGSTOP)

    def release(self):
        for pids in self.pids.values():
            self._signal(pids, signal.SIGCONT)

    @staticmethod
    def _signal(pids, sig):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
