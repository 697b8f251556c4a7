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
