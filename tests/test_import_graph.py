"""The repository's import graph has no cycle, function-level imports included, and every module imports
on its own in a fresh interpreter (no script edits sys.path to get there)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The importable packages (installed by `pip install -e .`) and the scripts on top of them.
PACKAGES = ("modeling_crcgs", "dataset_scripts", "training", "evaluation")
GRAPH_FOLDERS = (*PACKAGES, "benchmarks")


def module_files(root: Path, folders: tuple[str, ...]) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file under ``folders`` (a package's ``__init__``
    is the package itself); folders without ``__init__.py`` (``evaluation/crcgs_map``, loaded by path) are
    left out."""
    modules: dict[str, Path] = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            packages = [root.joinpath(*parts[:i]) for i in range(1, len(parts))]
            if folder != "benchmarks" and not all((p / "__init__.py").is_file() for p in packages):
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports anywhere in its file (``ast.walk``: top level,
    functions, methods, ``if TYPE_CHECKING`` blocks). ``from p import x`` counts as ``p.x`` when that is a
    module, else as ``p``."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]
            targets = [t for t in targets if t in known][:1] or [prefix]
        else:
            continue
        for target in targets:
            parts = target.split(".")  # the longest known prefix: `import a.b.c` imports a.b.c
            match = next(
                (".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in known), None
            )
            if match is not None and match != name:
                found.add(match)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def import_graph(root: Path, folders: tuple[str, ...]) -> dict[str, set[str]]:
    modules = module_files(root, folders)
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def test_the_walker_finds_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import f\n")
    (package / "b.py").write_text("def f():\n    from pkg.c import g\n    return g\n")
    (package / "c.py").write_text("def g():\n    from . import a\n    return a\n")
    (package / "d.py").write_text("import pkg.a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_import_cycle_in_the_repository():
    graph = import_graph(REPO_ROOT, GRAPH_FOLDERS)
    assert {"modeling_crcgs.modeling_crcgs", "modeling_crcgs.retrieval.metrics", "training.train"} <= set(
        graph
    )
    assert "modeling_crcgs.adapters" in graph["modeling_crcgs.modeling_crcgs"]  # edges are found
    assert import_cycles(graph) == []


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(
    "importer,forbidden",
    [
        ("modeling_crcgs", ("dataset_scripts", "training", "evaluation", "benchmarks")),
        ("dataset_scripts", ("training", "evaluation", "benchmarks")),
        ("training", ("evaluation", "benchmarks")),
        ("evaluation", ("training", "benchmarks")),
    ],
)
def test_layers_point_down(importer, forbidden):
    """Lower layers never import the ones above them."""
    graph = import_graph(REPO_ROOT, GRAPH_FOLDERS)
    wrong = [
        (m, t) for m, ts in graph.items() if _in(m, importer) for t in ts if any(_in(t, f) for f in forbidden)
    ]
    assert wrong == []


def test_model_classes_never_import_retrieval():
    graph = import_graph(REPO_ROOT, GRAPH_FOLDERS)
    retrieval = "modeling_crcgs.retrieval"
    wrong = [
        (m, t)
        for m, ts in graph.items()
        if _in(m, "modeling_crcgs") and not _in(m, retrieval)
        for t in ts
        if _in(t, retrieval)
    ]
    assert wrong == []


@pytest.mark.slow
def test_every_module_imports_in_a_fresh_interpreter(tmp_path):
    modules = sorted(module_files(REPO_ROOT, PACKAGES))
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    # From another folder: the packages resolve through the install, not the working directory.
    completed = subprocess.run(
        [sys.executable, "-c", code, *modules], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
