"""The package's layers: imports point down only, lazy imports (inside functions) included.

From the bottom: the base modules (parameters, errors, provenance, layout, distributed),
then ``train``, ``engine``, ``measures``, ``study``, ``report``, ``book``; ``cli`` sits on top.
A module may import its own subpackage, the base, and any subpackage below its own.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "whypretrain"
BASE = {"presets", "errors", "provenance", "layout", "distributed", "integrity"}
LAYERS = ("train", "engine", "measures", "study", "report", "book")
TOP = {"cli", "__main__"}


def rank(module: str) -> int:
    """0 for the base, 1.. for the subpackages in LAYERS, above them the command line."""
    head = module.split(".")[0]
    if head in BASE or head == "":
        return 0
    if head in LAYERS:
        return 1 + LAYERS.index(head)
    assert head in TOP, f"{module}: neither base, layer nor command line"
    return len(LAYERS) + 1


def imports(path: Path, lib: Path = LIB) -> set[str]:
    """Every module of the package that ``path`` imports, relative to the package, anywhere in
    the file (function bodies included)."""
    parts = list(path.relative_to(lib).with_suffix("").parts)
    package = parts[:-1]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
                   for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: nothing is imported at run time
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("whypretrain"):
                module = node.module[len("whypretrain"):].lstrip(".")
            else:
                continue
            if module in ("", *LAYERS):
                found.update(f"{module}.{a.name}".lstrip(".") for a in node.names)
            else:
                found.add(module)
        elif isinstance(node, ast.Import):
            found.update(a.name[len("whypretrain."):] for a in node.names
                         if a.name.startswith("whypretrain."))
    return found


def modules() -> list[Path]:
    return sorted(p for p in LIB.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.relative_to(LIB).as_posix())
def test_imports_point_down(path):
    here = ".".join(path.relative_to(LIB).with_suffix("").parts)
    upward = [m for m in imports(path)
              if m != "__version__" and rank(m) > rank(here)]
    assert not upward, f"{here} imports from above its layer: {sorted(upward)}"


def test_every_module_sits_in_a_layer():
    for path in modules():
        rank(".".join(path.relative_to(LIB).with_suffix("").parts))


def test_the_walk_sees_a_lazy_upward_import(tmp_path):
    """The check would fail on a base module that imports the report inside a function."""
    fake = tmp_path / "presets.py"
    fake.write_text("def f():\n    from whypretrain.report.findings import X\n    return X\n")
    assert imports(fake, lib=tmp_path) == {"report.findings"}
    assert rank("report.findings") > rank("presets")
