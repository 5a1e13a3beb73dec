"""The package's shape, read from its source with ``ast``: import layers, cycles, sizes, no pickle.

Layers, top to bottom (an import may point down, or sideways within its layer)::

    top        gunicorn_smartspawn (the package's __init__), __main__, hook.plugin, hook.settings
    control    gunicorn_smartspawn.control.*
    master     gunicorn_smartspawn.master.*
    preloader  gunicorn_smartspawn.preloader.*
    worker     gunicorn_smartspawn.worker.*
    shared     errors, events, logging, _version, _compat, _linux, wire.*, scoreboard,
               config.*, forksafety.*, hook (its empty __init__), hook.state

Every import counts, wherever it is: at module level, in a function (a
deferred import is still a dependency) and under ``if TYPE_CHECKING:``.

TYPE_CHECKING imports obey the layers too: an annotation that names a class
of an upper layer ties the lower layer to that layer's interface just as a
runtime import does (rename the class and the lower layer stops type
checking). They are exempt from the *cycle* check only: they never run, so
they cannot leave a module half-initialised, and naming the object that
composes you (``Reaper`` annotating its ``SmartArbiter``) is what they are for.

The cycle check looks at what runs when a module is imported: module-level
statements, including those inside ``try``, ``if`` and class bodies, but not
function bodies (a deferred import is how a legitimate back-reference is
written). The implicit import of a parent package (``import a.b.c`` runs
``a/__init__`` and ``a/b/__init__``) is not an edge: a package ``__init__``
that imports its own submodules would otherwise always be a cycle.

A module the layer table does not know fails the test: a new module must be
placed in a layer on purpose.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import pytest

ROOT: Final = "gunicorn_smartspawn"
PACKAGE_DIR: Final = Path(__file__).resolve().parents[2] / ROOT

MAX_MODULE_LINES: Final = 400
MAX_FUNCTION_LINES: Final = 50

LAYER_ORDER: Final = ("top", "control", "master", "preloader", "worker", "shared")
RANK: Final = {name: rank for rank, name in enumerate(LAYER_ORDER)}

#: Single modules, by full name.
MODULE_LAYERS: Final[dict[str, str]] = {
    ROOT: "top",
    f"{ROOT}.__main__": "top",
    f"{ROOT}.hook.plugin": "top",
    f"{ROOT}.hook.settings": "top",
    f"{ROOT}.hook.pool_settings": "top",
    f"{ROOT}.hook.refork_settings": "top",
    f"{ROOT}.hook.warmup_settings": "top",
    f"{ROOT}.hook.typos": "top",
    f"{ROOT}.hook": "shared",  # a docstring: importing hook.state runs it
    f"{ROOT}.hook.state": "shared",
    **{
        f"{ROOT}.{leaf}": "shared"
        for leaf in ("errors", "events", "logging", "_version", "_compat", "_linux", "scoreboard")
    },
}
#: Whole subpackages (the package's __init__ and everything below it).
PACKAGE_LAYERS: Final[dict[str, str]] = {
    f"{ROOT}.control": "control",
    f"{ROOT}.master": "master",
    f"{ROOT}.preloader": "preloader",
    f"{ROOT}.worker": "worker",
    f"{ROOT}.config": "shared",
    f"{ROOT}.wire": "shared",
    f"{ROOT}.forksafety": "shared",
}

Kind = Literal["module", "function", "type_checking"]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module of this package
    line: int
    kind: Kind

    def where(self) -> str:
        return f"{self.source}:{self.line} ({self.kind}-level) imports {self.target}"


# -- reading the package ----------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_files() -> dict[str, Path]:
    """Every module of the package, found on disk (so a directory without __init__.py is not missed)."""
    files = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py")) if "__pycache__" not in p.parts}
    assert f"{ROOT}.master.arbiter" in files and f"{ROOT}.control.handlers" in files, "the walk must recurse"
    return files


FILES: Final = package_files()
MODULES: Final = frozenset(FILES)


def is_package(module: str) -> bool:
    return FILES[module].name == "__init__.py"


def layer_of(module: str) -> str | None:
    if module in MODULE_LAYERS:
        return MODULE_LAYERS[module]
    for package, layer in PACKAGE_LAYERS.items():
        if module == package or module.startswith(package + "."):
            return layer
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportFinder(ast.NodeVisitor):
    """Every import of this package in one module, each with where it runs."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.found: list[Import] = []
        self.unresolved: list[str] = []
        self._function_depth = 0
        self._type_checking_depth = 0

    def _kind(self) -> Kind:
        if self._type_checking_depth:
            return "type_checking"
        return "function" if self._function_depth else "module"

    def _add(self, target: str, line: int) -> None:
        if target != ROOT and not target.startswith(ROOT + "."):
            return
        if target not in MODULES:  # a module that moved or vanished: named, never skipped
            self.unresolved.append(f"{self.module}:{line} imports {target}, which is not a module of the package")
            return
        self.found.append(Import(self.module, target, line, self._kind()))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._in_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._in_function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._in_function(node)

    def _in_function(self, node: ast.AST) -> None:
        self._function_depth += 1
        self.generic_visit(node)
        self._function_depth -= 1

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_checking_depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self._type_checking_depth -= 1
        for stmt in node.orelse:  # the else branch of TYPE_CHECKING is what runs
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._absolute(node)
        targets: dict[str, None] = {}  # one edge per module, however many names come from it
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.setdefault(submodule if alias.name != "*" and submodule in MODULES else base, None)
        for target in targets:
            self._add(target, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("gunicorn_smartspawn.x") and __import__("gunicorn_smartspawn.x")
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self._add(first.value, node.lineno)
        self.generic_visit(node)

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = self.module if is_package(self.module) else self.module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{node.module}" if node.module else package


def _parse(module: str) -> ast.Module:
    return ast.parse(FILES[module].read_text(encoding="utf-8"), filename=str(FILES[module]))


def scan() -> tuple[list[Import], list[str]]:
    imports: list[Import] = []
    unresolved: list[str] = []
    for module in sorted(MODULES):
        finder = _ImportFinder(module)
        finder.visit(_parse(module))
        imports += finder.found
        unresolved += finder.unresolved
    return imports, unresolved


IMPORTS, UNRESOLVED = scan()


def report(title: str, lines: list[str]) -> str:
    text = f"{title} ({len(lines)}):\n  " + "\n  ".join(lines)
    print(text)  # shown with -s, and in the failure's captured output
    return text


# -- the finder itself ------------------------------------------------------------------------------


def _finder_on(source: str, module: str = f"{ROOT}.master.reaper") -> list[tuple[str, Kind]]:
    finder = _ImportFinder(module)
    finder.visit(ast.parse(source))
    assert not finder.unresolved, finder.unresolved
    return [(i.target, i.kind) for i in finder.found]


def test_the_finder_sees_every_form_of_import() -> None:
    source = """
import gunicorn_smartspawn.wire
import os, gunicorn_smartspawn.errors as errs
from gunicorn_smartspawn import _linux, events
from gunicorn_smartspawn import on_event
from . import pool
from ..control import status
from .children import Child
from typing import TYPE_CHECKING
import typing
if TYPE_CHECKING:
    from gunicorn_smartspawn.master.arbiter import SmartArbiter
else:
    from gunicorn_smartspawn import scoreboard
if typing.TYPE_CHECKING:
    import gunicorn_smartspawn.control.server
try:
    from gunicorn_smartspawn.config import apps
except ImportError:
    pass
class Later:
    from gunicorn_smartspawn.hook import state
def deferred():
    from gunicorn_smartspawn.worker import Worker
    import importlib
    importlib.import_module("gunicorn_smartspawn.preloader.fork")
    return lambda: __import__("gunicorn_smartspawn.control.cli")
"""
    assert _finder_on(source) == [
        (f"{ROOT}.wire", "module"),
        (f"{ROOT}.errors", "module"),
        (f"{ROOT}._linux", "module"),
        (f"{ROOT}.events", "module"),
        (ROOT, "module"),  # a name from the package's __init__: an import of the top layer
        (f"{ROOT}.master.pool", "module"),
        (f"{ROOT}.control.status", "module"),
        (f"{ROOT}.master.children", "module"),
        (f"{ROOT}.master.arbiter", "type_checking"),
        (f"{ROOT}.scoreboard", "module"),
        (f"{ROOT}.control.server", "type_checking"),
        (f"{ROOT}.config.apps", "module"),
        (f"{ROOT}.hook.state", "module"),
        (f"{ROOT}.worker", "function"),
        (f"{ROOT}.preloader.fork", "function"),
        (f"{ROOT}.control.cli", "function"),
    ]


def test_the_finder_names_imports_of_modules_that_do_not_exist() -> None:
    finder = _ImportFinder(f"{ROOT}.master.pool")
    finder.visit(ast.parse("from gunicorn_smartspawn.master.nowhere import Thing\nimport gunicorn_smartspawn.gone\n"))
    assert finder.found == []
    assert len(finder.unresolved) == 2 and "master.nowhere" in finder.unresolved[0]


def test_the_layer_check_would_catch_an_upward_import() -> None:
    # worker -> master is up: the same comparison test_no_import_points_up_a_layer makes
    edge = Import(f"{ROOT}.worker.runtime", f"{ROOT}.master.arbiter", 1, "function")
    assert _upward(edge)
    assert not _upward(Import(f"{ROOT}.master.arbiter", f"{ROOT}.worker.runtime", 1, "module"))
    assert not _upward(Import(f"{ROOT}.master.reaper", f"{ROOT}.master.arbiter", 1, "type_checking"))


def test_the_cycle_check_would_catch_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["d"]]


