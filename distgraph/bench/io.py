"""`distgraph bench io`: dg.save / dg.load throughput, vs torch.save / torch.load and the raw file.

Two checkpoints of the same total size: "large" (a few big tensors: bandwidth) and "many" (thousands
of small ones: per-tensor cost). Each is saved and loaded by distgraph and by PyTorch (weights_only
load, its safe mode), interleaved in one run, and compared with writing/reading the same bytes as one
raw file, the ceiling of this disk. Loads read from the page cache (the file was just written), so
they measure the format's own cost, not the disk. dg.save includes its fsync; torch.save has none,
so the save column also shows dg.save with the fsync left out (a file object instead of a path).
Sizes are MiB (2**20 bytes), bandwidths GB/s (1e9 bytes); the speed-up is torch's time ÷ the peer's,
as in `bench allreduce` (> 1: faster than torch).
"""

import os
import tempfile

import click
import numpy as np

from distgraph.bench._util import interleaved, json_out_option, machine, table, write_json


def _state(kind, total_bytes, rng):
    n = 4 if kind == "large" else 4096
    per = total_bytes // n // 4
    return {f"layer{i}.weight": rng.standard_normal(per, dtype=np.float32) for i in range(n)}


@click.command("io")
@click.option("--mb", type=click.IntRange(1), default=256, show_default=True, help="checkpoint size in MiB")
@click.option("--repeat", type=click.IntRange(1), default=5, show_default=True)
@click.option("--dir", "folder", default=None, help="where to write (default: the system temp folder)")
@json_out_option("io")
def command(mb, repeat, folder, json_out):
    """Checkpoint save/load GB/s: distgraph, PyTorch and the raw file, on large and many-small tensors."""
    import distgraph as dg

    try:
        import torch
    except ImportError:
        raise click.ClickException("bench io compares against PyTorch: pip install 'distgraph[bench]'") from None
    rng = np.random.default_rng(0)
    rows, results = [], {}
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = {k: os.path.join(tmp, k) for k in ("dg", "dg_nosync", "torch", "raw")}
        for kind in ("large", "many"):
            arrays = _state(kind, mb * 2**20, rng)
            ours = {k: dg.from_numpy(v) for k, v in arrays.items()}
            theirs = {k: torch.from_numpy(v) for k, v in arrays.items()}
            blob = np.concatenate(list(arrays.values()))
            nbytes = blob.nbytes

            def dg_nosync():
                with open(path["dg_nosync"], "wb") as f:
                    dg.save(ours, f)

            saves = interleaved(
                {
                    "distgraph": lambda: dg.save(ours, path["dg"]),
                    "distgraph (no fsync)": dg_nosync,
                    "torch": lambda: torch.save(theirs, path["torch"]),
                    "raw file": lambda: blob.tofile(path["raw"]),
                },
                repeat=repeat,
                warmup=1,
            )
            loads = interleaved(
                {
                    "distgraph": lambda: dg.load(path["dg"]),
                    "torch": lambda: torch.load(path["torch"], weights_only=True),
                    "raw file": lambda: np.fromfile(path["raw"], np.float32),
                },
                repeat=repeat,
                warmup=1,
            )
            results[kind] = {"bytes": nbytes, "tensors": len(arrays), "save_s": saves, "load_s": loads}
            for op, times in (("save", saves), ("load", loads)):
                results[kind][f"{op}_speedup_vs_torch"] = speedups = {p: times["torch"] / t for p, t in times.items()}
                for peer, secs in times.items():
                    rows.append([f"{kind} ({len(arrays)} tensors)", op, peer, secs * 1e3, nbytes / secs / 1e9,
                                 speedups[peer]])  # fmt: skip
    click.echo(f"checkpoint of {mb} MiB float32, median of {repeat}; speed-up vs torch = torch's time ÷ the peer's")
    click.echo(table(["checkpoint", "op", "peer", "ms", "GB/s", "speed-up vs torch"], rows))
    click.echo(machine())
    write_json(json_out, {"machine": machine(), "mb": mb, "results": results}, click.echo)
