"""The package's imports go one way: no cycle between any of its modules, and ``graph/`` (what
the model is) imports nothing that runs or uses it (``executor/``, compaction, exporters, DPAP,
...).

Every ``import`` / ``from ... import`` of ``dpap_deploy`` counts, at module level or inside a
function (a function-level import hides a cycle from Python, not from the design). A module's
imports are those of its own file plus its package's ``__init__`` (importing
``dpap_deploy.graph.trace`` runs ``dpap_deploy/graph/__init__.py`` first).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "dpap_deploy"

# what graph/ may import from the package: itself and the leaves below it
GRAPH_MAY_IMPORT = ("dpap_deploy.graph", "dpap_deploy.errors", "dpap_deploy.notices")
# Imports that go the wrong way, each with what removes it (test_transitional_edges_exist fails
# once one is gone, so the list only shrinks): none left.
TRANSITIONAL: set[tuple[str, str]] = set()


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(mod: str, is_pkg: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_edges(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: {dpap_deploy modules it imports}}``, every import in its file counted."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        out = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module)
                # ``from . import x`` / ``from .pkg import mod``: a submodule when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:          # ``a.b.C`` -> the module ``a.b``
                    t = t.rpartition(".")[0]
                if t.startswith("dpap_deploy") and t != mod:
                    out.add(t)
        edges[mod] = out
    for mod in files:              # importing a module first runs its packages' __init__
        parent = mod.rpartition(".")[0]
        for t in list(edges[mod]):
            p = t.rpartition(".")[0]
            while p.startswith("dpap_deploy.") and p != parent and p != mod \
                    and not mod.startswith(p + "."):
                edges[mod].add(p)
                p = p.rpartition(".")[0]
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    """``graph/`` importing anything but itself and the package's leaves."""
    return sorted(f"{m} imports {t}" for m, ts in edges.items()
                  if m.startswith("dpap_deploy.graph") for t in ts
                  if not t.startswith(GRAPH_MAY_IMPORT))


@pytest.fixture(scope="module")
def all_edges():
    return import_edges()


@pytest.fixture(scope="module")
def edges(all_edges):
    return {m: {t for t in ts if (m, t) not in TRANSITIONAL} for m, ts in all_edges.items()}


def test_no_import_cycle(edges):
    assert edges["dpap_deploy.executor.run"] >= {"dpap_deploy.graph"}, "the walker sees imports"
    found = cycles(edges)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_transitional_edges_exist(all_edges):
    gone = sorted(f"{m} -> {t}" for m, t in TRANSITIONAL if t not in all_edges.get(m, ()))
    assert not gone, "no longer imported, drop from TRANSITIONAL: " + "; ".join(gone)


def test_graph_imports_nothing_above_it(edges):
    bad = upward(edges)
    assert not bad, "graph/ must not import what runs or uses it: " + "; ".join(bad)


def test_checker_finds_a_function_level_cycle(tmp_path):
    pkg = tmp_path / "dpap_deploy"
    (pkg / "graph").mkdir(parents=True)
    (pkg / "executor").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "graph" / "__init__.py").write_text("from .run import go\n")
    (pkg / "graph" / "run.py").write_text("def go():\n    from ..executor import run\n")
    (pkg / "executor" / "__init__.py").write_text("")
    (pkg / "executor" / "run.py").write_text("from ..graph import go\n")
    e = import_edges(pkg)
    assert cycles(e) and "dpap_deploy.graph.run imports dpap_deploy.executor" in upward(e)