# -- the package ------------------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in sorted(MODULES) if layer_of(m) is None]
    assert not unplaced, report("modules in no layer (add them to MODULE_LAYERS or PACKAGE_LAYERS)", unplaced)


def test_every_import_of_the_package_names_a_module_that_exists() -> None:
    assert not UNRESOLVED, report("imports of modules that do not exist", UNRESOLVED)


def test_every_package_directory_has_an_init() -> None:
    # without one a directory is a namespace package: it imports, but pkgutil.walk_packages
    # (and every tool built on it) does not see it, and nothing marks it as part of this package
    directories = {p.parent for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(str(d.relative_to(PACKAGE_DIR.parent)) for d in directories if not (d / "__init__.py").exists())
    assert not missing, report("package directories without __init__.py", missing)


def _upward(edge: Import) -> bool:
    source, target = layer_of(edge.source), layer_of(edge.target)
    return source is not None and target is not None and RANK[target] < RANK[source]


def test_no_import_points_up_a_layer() -> None:
    upward = [
        f"{e.where()}: {layer_of(e.source)} -> {layer_of(e.target)}" for e in IMPORTS if _upward(e)
    ]
    assert not upward, report("imports that point up a layer (allowed: " + " -> ".join(LAYER_ORDER) + ")", upward)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_at_module_level() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    lines: dict[tuple[str, str], int] = {}
    for edge in IMPORTS:
        if edge.kind == "module" and edge.target != edge.source:
            graph[edge.source].add(edge.target)
            lines.setdefault((edge.source, edge.target), edge.line)
    found = []
    for component in cycles(graph):
        members = set(component)
        inside = sorted(f"{s}:{lines[(s, t)]} -> {t}" for s in component for t in graph[s] if t in members)
        found.append(" | ".join(inside))
    assert not found, report("import cycles at module level", found)


# -- sizes ----------------------------------------------------------------------------------------------


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_module_over_the_line_limit() -> None:
    long = [
        f"{FILES[m].relative_to(PACKAGE_DIR.parent)}: {n} lines"
        for m in sorted(MODULES)
        if (n := len(FILES[m].read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, report(f"modules over {MAX_MODULE_LINES} lines", long)


def test_no_function_over_the_line_limit() -> None:
    long = []
    for module in sorted(MODULES):
        for fn in _functions(_parse(module)):
            first = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
            length = (fn.end_lineno or fn.lineno) - first + 1
            if length > MAX_FUNCTION_LINES:
                long.append(f"{FILES[module].relative_to(PACKAGE_DIR.parent)}:{fn.lineno} {fn.name}(): {length} lines")
    assert not long, report(f"functions over {MAX_FUNCTION_LINES} lines", long)


# -- no pickle ------------------------------------------------------------------------------------------

UNSAFE_DESERIALISERS: Final = frozenset({"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"})


def unsafe_imports(source: str) -> list[str]:
    """Where ``source`` imports a module that can run code while loading data."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or "", *(a.name for a in node.names)] if not node.level else [a.name for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        bad = sorted({n.split(".")[0] for n in names} & UNSAFE_DESERIALISERS)
        if bad:
            found.append(f"line {getattr(node, 'lineno', 0)}: {', '.join(bad)}")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "import os, pickle as p",
        "from pickle import loads",
        "from multiprocessing.reduction import pickle",
        "def f():\n    import marshal",
        "import importlib\nimportlib.import_module('cloudpickle')",
        "__import__('_pickle')",
        "import shelve.x",
    ],
)
def test_the_pickle_scan_finds(source: str) -> None:
    assert unsafe_imports(source)


@pytest.mark.parametrize("source", ["import json", "from . import pickle_free", "x = 'pickle'", "import picklejar"])
def test_the_pickle_scan_lets_pass(source: str) -> None:
    assert unsafe_imports(source) == []


def test_no_module_of_the_package_imports_pickle() -> None:
    # JSON only on every channel (docs/architecture.md): no module, at any depth, may even import a pickle
    scanned = sorted(FILES.values())
    assert len({p.parent for p in scanned}) >= 8, "the scan must reach every subpackage"
    found = [
        f"{p.relative_to(PACKAGE_DIR.parent)} {hit}" for p in scanned for hit in unsafe_imports(p.read_text(encoding="utf-8"))
    ]
    assert not found, report("modules that import a pickle-like deserialiser", found)


# -- the tests' side of it ---------------------------------------------------------------------------------


def test_no_test_skips_when_the_package_fails_to_import() -> None:
    # pytest.importorskip("gunicorn_smartspawn...") turns a broken import of our own code into a skip
    found = []
    for path in sorted((PACKAGE_DIR.parent / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name == "importorskip" and str(node.args[0].value).split(".")[0] == ROOT:
                found.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{node.lineno} importorskip({node.args[0].value!r})")
    assert not found, report("tests that skip instead of failing when the package does not import", found)


if __name__ == "__main__":  # pragma: no cover - a quick listing: python tests/unit/test_layers.py
    for edge in IMPORTS:
        print(f"{layer_of(edge.source):>9} {edge.where()}", file=sys.stdout)
