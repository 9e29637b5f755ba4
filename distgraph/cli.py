"""The `distgraph` command: train from YAML, run benchmarks, inspect graphs.

Benchmarks live in `distgraph.bench.<name>` modules, each exposing a click command named `command`;
`distgraph bench NAME` imports only the one asked for, so the CLI starts fast.
"""

import importlib
import pkgutil

import click


class _BenchGroup(click.Group):
    """Discovers `distgraph/bench/*.py` modules lazily."""

    def list_commands(self, ctx):
        import distgraph.bench as pkg

        return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))

    def get_command(self, ctx, name):
        try:
            module = importlib.import_module(f"distgraph.bench.{name}")
        except ModuleNotFoundError:
            return None
        return getattr(module, "command", None)


class _Main(click.Group):
    """Every subcommand's DistgraphError (a bad file, a bad config, a worker that failed) ends the command
    with its one-line message, as click's own usage errors do, instead of a Python traceback."""

    def invoke(self, ctx):
        from distgraph.errors import DistgraphError

        try:
            return super().invoke(ctx)
        except DistgraphError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from None


@click.group(cls=_Main)
@click.version_option(package_name="distgraph")
def main():
    """distgraph: train, benchmark and inspect computation graphs."""


@main.group(cls=_BenchGroup)
def bench():
    """Benchmarks that measure distgraph and its peers side by side and print ratios."""


def _register_optional(module_name, attr):
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("distgraph"):
            return
        raise
    main.add_command(getattr(module, attr))


_register_optional("distgraph.cli_train", "train")
_register_optional("distgraph.cli_graph", "graph")
_register_optional("distgraph.cli_run", "run")

if __name__ == "__main__":
    main()
