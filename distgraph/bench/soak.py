"""`distgraph bench soak`: a long Ray run (sync, or async with `--sync async`) whose memory must stay flat after warm-up.

A leaked ObjectRef keeps its object in Ray's object store; a leaked buffer grows a process. So
every `--sample-every` steps, from the driver, between steps (the scheduler's per-step hook):

- object store: bytes used and number of objects (all nodes, from the raylets' memory report);
- ObjectRefs the driver holds (its reference table);
- memory of every process of the run (driver, each worker, each parameter-store shard): private
  memory (Linux RssAnon: the heap, where a leak shows) and total RSS. Total RSS also counts the
  object store's shared pages a process has touched, which stay mapped after their objects are
  freed and level off at the store's high-water mark; it is reported, not judged.

Ray frees objects in batches (about once a second), so during the run the store is a sawtooth
whose height is the objects awaiting their free. The store and the references are therefore judged
on settled samples: at every epoch boundary (pipeline drained) the sampler waits until the store
stops shrinking, then samples; after `--warmup` steps those must not grow (growth = largest settled
value − first settled value, within `--store-tol-mb`, and within 8 for the counts). Private memory
is judged on the in-run samples by its floor: min(last third) − min(first third), within
`--mem-tol-mb`. The least-squares slope per 1,000 steps of every series is printed too: a leak shows
as a steady slope. A series with fewer than 2 samples after warm-up cannot show growth: it is not
judged ("—"), and the command refuses settings that leave a judged series so short.
"""

import os
import time

import click
import numpy as np
import ray

from distgraph.bench._util import json_out_option, machine, table, write_json

MB = 2**20
EPOCH_STEPS = 100  # the command's epoch: a settled sample every EPOCH_STEPS steps


