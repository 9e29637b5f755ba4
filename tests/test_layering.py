"""DESIGN.md's layering, checked on every module of the package: imports point downward only.

The shared hook (`shared/hooks/layers.py`) knows the layers DESIGN.md draws, but not the modules added
since (`func`, `linalg`, `special`, `distributions`, the Trainer's helpers, the CLI's commands), and it
does not resolve `from distgraph import nn`. This test places every top-level module and package, fails
on one it does not know (so a new module must be placed), and resolves both import forms.
"""

import ast
import pathlib
import sys

import distgraph

ROOT = pathlib.Path(distgraph.__file__).parent

# lower number = lower layer; a module may import only from layers <= its own (DESIGN.md's drawing, top
# to bottom: cli · bench, trainer, distributed, graph, nn · optim · io, autograd, ops, backend)
LAYERS = {
    **dict.fromkeys(("backend", "errors", "dtypes", "_config", "host_memory"), 0),
    # cuda: backend's device queries, and the GPU generator that ops/creation.py keeps
    **dict.fromkeys(("ops", "autograd", "tensor", "functional", "linalg", "special", "testing", "cuda", "backends"), 1),
    "accelerator": 1,  # torch.accelerator over cuda's queries
    **dict.fromkeys(("nn", "optim", "io", "serialization", "data", "utils", "func", "distributions", "datasets"), 2),
    **dict.fromkeys(("graph", "amp", "cuda_amp", "cpu"), 3),
    "distributed": 4,
    **dict.fromkeys(("trainer", "trainer_data", "trainer_options", "trainer_plan", "trainer_schedule"), 5),
    **dict.fromkeys(("history", "config"), 5),
    **dict.fromkeys(("bench", "cli", "cli_graph", "cli_run", "cli_train", "__main__", "__init__", "lazy_attrs"), 6),
}
RAY_ALLOWED = ("distributed", "bench", "cli")  # DESIGN.md: only distributed/ imports ray (entry points may)


def _top_modules():
    return sorted(
        p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    )


def _imported(tree, rel):
    """(line, dotted name) of every distgraph-internal or third-party import, relative ones resolved and
    `from distgraph import x` read as the module x."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["distgraph", *rel[:-1]][: len(rel) + 1 - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "distgraph":
                yield from ((node.lineno, f"distgraph.{a.name}") for a in node.names)
            else:
                yield node.lineno, module


def _violations():
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).parts
        mine = rel[0].removesuffix(".py")
        for line, name in _imported(ast.parse(path.read_text(encoding="utf-8")), rel):
            parts = name.split(".")
            where = f"distgraph/{'/'.join(rel)}:{line}"
            if parts[0] == "ray" and mine not in RAY_ALLOWED:
                out.append(f"{where} imports ray")
            if parts[0] == "cupy" and mine != "backend":
                out.append(f"{where} imports cupy")
            if parts[0] == "distgraph" and len(parts) > 1 and parts[1] in LAYERS and mine != "__init__":
                if LAYERS[parts[1]] > LAYERS[mine]:
                    out.append(f"{where} ({mine}, layer {LAYERS[mine]}) imports {name} (layer {LAYERS[parts[1]]})")
    return out


def test_every_top_level_module_has_a_layer():
    assert [m for m in _top_modules() if m not in LAYERS] == []


def test_imports_point_downward_only():
    assert _violations() == []


def test_the_check_sees_an_upward_import_in_either_form(tmp_path, monkeypatch):
    """The checker itself: both import forms of an upward import, and a relative one, are caught."""
    fake = tmp_path / "distgraph"
    (fake / "ops").mkdir(parents=True)
    (fake / "ops" / "__init__.py").write_text("")
    (fake / "ops" / "bad.py").write_text("from distgraph import trainer\nimport distgraph.nn\nfrom ..graph import ir\n")
    (fake / "special.py").write_text("import ray\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    found = _violations()
    assert [v.split(":")[1].split(" ")[0] for v in found] == ["1", "2", "3", "1"], found
    assert "imports distgraph.trainer (layer 5)" in found[0] and found[3].endswith("imports ray")
