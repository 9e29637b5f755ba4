"""distgraph.distributed: Ray runtime, workers, scheduler, all-reduce layer and parameter store.

The only package that imports ray. `dg.distributed.init(address)` connects to a cluster (or starts
a local one); the Trainer with backend="ray" uses the rest. For a training loop of one's own (Horovod's
way): `launch(fn, workers=N)` and, inside fn, `rank`, `world_size`, `all_reduce`, `broadcast`, `barrier`,
`broadcast_parameters`, `allgather` / `all_gather`, `broadcast_object`, `allgather_object` /
`all_gather_object`, `broadcast_optimizer_state`, and torch's `get_rank`, `get_world_size`, `ReduceOp` (SUM,
AVG, MAX, MIN, PRODUCT, BAND, BOR, BXOR) (loop.py); Horovod's `DistributedOptimizer` (dist_optimizer.py);
torch's `reduce`, `reduce_scatter`, `reduce_scatter_tensor`, `all_to_all`, `all_to_all_single`, `gather`,
`scatter` and Horovod's `Sum`, `Average`, `Min`, `Max`, `Product`, `Adasum`,
`grouped_allreduce`, `reducescatter`, `alltoall`, `local_rank`, `local_size`, `cross_rank`, `cross_size`
(collectives.py); torch's differentiable collectives `nn.functional.all_reduce`, `all_gather`, `broadcast`,
`reduce`, `gather`, `scatter`, `reduce_scatter`, `all_to_all`, `all_to_all_single` (nn/functional.py);
Horovod's API in one namespace, `import distgraph.distributed.horovod as hvd` (its `allreduce`, `broadcast`
return new, differentiable tensors; `allreduce_`, `broadcast_` work in place; the `*_async` forms with
`synchronize` / `poll`; `start_timeline` / `stop_timeline`, collective_trace.py); and `DistributedDataParallel`
(ddp.py). A script written for torchrun: `init_process_group`, `destroy_process_group`, `get_backend`,
`new_group` (of any ranks: subgroups.py), `new_subgroups`, `new_subgroups_by_enumeration`, `group.WORLD`,
`device_mesh.init_device_mesh` / `DeviceMesh` (device_mesh.py), tensor parallelism's
`tensor.parallel.parallelize_module` with `ColwiseParallel` / `RowwiseParallel` (tensor/parallel.py),
pipelining's `PipelineStage`, `ScheduleGPipe`, `Schedule1F1B`, `ScheduleLoopedBFS`, `ScheduleInterleaved1F1B`
(pipelining.py), `all_gather_into_tensor`, the object collectives, `group=` and
`async_op=` on every collective, and RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE (process_group.py);
point-to-point `send`, `recv`, `isend`, `irecv`, `batch_isend_irecv`, `P2POp` (p2p.py);
`optim.ZeroRedundancyOptimizer` (optim/zero_redundancy.py); `fsdp.FullyShardedDataParallel` (fsdp.py, with
MixedPrecision and SHARDED_STATE_DICT); torch.distributed.checkpoint's `checkpoint.save` / `load` / `async_save`
and `checkpoint.state_dict.get_state_dict` / `set_state_dict` (checkpoint/); Ray Train's `train.TorchTrainer`, `report`,
`get_context`, `get_checkpoint`, `Checkpoint`, `prepare_model`, `prepare_data_loader` (train.py).

What Horovod and torch DDP users pass besides: `DistributedOptimizer(opt, compression=Compression.fp16,
backward_passes_per_step=k, op=Average|Sum, gradient_predivide_factor=f)`, with `synchronize()` and
`skip_synchronize()` (dist_optimizer.py; `Compression`: compression.py); `DistributedDataParallel(...,
find_unused_parameters, gradient_as_bucket_view, static_graph, broadcast_buffers, bucket_cap_mb)`,
`ddp.register_comm_hook(state, hook)` with `algorithms.ddp_comm_hooks.default_hooks` (`allreduce_hook`,
`fp16_compress_hook`, `bf16_compress_hook`; a hook gets a `GradBucket`, grad_bucket.py) and `ddp.join()` /
`algorithms.Join` for ranks with uneven numbers of batches (algorithms/join.py).
"""

import importlib

from distgraph.nn import parallel as _nn_parallel

_SUBMODULES = (
    "algorithms",
    "allreduce",
    "buckets",
    "checkpoint",
    "collectives",
    "cluster",
    "compression",
    "ddp",
    "device_mesh",
    "dist_optimizer",
    "fsdp",
    "grad_bucket",
    "horovod",
    "loop",
    "nn",
    "optim",
    "p2p",
    "param_store",
    "pipelining",
    "placement",
    "plan_runner",
    "process_group",
    "runtime",
    "scheduler",
    "shm",
    "step",
    "tensor",
    "train",
    "worker",
)


