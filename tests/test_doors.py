"""The one-way doors: the domain imports no surface, no cloud SDK and no web framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("slack_bolt", "slack_sdk", "boto3", "botocore", "googleapiclient", "google.cloud", "azure",
             "kubernetes", "qdrant_client", "pagerduty", "starlette", "fastapi", "uvicorn", "bot", "integrations")

PROBE = """
import json, pkgutil, importlib, sys
import runbooks
for mod in pkgutil.walk_packages(runbooks.__path__, "runbooks."):
    importlib.import_module(mod.name)
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_every_runbooks_module_loads_no_surface_or_sdk() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = json.loads(out.stdout)
    assert "runbooks.engine" in loaded and "runbooks.workflows" in loaded, "the probe imported the whole domain"
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []


def test_help_path_imports_no_sdk_and_no_engine() -> None:
    probe = "import json, sys\nfrom bot import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n" \
            "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = json.loads(out.stdout.splitlines()[-1])
    heavy = [m for m in loaded if m.split(".")[0] in {"dbos", "sqlalchemy", "boto3", "pydantic", "slack_bolt"}]
    assert heavy == []


# ------------------------------------------------------------------------------------------ the import graph


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, *, within: str) -> set[str]:
    """Every module of package `within` that `path` imports — at the top, inside functions, under
    TYPE_CHECKING, relative or absolute — written out; the implicit import of a parent package is not counted."""
    import ast

    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from runbooks import grammar`
    known = {module_name(p) for p in (ROOT / within).rglob("*.py")}
    return {name for name in found if name in known and name != here}


def cycles_in(package: str) -> list[list[str]]:
    """The import cycles among `package`'s modules (one per strongly connected component, as a path)."""
    graph = {module_name(p): imports_of(p, within=package) for p in (ROOT / package).rglob("*.py")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_of_runbooks_has_no_cycle() -> None:
    assert "runbooks.engine" in {module_name(p) for p in (ROOT / "runbooks").rglob("*.py")}
    assert "runbooks.store" in imports_of(ROOT / "runbooks" / "engine.py", within="runbooks")
    assert cycles_in("runbooks") == []


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path: Path, monkeypatch: Any) -> None:
    """The check above cannot pass vacuously: a loop through a function-level import is found."""
    package = tmp_path / "loop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from loop import b\n")
    (package / "b.py").write_text("def f():\n    from loop.a import x\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert cycles_in("loop") == [["loop.a", "loop.b"]]
    assert imports_of(package / "c.py", within="loop") == {"loop.a"}


COMPOSITION_ROOT = "bot.wiring"
"""The one module under bot/ that builds the store (and hands it to the engine and the providers)."""


def store_reaches(path: Path) -> list[str]:
    """Where a module imports `runbooks.store` or reads some object's `.store`, as 'line: what'."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            names += [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else []
            found += [f"{node.lineno}: import {n}" for n in names if n == "runbooks.store"
                      or n.startswith("runbooks.store.")]
        elif isinstance(node, ast.Attribute) and node.attr == "store":
            found.append(f"{node.lineno}: .store")
    return found


def test_surfaces_read_through_the_query_port_not_the_store() -> None:
    """bot/ reads through `engine.queries` and keeps its own marks in `engine.marks`; only the composition root
    builds the store."""
    reaches = {module_name(p): store_reaches(p) for p in (ROOT / "bot").rglob("*.py")}
    assert reaches.pop(COMPOSITION_ROOT), "the composition root builds the store (or this check is broken)"
    assert {name: found for name, found in reaches.items() if found} == {}
