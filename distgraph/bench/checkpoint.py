"""`distgraph bench checkpoint`: saving and loading an FSDP model with its Adam state, sharded and whole,
against PyTorch's, on Ray workers.

What is measured, for each system on `--workers` ranks (an MLP, a unit per Linear, FULL_SHARD, after one
Adam step so that the optimizer has its state): the seconds from a barrier to a barrier of

- `distgraph-dcp`: `get_state_dict` + `dcp.save` (every rank writes its own pieces), and `get_state_dict` +
  `dcp.load` + `set_state_dict`;
- `distgraph-full`: FULL_STATE_DICT, every rank gathers the whole and rank 0 `dg.save`s it as one file;
  every rank `dg.load`s it and loads it (torch's usual full-checkpoint idiom; not rank0_only with
  offload_to_cpu, which torch 2.13's FSDP fails on CPU tensors with: "setStorage: ... storage of size 0");
- `torch-dcp`, `torch-full`: the same two with PyTorch FSDP over gloo, torch.distributed.checkpoint's
  FileSystemWriter and torch.save / torch.load.

Each load first zeroes the model's parameters, and the bench checks afterwards that they are back (a load
that restored nothing is refused, not timed). `*-dcp-async` (`dcp.async_save`, torch's `async_save`): "save" is
what the loop waits for (until the call returns), "written" until the checkpoint is whole. Every timed call
follows one untimed call of the same (first-call costs: imports, the collectives' first buffers). The systems' rounds alternate `--repeat` times; each figure
is the median. Files go to `--dir` (a temporary folder by default): both DCPs and dg.save fsync each file,
torch.save does not, so `torch-full`'s save may end before its bytes reach the disk.
"""

import functools
import os
import shutil
import statistics
import tempfile
import time

import click

from distgraph.bench._util import CommaList, json_out_option, machine, table, write_json
from distgraph.bench.fsdp import TorchFSDPRank

LR = 1e-3


def _timed(fn, barrier):
    """Seconds of `fn` on every rank, barrier to barrier, after one untimed call (first-call costs: imports,
    the collectives' first buffers of a size)."""
    fn()
    barrier()
    start = time.perf_counter()
    fn()
    barrier()
    return time.perf_counter() - start


def _timed_async(start_save, barrier):
    """→ (seconds until every rank's call returned, seconds until every rank's write finished), after one
    untimed save."""
    start_save().result()
    barrier()
    start = time.perf_counter()
    future = start_save()
    barrier()
    blocked = time.perf_counter() - start
    future.result()
    barrier()
    return blocked, time.perf_counter() - start


def _record(save_s, load_s, restored):
    return {"save": save_s, "load": load_s, "written": save_s, "restored": restored}


def _record_async(blocked, written, folder):
    """An async save: the loop blocked for `blocked`; whole (its index there) after `written`."""
    return {
        "save": blocked,
        "load": None,
        "written": written,
        "restored": os.path.exists(os.path.join(folder, ".metadata")),
    }


def _folder_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def _measure(system, folder, barrier, zeroed, restored, ops):
    """One rank's figures of a system's three kinds → ({"SYSTEM-KIND": figures}, {"SYSTEM-KIND": bytes on
    disk}). `ops` has each kind's calls on a path: "full" and "dcp" (save, load) — every load after zeroing the
    parameters, then checked to restore them — and "dcp-async" a save returning its future."""
    paths = {kind: os.path.join(folder, f"{system}-{kind}") for kind in ("full", "dcp", "dcp-async")}
    out = {}
    for kind in ("full", "dcp"):
        save, load = ops[kind]
        save_s = _timed(functools.partial(save, paths[kind]), barrier)
        zeroed()
        out[f"{system}-{kind}"] = _record(save_s, _timed(functools.partial(load, paths[kind]), barrier), restored())
    path = paths["dcp-async"]
    out[f"{system}-dcp-async"] = _record_async(*_timed_async(functools.partial(ops["dcp-async"], path), barrier), path)
    return out, {f"{system}-{kind}": _folder_bytes(p) for kind, p in paths.items()}


def _dcp_ops(dcp, get_state_dict, set_state_dict, model, opt, **async_options):
    """The "dcp" (save, load) and "dcp-async" calls on a path, for `_measure`: one code for distgraph's
    checkpoint modules and torch's, whose API they share (`async_options`: torch's process group)."""

    def save(path):
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=path)

    def load(path):
        msd, osd = get_state_dict(model, opt)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])

    def async_save(path):
        msd, osd = get_state_dict(model, opt)
        return dcp.async_save({"model": msd, "optim": osd}, checkpoint_id=path, **async_options)

    return {"dcp": (save, load), "dcp-async": async_save}