def init(address=None, **kwargs):
    """Connect to Ray at `address` (None: start or reuse a local instance; "auto"; "ray://..."; "host:port")."""
    from distgraph.distributed.runtime import init as _init

    return _init(address, **kwargs)


def shutdown():
    from distgraph.distributed.runtime import shutdown as _shutdown

    _shutdown()


_LOOP_API = (
    "rank", "world_size", "all_reduce", "broadcast", "barrier", "broadcast_parameters",
    "allgather", "all_gather", "broadcast_object", "allgather_object", "all_gather_object",
    "size", "ReduceOp", "broadcast_optimizer_state",
)  # fmt: skip
_COLLECTIVES_API = (
    "Sum", "Average", "Min", "Max", "Product", "grouped_allreduce", "reducescatter", "alltoall",
    "local_rank", "local_size", "cross_rank", "cross_size", "Adasum",
)  # fmt: skip


_PROCESS_GROUP_API = (
    "init_process_group", "destroy_process_group", "is_initialized", "get_backend", "is_available",
    "is_gloo_available", "is_nccl_available", "is_mpi_available", "new_group", "monitored_barrier", "group",
    "GroupMember", "ProcessGroup", "Backend", "Work", "get_rank", "get_world_size", "get_process_group_ranks",
    "get_global_rank", "get_group_rank", "new_subgroups", "new_subgroups_by_enumeration", "get_node_local_rank",
    "is_torchelastic_launched",
)  # fmt: skip
_P2P_API = ("send", "recv", "isend", "irecv", "batch_isend_irecv", "P2POp")
_TORCH_COLLECTIVES = (
    "all_reduce", "broadcast", "barrier", "all_gather", "all_gather_object", "reduce", "reduce_scatter",
    "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "gather", "scatter", "all_gather_into_tensor",
    "broadcast_object_list", "gather_object", "scatter_object_list",
)  # fmt: skip


def launch(fn, workers=2, *, args=(), kwargs=None, address=None, device="cpu", cpus_per_worker=1, bind_to=None,
           allreduce="auto", timeout_s=120.0, max_restarts=0):  # fmt: skip
    """Run `fn(*args, **kwargs)` on `workers` Ray workers that meet in one all-reduce → what each rank returned;
    `max_restarts=K` starts every rank again after a failure, as torchrun (distributed/launcher.py). Imported
    when called: `import distgraph.distributed` does not import ray."""
    from distgraph.distributed.launcher import launch as _launch

    return _launch(fn, workers, args=args, kwargs=kwargs, address=address, device=device,
                   cpus_per_worker=cpus_per_worker, bind_to=bind_to, allreduce=allreduce, timeout_s=timeout_s,
                   max_restarts=max_restarts)  # fmt: skip


def __getattr__(name):
    if name == "DistributedDataParallel":
        return importlib.import_module("distgraph.distributed.ddp").DistributedDataParallel
    if name == "DistributedOptimizer":
        return importlib.import_module("distgraph.distributed.dist_optimizer").DistributedOptimizer
    if name in ("Compression", "Compressor"):
        return getattr(importlib.import_module("distgraph.distributed.compression"), name)
    if name == "GradBucket":
        return importlib.import_module("distgraph.distributed.grad_bucket").GradBucket
    if name in ("DeviceMesh", "init_device_mesh"):
        return getattr(importlib.import_module("distgraph.distributed.device_mesh"), name)
    if name in _P2P_API:
        return getattr(importlib.import_module("distgraph.distributed.p2p"), name)
    if name in _PROCESS_GROUP_API:
        return getattr(importlib.import_module("distgraph.distributed.process_group"), name)
    if name in _TORCH_COLLECTIVES:  # with torch's group= and async_op= keywords
        return importlib.import_module("distgraph.distributed.process_group").TORCH_COLLECTIVES[name]
    if name in _LOOP_API:
        return getattr(importlib.import_module("distgraph.distributed.loop"), name)
    if name in _COLLECTIVES_API:
        return getattr(importlib.import_module("distgraph.distributed.collectives"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"distgraph.distributed.{name}")
    raise AttributeError(f"module 'distgraph.distributed' has no attribute {name!r}")


def _nn_parallel_getattr(name):
    """dg.nn.parallel.DistributedDataParallel, torch's path: nn is a lower layer that may not import this one,
    so importing distgraph.distributed attaches it (imported on first use: ddp.py imports ray)."""
    if name == "DistributedDataParallel":
        return __getattr__(name)
    raise AttributeError(f"module 'distgraph.nn.parallel' has no attribute {name!r}")


_nn_parallel.__getattr__ = _nn_parallel_getattr
