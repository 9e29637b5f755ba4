"""The driver's copy of a Ray Trainer's state, kept in step with the store: `pull()` after steps ran (for
evaluation, checkpoints and the end of `fit`), `push()` after the driver loaded a checkpoint.

Mixed into RayCluster, whose params, trainer, group, stores, scheduler and store set-up it uses. Besides
the parameters and optimizer state, the model's buffers (batch norm's running statistics) come from rank
0, as DDP keeps rank 0's: each worker's replica updates its own on its shards, and the local Trainer keeps
rank 0's the same way, so a Ray run and a local one end with the same buffers. Before, a Ray fit never
sent them back: the driver evaluated and checkpointed the starting statistics.
"""

import numpy as np

from distgraph.distributed import runtime
from distgraph.distributed.param_store import ParameterShard
from distgraph.distributed.scheduler import wait_ready


class DriverState:
    def pull(self, after_failed_step=False):
        """Copy the store's parameters and optimizer state, and rank 0's buffers, into the driver's model and
        optimizer; nothing to do while the driver is current (no step ran since the last pull or push, or —
        sharded — since the epoch's last call brought the snapshot): evaluation, checkpoints and the end of
        `fit` cost no call. `after_failed_step`: a step raised on some rank, so rank 0's buffers are taken
        as they were before its last step (which the failed one was)."""
        if self._driver_current:
            return
        if self.sharded:
            self._install_snapshot(self._state_chunks(params=False))
            return
        if self._driver_buffers():
            rank0 = self.group.actors[0].get_buffers.remote(before_last_step=after_failed_step)
            self._install_buffers(wait_ready([rank0], self.trainer.timeout_s, "rank 0's buffers")[0])
        if self.async_shared:
            record = self.async_scheduler.snapshot()
            self._install(record["params"], record["version"], record["states"])
            return
        params, states = [None] * len(self.params), [{}] * len(self.params)
        shards = self._ask_stores("state_dict")
        for sd in shards:
            for i, arr, st in zip(sd["indices"], sd["params"], sd["state"]):
                params[i], states[i] = arr, st
        self._install(params, max(sd["version"] for sd in shards), states)

    def _install(self, params, version, states):
        """The store's parameters, version and per-parameter optimizer states → the driver's model, step
        and optimizer; the driver is current from here until the next step runs."""
        for p, arr in zip(self.params, params):
            p.array[...] = arr
        self.trainer.global_step = version
        osd, where = self.trainer.optimizer.state_dict(), self._state_indices()
        kept = {k: st for k, st in osd["state"].items() if k not in set(where)}  # frozen ones: not the store's
        osd["state"] = {**kept, **{where[i]: st for i, st in enumerate(states) if st}}
        self.trainer.optimizer.load_state_dict(osd)
        self.trainer.optimizer.note_step()  # (the workers stepped it: no step() here recorded that)
        self._driver_current = True

    def _state_chunks(self, params):
        refs = [w.state_chunk.remote(params=params) for w in self.group.actors]
        return wait_ready(refs, self.trainer.timeout_s, "workers")

    def _install_snapshot(self, chunks):
        """Every rank's `state_chunk()` → the driver's model, optimizer and step (the snapshot a replay starts from).

        Chunks taken without the parameters (`state_chunk(params=False)`) leave them to be read from the
        workers' segment — one file read instead of every rank's slice through the object store (5–9 ms
        of the epoch's end here); a driver on another machine asks the workers for them instead."""
        from distgraph.distributed.zero import assemble, common_dtype, read_parameters

        shapes, flat = [p.array.shape for p in self.params], None
        if "params" not in chunks[0]:
            dtype = common_dtype([p.array for p in self.params])
            flat = read_parameters(self.group_name, len(chunks), shapes, dtype)
            if flat is None:
                chunks = self._state_chunks(params=True)
        version, params, states = assemble(chunks, shapes, flat)
        self._install(params, version, states)
        self._install_buffers(chunks[0]["buffers"])
        self._snapshot_version = version  # the step a restart after a worker fault starts from (cluster_restarts.py)
        if self.trainer.grad_scaler is not None:
            self.trainer.grad_scaler.load_state_dict(chunks[0]["scaler"])

    def push(self):
        """Reset the stores and the workers' buffers from the driver's model and optimizer (after loading a
        checkpoint)."""
        self._push_buffers()
        self._snapshot_version = self.trainer.global_step  # the driver's state is the loaded checkpoint's
        if self.sharded:
            self._setup_sharded()
            self.scheduler.set_version(self.trainer.global_step)
            return
        if self.async_shared:
            self._setup_async()
            return
        for store in self.stores:  # (parked: the shards started next take them back, made anew)
            runtime.stop_store(ParameterShard, store)
        self.stores = []
        self._start_stores()
        self.scheduler.stores = self.stores
        self.scheduler.param_refs = [s.get_params.remote() for s in self.stores]
        self.scheduler.set_version(self.trainer.global_step)
        self._driver_current = True

    def _driver_state(self):
        """The driver's parameters (host arrays) and each one's optimizer state ({} before its first step)."""
        state = self.trainer.optimizer.state_dict()["state"]
        return [np.asarray(p.array) for p in self.params], [state.get(i, {}) for i in self._state_indices()]

    def _state_indices(self):
        """Each stored parameter's index in the optimizer's state_dict. The store holds the parameters that
        require grad; the optimizer's state_dict counts every parameter of its groups, a frozen one
        (requires_grad=False, still in the optimizer) included — so after one, the indices differ, and the
        state went to the wrong parameter (a shape error, or silently another's moments)."""
        where = {id(p): i for i, p in enumerate(p for g in self.trainer.optimizer.param_groups for p in g["params"])}
        return [where[id(p)] for p in self.params]

    def _push_optimizer_state(self):
        params, states = self._driver_state()
        if not any(states):
            return
        for s, members in enumerate(self.members):
            sd = {
                "shard_id": s,
                "version": self.trainer.global_step,
                "indices": members,
                "params": [params[i] for i in members],
                "state": [states[i] for i in members],
            }
            wait_ready(self.stores[s].load_state_dict.remote(sd), self.trainer.timeout_s, f"parameter-store shard {s}")

    # ---- buffers ------------------------------------------------------------------------------------------
    def _driver_buffers(self):
        return [b for b in self.trainer.model.buffers() if b is not None]

    def _install_buffers(self, arrays):
        """Rank 0's buffers → the driver's model (rank 0's `get_buffers()`, or its snapshot chunk's)."""
        for b, a in zip(self._driver_buffers(), arrays, strict=True):
            b.array[...] = a

    def _push_buffers(self):
        if buffers := self._driver_buffers():
            arrays = [np.asarray(b.array) for b in buffers]
            wait_ready([w.set_buffers.remote(arrays) for w in self.group.actors], self.trainer.timeout_s, "workers")
