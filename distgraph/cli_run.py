"""`distgraph run --workers N SCRIPT [ARGS]...`: a script on N Ray workers, as torchrun or horovodrun
start one process per rank.

Each rank runs the script as `__main__` with `sys.argv = [SCRIPT, *ARGS]`; inside it,
`dg.distributed.rank()`, `world_size()`, `all_reduce`, `DistributedOptimizer`, ... (distributed/loop.py & co.)
see the launch, so a script written with them runs unchanged alone (rank 0 of 1) or under `distgraph run`.
The script is read and compiled here and its code sent to the workers (a worker on another node need not have the file);
its own folder is put on each worker's import path, so modules beside it import where that folder exists
on the worker's node (on other nodes, install them or ship them with a Ray runtime_env). The ranks' prints
show here, prefixed by Ray with the worker's pid.

`--max-restarts K` (torchrun's): when a rank fails or its process dies, every rank is stopped and the script
started again on fresh ones, up to K times; each rank reads the attempt in TORCHELASTIC_RESTART_COUNT (0 first)
and the bound in TORCHELASTIC_MAX_RESTARTS, as under torchrun, to resume from its own checkpoint.
"""

import os

import click


def run_script(path, code, argv):
    """One rank: the script's compiled `code` executed as the `__main__` of `path` with `argv` (→ None); the
    launch sets torchrun's variables around it (distributed/launcher.py)."""
    import sys

    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.argv = [path, *argv]
    try:
        exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})  # noqa: S102
    except SystemExit as e:  # sys.exit() in a script ends its rank, not the worker process Ray runs it in
        if e.code not in (0, None):
            raise RuntimeError(f"{path} exited with status {e.code!r}") from None


@click.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--workers",
    "--nproc-per-node",
    "--nproc_per_node",
    "-np",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="ranks (Ray workers); also torchrun's --nproc-per-node and horovodrun's -np",
)
@click.option("--address", default=None, help="Ray address: auto, host:port or ray://host:port (default: a local Ray)")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda (one GPU per rank)")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option(
    "--bind-to", type=click.Choice(["none", "core"]), default=None, help="core: each rank on cores of its own"
)
@click.option("--timeout", "timeout_s", type=float, default=120.0, show_default=True, help="seconds any wait may take")
@click.option(
    "--max-restarts", "--max_restarts", type=click.IntRange(0), default=0, show_default=True,
    help="start every rank again this many times at most after a failure (torchrun's)",
)  # fmt: skip
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(workers, address, device, cpus_per_worker, bind_to, timeout_s, max_restarts, script, args):
    """Run SCRIPT (with ARGS) on WORKERS ranks that meet in one all-reduce."""
    import distgraph as dg

    with open(script) as f:
        source = f.read()
    try:
        code = compile(source, script, "exec")  # once, here: a syntax error stops it before any worker starts
    except SyntaxError as e:
        raise click.ClickException(f"{script}:{e.lineno}: {e.msg}") from None
    try:  # launch restarts every rank after a failure, up to max_restarts times, saying so on stderr
        dg.distributed.launch(
            run_script, workers, args=(script, code, list(args)), address=address, device=device,
            cpus_per_worker=cpus_per_worker, bind_to=bind_to, timeout_s=timeout_s, max_restarts=max_restarts,
        )  # fmt: skip
    except dg.errors.DistgraphError:
        raise
    except Exception as exc:  # noqa: BLE001 - the script's own error: its rank and traceback, then one line
        for note in getattr(exc, "__notes__", ()):
            click.echo(f"distgraph run: {note}", err=True)
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None  # (one line, as the others)
