"""Timing and reporting helpers shared by every benchmark: robust medians, interleaved peers, tables."""

import json
import os
import platform
import statistics
import time

import click


def machine():
    """One line that says where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} · {os.cpu_count()} cores · {cpu} · Python {platform.python_version()}"


def time_call(fn, repeat=30, warmup=3, inner=1):
    """Median seconds per call of fn() over `repeat` samples of `inner` calls each."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def timed_steps(step, steps, barrier, warmup=3):
    """Seconds from a barrier after `warmup` calls of `step(t)` to the barrier after `steps` more: one rank's
    share of a distributed loop's timing (every rank calls it alike)."""
    for t in range(warmup):
        step(t)
    barrier()
    start = time.perf_counter()
    for t in range(steps):
        step(t)
    barrier()
    return time.perf_counter() - start


def interleaved(fns, repeat=30, warmup=3, inner=1, stat=statistics.median):
    """Seconds per call for each fn in `fns` (dict name->fn), alternating them so noise is shared: the
    median of `repeat` samples, or `stat=min` where other processes' interference, which only adds
    time, swamps the median (two threads on a 2-core machine shared with others)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeat):
        # rotate the order every round: whichever runs right after another library pays for the caches it
        # evicted (seen: the captured step 10 % slower when it followed torch), so every fn takes each place
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[name]
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner)
    return {k: stat(v) for k, v in samples.items()}


def table(headers, rows):
    """A plain-text table (also valid Markdown), as a string."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def _fmt(x):
    if isinstance(x, float):
        if x == 0 or 1e-3 <= abs(x) < 1e5:
            return f"{x:.3g}" if abs(x) < 100 else f"{x:.1f}"
        return f"{x:.3e}"
    return str(x)


class CommaList(click.ParamType):
    """A click type for "1,2,4": a list of positive numbers (`cast`: int or float), so a typo or a zero is a
    usage error naming the option instead of a traceback from int() or a division by zero later."""

    name = "list"

    def __init__(self, cast=int):
        self.cast = cast

    def convert(self, value, param, ctx):
        if isinstance(value, list | tuple):
            return list(value)
        kind = "ints" if self.cast is int else "numbers"
        try:
            items = [self.cast(v) for v in str(value).split(",")]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of positive {kind}", param, ctx)
        if min(items) <= 0:
            self.fail(f"{value!r}: every value must be positive", param, ctx)
        return items


def json_out_option(name):
    """The `--json-out PATH` every benchmark takes (default `bench-out/NAME.json`; "" writes none): one
    name, one place, so a user who has run one benchmark knows where all of them leave their figures. A plot
    or Chrome trace a benchmark makes goes beside it (`beside`). The folder is made and checked before the
    benchmark starts, so a path it cannot write fails at once instead of after minutes of measuring."""
    return click.option(
        "--json-out", default=f"bench-out/{name}.json", show_default=True, callback=writable_file,
        help="write the figures here as JSON (plots and traces beside it); '' for none",
    )  # fmt: skip


def writable_file(ctx, param, path):
    """click callback: the file path `path` can be written (its folder made now), else a usage error."""
    if not path:
        return path
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:  # a file (not a folder) on the way
        raise click.BadParameter(f"cannot make the folder {folder}: a file of that name is in the way") from None
    except OSError as e:
        raise click.BadParameter(f"cannot make the folder {folder}: {e.strerror}") from None
    if os.path.isdir(path) or not os.access(folder, os.W_OK):
        why = "is a folder" if os.path.isdir(path) else f"lies in {folder}, which this user cannot write"
        raise click.BadParameter(f"{path} {why}; give a file path, e.g. {os.path.join(folder, 'out.json')}")
    return path


def beside(json_out, suffix):
    """The path of an artifact written next to the JSON: bench-out/scaling.json → bench-out/scaling.png."""
    return os.path.splitext(json_out or "bench-out/bench.json")[0] + suffix


def write_json(path, payload, echo=None):
    """Write `payload` to `path` (its folder made as needed; nothing when path is empty); `echo` says where."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    if echo is not None:
        echo(f"wrote {path}")
