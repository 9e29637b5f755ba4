"""`distgraph graph show|export FILE`: inspect a saved graph or plan (written by Graph.save / Plan.save).

`show` prints the IR (or the plan) and, with --out, renders it: PNG/SVG through the graphviz `dot`
program when it is installed, the DOT text otherwise. `export` writes DOT or the graph's text.
"""

import os
import shutil
import subprocess

import click


def _load(path):
    from distgraph.graph.ir import FORMAT as GRAPH
    from distgraph.graph.ir import Graph
    from distgraph.graph.plan import Plan
    from distgraph.io import load_as

    def parse(tree):
        return Graph.from_dict(tree) if tree.get("format") == GRAPH else Plan.from_dict(tree)

    return load_as(path, parse, "graph or plan")


@click.group()
def graph():
    """Inspect captured graphs and partition plans."""


@graph.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="render to .png/.svg (needs graphviz) or .dot")
def show(path, out):
    """Print the graph (one line per node) or the plan; optionally render it."""
    obj = _load(path)
    click.echo(str(obj))
    if out:
        click.echo(f"wrote {_render(obj.to_dot(), out)}")


@graph.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["dot", "text"]), default="dot")
def export(path, out, fmt):
    """Write the graph or plan as Graphviz DOT or as text."""
    obj = _load(path)
    _write(out, obj.to_dot() if fmt == "dot" else str(obj))
    click.echo(f"wrote {out}")


def _write(out, text):
    """Write `text` to `out`; a folder that is missing or not writable is a one-line error, not a traceback."""
    try:
        with open(out, "w") as f:
            f.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror}") from None


def _render(dot, out):
    ext = os.path.splitext(out)[1].lstrip(".").lower()
    if ext in ("png", "svg", "pdf") and shutil.which("dot"):
        done = subprocess.run(["dot", f"-T{ext}", "-o", out], input=dot.encode(), capture_output=True)
        if done.returncode:
            raise click.ClickException(f"dot could not write {out}: {done.stderr.decode().strip()}")
        return out
    target = out if ext == "dot" else os.path.splitext(out)[0] + ".dot"
    _write(target, dot)
    return target