def _distgraph_round(sizes, folder):
    """One rank of distgraph's systems (`_measure`)."""
    import numpy as np

    import distgraph as dg
    import distgraph.distributed.checkpoint as dcp
    import distgraph.nn as nn
    import distgraph.nn.functional as F
    from distgraph.bench.scaling import _mlp
    from distgraph.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from distgraph.distributed.fsdp import (
        FSDP,
        FullOptimStateDictConfig,
        FullStateDictConfig,
        ModuleWrapPolicy,
        StateDictType,
    )

    dist = dg.distributed
    model = FSDP(_mlp(sizes, seed=0), auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    opt = dg.optim.Adam(model.parameters(), lr=LR)
    rng = np.random.default_rng(dist.rank())  # one step: Adam's state
    x = dg.tensor(rng.standard_normal((8, sizes[0])).astype("float32"))
    F.cross_entropy(model(x), dg.tensor(np.zeros(8, np.int64))).backward()
    opt.step()
    kept = [p.array.copy() for p in model.parameters()]

    def zeroed():
        for p in model.parameters():
            p.array[...] = 0

    def restored():
        return all(np.array_equal(p.array, k) for p, k in zip(model.parameters(), kept))

    configs = (FullStateDictConfig(), FullOptimStateDictConfig(offload_to_cpu=False))  # (every rank gathers)

    def full_save(path):
        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, *configs):
            state = {"model": model.state_dict(), "optim": FSDP.optim_state_dict(model, opt)}
        if dist.rank() == 0:
            dg.save(state, path)

    def full_load(path):
        state = dg.load(path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(FSDP.optim_state_dict_to_load(model, opt, state["optim"]))

    ops = {"full": (full_save, full_load), **_dcp_ops(dcp, get_state_dict, set_state_dict, model, opt)}
    return _measure("distgraph", folder, dist.barrier, zeroed, restored, ops)


class TorchCheckpointRank(TorchFSDPRank):
    """A rank of PyTorch FSDP (bench fsdp's) that saves and loads itself each way (`_measure`)."""

    def __init__(self, rank, world, port, sizes, seed):
        # (over a device mesh FSDP's sharded state dicts are DTensors: async_save's stager takes no ShardedTensor)
        super().__init__(rank, world, port, sizes, seed, mesh=True)
        self.features = sizes[0]
        # async_save's thread runs collectives while the loop runs its own: a group of its own (torch's advice;
        # on the default group the two threads' collectives can meet out of order and hang)
        self.async_group = self.dist.new_group(backend="gloo")

    def round(self, folder):
        import torch.distributed.checkpoint as tdcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType

        torch, model, opt = self.torch, self.model, self.opt
        torch.manual_seed(self.rank)  # one step: Adam's state
        x = torch.randn(8, self.features)
        torch.nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
        opt.step()
        kept = [p.detach().clone() for p in model.parameters()]

        def zeroed():
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()

        def restored():
            return all(torch.equal(p.detach(), k) for p, k in zip(model.parameters(), kept))

        FSDP = type(model)
        configs = (FullStateDictConfig(), FullOptimStateDictConfig(offload_to_cpu=False))  # (every rank gathers)

        def full_save(path):
            with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, *configs):
                state = {"model": model.state_dict(), "optim": FSDP.optim_state_dict(model, opt)}
            if self.rank == 0:
                torch.save(state, path)

        def full_load(path):
            state = torch.load(path, weights_only=True)
            with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT):
                model.load_state_dict(state["model"])
                opt.load_state_dict(FSDP.optim_state_dict_to_load(model, opt, state["optim"]))

        dcp_ops = _dcp_ops(tdcp, get_state_dict, set_state_dict, model, opt, process_group=self.async_group)
        return _measure(
            "torch", folder, self.dist.barrier, zeroed, restored, {"full": (full_save, full_load), **dcp_ops}
        )


def _torch_round(workers, sizes, folder, bind_to):
    """PyTorch's ranks for one round (made anew each round: Ray's CPUs go to distgraph's launch between)."""
    from distgraph.bench.scaling import _free_port
    from distgraph.distributed import runtime

    port = _free_port()
    ranks = runtime.spawn(TorchCheckpointRank, [(r, workers, port, sizes, 0) for r in range(workers)], num_cpus=1)
    try:
        if bind_to == "core":
            runtime.bind_actors(ranks)
        return runtime.gather([a.round.remote(folder) for a in ranks])
    finally:
        runtime.gather([a.close.remote() for a in ranks])
        runtime.kill(ranks)


