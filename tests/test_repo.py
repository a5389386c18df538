"""The repository stands on its own: no tracked text file cites a file outside it.

A document named in text (``something.md`` / ``something.txt``) must be a tracked file (by its
path from the repository root or from the citing file's folder, or as the last part of a
tracked path, as code that builds paths names it) or a page the build writes; the method page
is always cited by its path, ``book/method.md``. Paths into the development machine's shared
folders are never allowed.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from whypretrain.layout import STATUS_PAGE

REPO = Path(__file__).resolve().parents[1]

SELF = "tests/test_repo.py"  # it spells out what it looks for
OUTSIDE = [re.compile(p) for p in (r"\.\./" + "shared", "/" + "work/", "shared" + r"/docs")]
# A document named in text: a path of word characters, dots, dashes and slashes ending .md/.txt.
CITED = re.compile(r"(?<![\w./-])((?:\.{1,2}/)*[\w-]+(?:[./][\w-]+)*\.(?:md|txt))(?![\w/])")
METHOD = "book/method.md"


def tracked() -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return out.stdout.splitlines()


def _text(rel: str) -> str | None:
    try:
        return (REPO / rel).read_text(encoding="utf-8")
    except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
        return None  # binary (images) or a submodule


def test_no_file_cites_a_path_outside_the_repository():
    files = tracked()
    names = set(files) | {STATUS_PAGE}
    assert METHOD in names
    bad = []
    for rel in files:
        text = _text(rel)
        if text is None or rel == SELF:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for pattern in OUTSIDE:
                if pattern.search(line):
                    bad.append(f"{rel}:{number}: {line.strip()[:100]}")
            for cited in CITED.findall(line):
                if "://" in line and f"/{cited}" in line:
                    continue  # part of a URL
                if Path(cited).name == Path(METHOD).name and cited != METHOD:
                    bad.append(f"{rel}:{number}: cites {cited}; the method page is {METHOD}")
                    continue
                here = Path(rel).parent / cited
                if not ({Path(cited).as_posix(), here.as_posix()} & names
                        or (REPO / here).resolve().is_file()
                        or any(n.endswith("/" + cited) for n in names)):
                    bad.append(f"{rel}:{number}: cites {cited}, which is not in the repository")
    assert not bad, "\n".join(bad)


def test_the_check_finds_what_it_must():
    """The patterns above on made-up lines: the bad ones are caught, the good ones are not."""
    def cites(line):
        return CITED.findall(line)

    assert cites("Definitions: method.md, section 2") == ["method.md"]
    assert cites("(book/method.md, section 3)") == ["book/method.md"]
    assert cites("see ../docs/method.md") == ["../docs/method.md"]
    assert cites("parameters in README.md.") == ["README.md"]
    assert cites("no file here: methods, mdash, a.mdx") == []
    assert any(p.search("see " + "../" + "shared/docs/x") for p in OUTSIDE)
    assert any(p.search("open " + "/" + "work/main/README") for p in OUTSIDE)


# A tab or a form feed in prose, code or a formula is the mark of an escape slip: "\text" or
# "\frac" written in a normal Python string becomes a tab + "ext" or a form feed + "rac".
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
PLAIN = (".md", ".py", ".ipynb", ".toml", ".yml", ".yaml", ".cfg", ".txt", ".json")


def test_no_text_file_holds_a_control_character():
    bad = []
    for rel in tracked():
        text = _text(rel) if rel.endswith(PLAIN) else None
        if text is None:
            continue
        for number, line in enumerate(text.split("\n"), 1):
            if CONTROL.search(line.rstrip("\r")):
                bad.append(f"{rel}:{number}: {line.strip()[:80]!r}")
    assert not bad, "\n".join(bad)
    assert CONTROL.search("c_{\text{and}}") and CONTROL.search("1 + \frac12")
    assert not CONTROL.search(r"c_{\text{and}} + \frac12")


def import_graph() -> dict[str, set[str]]:
    """Module -> the library modules it imports, lazy (function-level) imports included; the
    names are dotted below the package (``study.pipeline``)."""
    from test_layers import LIB, imports
    names = {".".join(p.relative_to(LIB).with_suffix("").parts) for p in LIB.rglob("*.py")
             if p.name != "__init__.py"}

    def known(name):  # "engine.exact.RULES" -> "engine.exact"
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name
    return {m: {known(d) for d in imports(LIB / (m.replace(".", "/") + ".py"))} - {"", m}
            for m in names}


def test_the_library_has_no_import_cycle():
    """Data flows one way: walking the imports (lazy ones too) never comes back."""
    graph = import_graph()
    assert graph["study.pipeline"] and "measures.knowledge" in graph["measures.nulls"]
    state: dict[str, str] = {}

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph[module]):
            assert state.get(dep) != "open", " -> ".join([*path, module, dep])
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = "done"
    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def _definitions(kind):
    import ast
    lib = REPO / "lib" / "whypretrain"
    for path in sorted(lib.rglob("*.py")):
        name = ".".join(path.relative_to(lib).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, kind):
                yield f"{name}.{node.name}", node.end_lineno - node.lineno + 1


def test_no_library_function_is_longer_than_60_lines():
    import ast
    lengths = dict(_definitions((ast.FunctionDef, ast.AsyncFunctionDef)))
    assert len(lengths) > 100                       # the walk sees the library
    assert {k: v for k, v in lengths.items() if v > 60} == {}


def test_no_library_class_is_longer_than_150_lines():
    import ast
    lengths = dict(_definitions(ast.ClassDef))
    assert len(lengths) > 20
    assert {k: v for k, v in lengths.items() if v > 150} == {}


# what a notebook's code cell may not hold: it chooses from the study result and draws
COMPUTING = ("For", "While", "ListComp", "DictComp", "SetComp", "GeneratorExp", "FunctionDef",
             "Lambda", "ClassDef")


def notebook_constructs(source: str) -> set[str]:
    import ast
    return {type(node).__name__ for node in ast.walk(ast.parse(source))} & set(COMPUTING)


def test_the_check_sees_loops_and_definitions():
    assert notebook_constructs("for x in y: pass") == {"For"}
    assert notebook_constructs("d = {k: v for k, v in t.items()}") == {"DictComp"}
    assert notebook_constructs("f = lambda x: x\ndef g(): pass") == {"Lambda", "FunctionDef"}
    assert notebook_constructs("result.part('near/summary')") == set()


def test_notebook_cells_only_choose_and_draw():
    import json
    found = {}
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                bad = notebook_constructs("".join(cell["source"]))
                if bad:
                    found[f"{path.name} {cell['id']}"] = sorted(bad)
    assert found == {}