def process_memory(pid):
    """(private bytes, total RSS bytes) of a process on this node: /proc on Linux, psutil's RSS elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = {
                line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.startswith(("VmRSS", "RssAnon"))
            }
        return fields["RssAnon"], fields["VmRSS"]
    except FileNotFoundError:
        import psutil

        rss = psutil.Process(pid).memory_info().rss
        return rss, rss


def object_store():
    """(bytes used, objects) of Ray's object store, summed over the cluster's nodes."""
    from ray._private import internal_api

    state = internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)
    stats = internal_api.get_memory_info_reply(state).store_stats
    return int(stats.object_store_bytes_used), int(stats.num_local_objects)


def driver_refs():
    """ObjectRefs this process holds (Ray's reference table of the driver)."""
    return len(ray._private.worker.global_worker.core_worker.get_all_reference_counts())


class Sampler:
    """Called by the scheduler after every step: a sample every `every` steps, a settled one on request."""

    def __init__(self, pids, every):
        self.pids, self.every = pids, every  # {name: pid}
        self.step, self.samples, self.settled, self.settle_s = 0, [], [], 0.0

    def __call__(self, _t, _parts):
        self.step += 1
        if self.step % self.every == 0:
            self.samples.append(self.sample())

    def sample(self):
        store_bytes, store_objects = object_store()
        out = {"step": self.step, "store_bytes": store_bytes, "store_objects": store_objects, "refs": driver_refs()}
        for name, pid in self.pids.items():
            out[f"private:{name}"], out[f"rss:{name}"] = process_memory(pid)
        return out

    def settle(self, quiet_s=1.5, timeout_s=6.0, poll_s=0.1):
        """Between steps: wait until the store has not shrunk for `quiet_s` (longer than Ray's ~1 s free
        batching period), then sample."""
        start = quiet_since = time.perf_counter()
        low = object_store()[1]
        while time.perf_counter() - quiet_since < quiet_s and time.perf_counter() - start < timeout_s:
            time.sleep(poll_s)
            now = object_store()[1]
            if now < low:
                low, quiet_since = now, time.perf_counter()
        self.settled.append(self.sample())
        self.settle_s += time.perf_counter() - start


def flatness(samples, key, warmup, floor=True):
    """{first, last, growth, slope_per_1000_steps, samples} of one series after `warmup` steps; growth is of
    the floor (min of the last third − min of the first third), or with floor=False of the maximum. With
    fewer than 2 samples after warm-up nothing can have grown: growth and slope are None."""
    after = [s for s in samples if s["step"] >= warmup]
    values = np.array([s[key] for s in after], dtype=float)
    out = {
        "first": float(values[0]) if len(after) else None,
        "last": float(values[-1]) if len(after) else None,
        "growth": None,
        "slope_per_1000_steps": None,
        "samples": len(after),
    }
    if len(after) < 2:
        return out
    steps = np.array([s["step"] for s in after], dtype=float)
    third = max(1, len(values) // 3)
    growth = values[-third:].min() - values[:third].min() if floor else values.max() - values[0]
    return out | {"growth": float(growth), "slope_per_1000_steps": float(np.polyfit(steps, values, 1)[0]) * 1000}


def window_samples(steps, warmup, sample_every, epoch_steps=EPOCH_STEPS):
    """(in-run, settled) samples a run of `steps` steps (a multiple of `epoch_steps`) takes from step
    `warmup` on: in-run ones at every multiple of `sample_every`, settled ones at every epoch end (step 0
    included, both)."""

    def multiples(every):
        return max(0, steps // every - -(-warmup // every) + 1)

    return multiples(sample_every), multiples(epoch_steps)


def check_window(steps, warmup, sample_every, epoch_steps=EPOCH_STEPS):
    """Raise click.BadParameter unless the run is whole epochs and every judged series has ≥ 2 samples
    after warm-up (one sample cannot show growth)."""
    if steps % epoch_steps:
        raise click.BadParameter(
            f"{steps} is not a multiple of {epoch_steps}: the soak runs whole epochs of {epoch_steps} steps",
            param_hint="'--steps'",
        )
    in_run, settled = window_samples(steps, warmup, sample_every, epoch_steps)
    if settled < 2:
        least = -(-warmup // epoch_steps) * epoch_steps + epoch_steps
        raise click.BadParameter(
            f"--steps {steps} with --warmup {warmup} leaves {settled} settled sample(s) after warm-up (one every "
            f"{epoch_steps} steps); at least 2 are needed to judge growth: give --steps ≥ {least} or a smaller --warmup",
            param_hint="'--steps' / '--warmup'",
        )
    if in_run < 2:
        raise click.BadParameter(
            f"--steps {steps}, --warmup {warmup} and --sample-every {sample_every} leave {in_run} sample(s) after "
            "warm-up; at least 2 are needed to judge growth",
            param_hint="'--sample-every'",
        )


def _model(features, hidden, classes, seed):
    import distgraph as dg
    from distgraph import nn

    dg.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))  # fmt: skip


def run_soak(steps=1000, workers=2, sample_every=10, warmup=200, batch=64, epoch_steps=100, seed=0, sync="sync"):
    """Train `steps` steps on Ray in mode `sync` (epochs of `epoch_steps`), sampling memory; returns samples and pids."""
    import distgraph as dg
    import distgraph.nn.functional as F
    from distgraph import optim
    from distgraph.datasets import teacher

    (x, y), _ = teacher(samples=int(epoch_steps * batch / 0.8) + 8, features=64, classes=10, seed=seed)
    x, y = x[: epoch_steps * batch], y[: epoch_steps * batch]
    model = _model(64, 256, 10, seed)
    trainer = dg.Trainer(model, F.cross_entropy, optim.Adam(model.parameters(), lr=1e-3), workers=workers,
                         backend="ray", sync=sync, progress=False, seed=seed)  # fmt: skip
    try:
        trainer.fit((x[: 2 * batch], y[: 2 * batch]), epochs=1, batch_size=batch)  # starts the cluster
        cluster = trainer._cluster
        pids = {"driver": os.getpid()}
        pids.update({f"worker {r}": pid for r, pid in ray.get([w.ping.remote() for w in cluster.group.actors])})
        pids.update({f"store {s}": pid for s, pid in enumerate(ray.get([st.pid.remote() for st in cluster.stores]))})
        sampler = Sampler(pids, sample_every)
        (cluster.async_scheduler or cluster.scheduler).on_worker_stats = sampler
        sampler.samples.append(sampler.sample())
        sampler.settle()
        started = time.perf_counter()
        for _ in range(-(-steps // epoch_steps)):  # one fit per epoch: epoch boundaries are part of the soak
            trainer.fit((x, y), epochs=trainer.epoch + 1, batch_size=batch)
            sampler.settle()
        elapsed = time.perf_counter() - started - sampler.settle_s
        loss = trainer.history.epochs[-1]["loss"]
    finally:
        trainer.close()
    return {
        "samples": sampler.samples, "settled": sampler.settled, "pids": pids, "steps": sampler.step,
        "seconds": elapsed, "final_loss": loss,
    }  # fmt: skip


def verdict(result, warmup, mem_tol_mb=8.0, store_tol_mb=2.0, refs_tol=8):
    """{series: flatness figures, tolerance, flat} — judged: the settled store and references, private
    memory; reported only (flat None): the in-run store and total RSS."""
    samples, settled = result["samples"], result["settled"]
    names = [k.split(":", 1)[1] for k in samples[0] if k.startswith("private:")]
    series = [  # (label, samples, key, floor, tolerance)
        ("store bytes (settled)", settled, "store_bytes", False, store_tol_mb * MB),
        ("store objects (settled)", settled, "store_objects", False, refs_tol),
        ("driver ObjectRefs (settled)", settled, "refs", False, refs_tol),
        *((f"private {n}", samples, f"private:{n}", True, mem_tol_mb * MB) for n in names),
        ("store bytes (in run)", samples, "store_bytes", True, None),
        ("store objects (in run)", samples, "store_objects", True, None),
        *((f"rss {n}", samples, f"rss:{n}", True, None) for n in names),
    ]
    out = {}
    for label, data, key, floor, tol in series:
        f = flatness(data, key, warmup, floor)
        out[label] = f | {"tolerance": tol, "flat": None if tol is None or f["growth"] is None else f["growth"] <= tol}
    return out


def _fmt(key, value):
    if value is None:
        return "—"
    return f"{value / MB:,.2f} MiB" if key.startswith(("rss", "private", "store bytes")) else f"{value:,.0f}"


@click.command("soak")
@click.option(
    "--steps",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help=f"a multiple of {EPOCH_STEPS} (whole epochs)",
)
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True)
@click.option("--sync", "sync", type=click.Choice(["sync", "async"]), default="sync", show_default=True)
@click.option(
    "--sample-every", type=click.IntRange(1), default=10, show_default=True, help="steps between memory samples"
)
@click.option(
    "--warmup", type=click.IntRange(0), default=200, show_default=True, help="steps before the flatness window starts"
)
@click.option("--mem-tol-mb", default=8.0, show_default=True, help="allowed private-memory growth per process")
@click.option("--store-tol-mb", default=2.0, show_default=True, help="allowed object-store growth")
@click.option("--address", default=None, help="Ray cluster to join (default: start a local one)")
@json_out_option("soak")
def command(steps, workers, sync, sample_every, warmup, mem_tol_mb, store_tol_mb, address, json_out):
    """Long Ray run: object store, driver ObjectRefs and every process's RSS stay flat after warm-up."""
    from distgraph.distributed import runtime

    check_window(steps, warmup, sample_every)
    runtime.init(address, num_cpus=None if address else workers)
    result = run_soak(steps, workers, sample_every, warmup, epoch_steps=EPOCH_STEPS, sync=sync)
    figures = verdict(result, warmup, mem_tol_mb, store_tol_mb)
    click.echo(
        f"soak · {result['steps']} {sync} steps · {workers} workers · {result['seconds']:.1f}s "
        f"({result['steps'] / result['seconds']:.0f} steps/s) · final loss {result['final_loss']:.4f} · {machine()}"
    )
    rows = [
        [key, _fmt(key, f["first"]), _fmt(key, f["last"]), _fmt(key, f["growth"]), _fmt(key, f["slope_per_1000_steps"]),
         _fmt(key, f["tolerance"]), {True: "yes", False: "NO", None: "—"}[f["flat"]]]
        for key, f in figures.items()
    ]  # fmt: skip
    click.echo(
        table(["series", f"from step {warmup}", "last", "growth", "slope /1000 steps", "tolerance", "flat"], rows)
    )
    click.echo(
        f"{len(result['samples'])} samples every {sample_every} steps and {len(result['settled'])} settled ones at "
        f"epoch ends, judged from step {warmup}. growth: settled = max − first; in run = min(last third) − min(first "
        "third). private = RssAnon; rss = total, with the object store's touched shared pages"
    )
    write_json(
        json_out,
        {"machine": machine(), "workers": workers, "sync": sync, "warmup": warmup, **result, "figures": figures},
        click.echo,
    )
    if any(f["flat"] is False for f in figures.values()):
        raise click.ClickException("memory grew after warm-up: see the series marked NO")