PEERS = {"distgraph-dcp": "torch-dcp", "distgraph-dcp-async": "torch-dcp-async", "distgraph-full": "torch-full"}
FIELDS = ("save", "load", "written")


def run_checkpoint(workers, sizes, repeat, folder, bind_to="core", echo=print):
    """{system: [{save, load, written} seconds of the slowest rank] per round}, {system: bytes on disk}."""
    import distgraph as dg

    runs, sizes_on_disk = {}, {}
    for r in range(repeat):
        for per_rank in (
            dg.distributed.launch(_distgraph_round, workers=workers, args=(sizes, folder), bind_to=bind_to),
            _torch_round(workers, sizes, folder, bind_to),
        ):
            for system in per_rank[0][0]:
                if not all(out[system]["restored"] for out, _ in per_rank):
                    raise click.ClickException(f"bench checkpoint: {system}'s checkpoint did not come back whole")
                slowest = {f: max((out[system][f] for out, _ in per_rank), default=None) for f in FIELDS
                           if per_rank[0][0][system][f] is not None}  # fmt: skip
                runs.setdefault(system, []).append(slowest)
            sizes_on_disk.update(per_rank[0][1])
        echo(f"  round {r + 1}/{repeat}: " + ", ".join(f"{s} {v[-1]['save']:.3f}s" for s, v in runs.items()))
    return runs, sizes_on_disk


def report(runs, sizes_on_disk):
    median = {s: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for s, rs in runs.items()}
    points = []
    for s in runs:
        m, peer = median[s], median[PEERS.get(s, s)]
        point = {"system": s, **{f"{f}_s": m.get(f) for f in FIELDS}, "bytes": sizes_on_disk[s], "runs": runs[s]}
        point |= {f"{f}_vs_torch": peer[f] / m[f] if f in m else None for f in ("save", "load")}
        points.append(point)
    return points


@click.command("checkpoint")
@click.option("--workers", type=click.IntRange(2), default=2, show_default=True, help="ranks")
@click.option("--sizes", type=CommaList(), default="256,2048,2048,10", show_default=True, help="MLP layer sizes")
@click.option("--repeat", type=click.IntRange(1), default=5, show_default=True, help="rounds per system (median)")
@click.option("--dir", "folder", default=None, help="where the checkpoints go (default: a temporary folder)")
@click.option("--bind-to", type=click.Choice(["core", "none"]), default="core", show_default=True)
@json_out_option("checkpoint")
def command(workers, sizes, repeat, folder, bind_to, json_out):
    """FSDP checkpoints, sharded (dcp) and whole, vs PyTorch's: seconds to save and load, bytes on disk."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise click.ClickException("bench checkpoint compares with PyTorch: pip install 'distgraph[bench]'") from None
    from distgraph.distributed import runtime

    runtime.init(None, num_cpus=workers)
    own = folder is None
    folder = tempfile.mkdtemp(prefix="distgraph-bench-checkpoint-") if own else folder
    os.makedirs(folder, exist_ok=True)
    click.echo(f"checkpoint · FSDP MLP {'-'.join(map(str, sizes))} + Adam · {workers} ranks · {folder} · {machine()}")
    try:
        points = report(*run_checkpoint(workers, tuple(sizes), repeat, folder, bind_to, click.echo))
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)

    def cell(value, form):
        return "—" if value is None else format(value, form)

    rows = [
        [p["system"], cell(p["save_s"], ".3f"), cell(p["written_s"], ".3f"), cell(p["load_s"], ".3f"),
         f"{p['bytes'] / 2**20:.1f}", f"{p['bytes'] / p['written_s'] / 1e9:.2f}", cell(p["save_vs_torch"], ".2f"),
         cell(p["load_vs_torch"], ".2f")]
        for p in points
    ]  # fmt: skip
    headers = ["system", "save s", "written s", "load s", "MiB on disk", "GB/s written", "save ÷torch", "load ÷torch"]
    click.echo(table(headers, rows))
    click.echo(
        "save: what the loop waits for (an async save: until its call returns); written: until the checkpoint is "
        "whole; ÷torch: the torch peer's seconds ÷ the system's (dcp, dcp-async, full alike; above 1: faster); "
        "barrier to barrier, the slowest rank"
    )
    config = {"workers": workers, "sizes": sizes, "repeat": repeat, "bind_to": bind_to}
    write_json(json_out, {"machine": machine(), "config": config, "points": points}, click.echo)
