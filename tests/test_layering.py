"""The package's layering: data flows one way, lower layers never import higher ones.

config/core → data → models → training → properties → evaluation/workflows → cli

Every ``import`` of an ``ase_surftune`` module anywhere in a file counts (function-level
imports too: they hide a dependency, they don't remove it). Package ``__init__`` files
that only re-export are exempt for their own subpackage. ``KNOWN`` lists the violations
that remain (issue 15 removes them); a new one fails this test, and a fixed one must be
taken off the list.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ase_surftune"

#: layer index by first component under ``ase_surftune`` (higher = may import lower)
LAYERS: dict[str, int] = {
    "core": 0, "_compat": 0,
    "data": 1,
    "models": 2,
    "training": 3,
    "properties": 4,
    "evaluation": 5, "demo": 5, "active": 5,
    "cli": 6, "__main__": 6,
}

#: (importer, imported) pairs that still break the layering, with the reason
KNOWN: dict[tuple[str, str], str] = {
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    name = ".".join(parts)
    return name.removesuffix(".__init__")


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the top-level package re-exports the public API
    return LAYERS.get(parts[1])


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("ase_surftune"):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("ase_surftune"))
    return out


def _violations() -> set[tuple[str, str]]:
    found = set()
    for path in PKG.rglob("*.py"):
        me = _module_name(path)
        mine = _layer(me)
        if mine is None:
            continue
        for target in _imports(path):
            theirs = _layer(target)
            if theirs is not None and theirs > mine:
                found.add((me, target))
    return found


def test_every_module_has_a_layer():
    top = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
           if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert top - {"__init__"} <= set(LAYERS), sorted(top - set(LAYERS) - {"__init__"})


def test_no_new_upward_imports():
    new = sorted(_violations() - set(KNOWN))
    assert not new, "lower layer imports a higher one: " + "; ".join(f"{a} -> {b}"
                                                                     for a, b in new)


def test_known_violations_are_still_real():
    fixed = sorted(set(KNOWN) - _violations())
    assert not fixed, f"fixed, take them off KNOWN: {fixed}"


def test_the_library_never_imports_the_cli():
    bad = sorted((m, t) for m, t in _violations() if t.startswith("ase_surftune.cli"))
    assert not bad, bad


def _module_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from pkg import mod`` names ``pkg.mod``)."""
    mods = {_module_name(p): p for p in PKG.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for me, path in mods.items():
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.startswith("ase_surftune"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out.add(full if full in mods else resolve(node.module))
            elif isinstance(node, ast.Import):
                out.update(resolve(a.name) for a in node.names
                           if a.name.startswith("ase_surftune"))
        # a package __init__ re-exporting its own submodules is not a cycle
        graph[me] = {t for t in out if t and t != me and not me.startswith(t + ".")
                     and not (path.name == "__init__.py" and t.startswith(me + "."))}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_import_cycles():
    cycles = _cycles(_module_graph())
    assert not cycles, "import cycles: " + " | ".join(" <-> ".join(c) for c in cycles)
