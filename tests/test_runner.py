"""The runner on a tiny temporary book (its own _toc.yml and one demo notebook, the real
_config.yml and static files): papermill with injected parameters, the hash skip, a failing
notebook that leaves the previous book in place, the build with -W; and the notebooks' parameter
check. The real notebook list of the repository plays no part, so notebooks can land freely."""
from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path

import nbformat
import pytest

from whypretrain import presets, runner

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402  (tests/browser.py: the reader's check)

REPO = Path(__file__).resolve().parents[1]

DEMO_CELLS = [
    ("code", 'preset = "ci"  # a preset name; any parameter of presets.PARAMS may follow',
     ["parameters"]),
    ("code", "from whypretrain import runner, charts\n"
             "params = runner.notebook_params(preset, globals())\n"
             "charts.setup()\n"
             "print('n =', params['n'], 'tau =', params['tau'])", []),
    ("markdown", "The AND interaction: $I(S) = \\sum_{T \\subseteq S} (-1)^{|S|-|T|} v(x_T)$, "
                 "and in display\n\n$$\nv(x_S) = \\sum_{T \\subseteq S} I(T).\n$$", []),
    ("code", "import altair as alt, pandas as pd\n"
             "table = pd.DataFrame({'order': list(range(1, params['n'] + 1)),\n"
             "                      'strength': [1 / k for k in range(1, params['n'] + 1)]})\n"
             "alt.Chart(table, title='Strength by order').mark_line(point=True).encode(\n"
             "    x=alt.X('order:Q', title='order |S|'), y=alt.Y('strength:Q', title='strength'))",
     []),
    ("code", "alt.Chart(table, title='Bars').mark_bar().encode(x='order:O', y='strength:Q')", []),
    ("code", "import ipywidgets as widgets\n"
             "widgets.FloatSlider(value=params['tau'], min=0.01, max=0.5, description='tau')", []),
]


def demo_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source, tags in DEMO_CELLS:
        cell = (nbformat.v4.new_code_cell(source) if kind == "code"
                else nbformat.v4.new_markdown_cell(source))
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("# Demo\n\nA page of the tiny book."))
    return nb


def make_book(root: Path) -> Path:
    """A temporary repository layout: the real _config.yml, static files and fetched assets,
    a tiny _toc.yml and one notebook."""
    runner.ensure_assets(REPO, quiet=True)
    (root / "book").mkdir(parents=True)
    (root / "notebooks").mkdir()
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book" / "static", root / "book" / "static")
    (root / "book" / "_assets").symlink_to(REPO / "book" / "_assets", target_is_directory=True)
    (root / "book" / "index.md").write_text(
        "# A tiny book\n\nInline math $a^2 + b^2 = c^2$ and the {doc}`experiments/demo` page.\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/index\nchapters:\n"
                                   "  - file: book/experiments/demo\n")
    nbformat.write(demo_notebook(), str(root / "notebooks" / "demo.ipynb"))
    return root


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The tiny book, executed once with `-p n 5` and built: (root, output of run_book)."""
    root = make_book(tmp_path_factory.mktemp("book"))
    status = runner.run_book("ci", {"n": "5"}, root)
    assert status == 0
    return root


# --- the notebooks' parameter check (fast) ---------------------------------------------------
def test_notebook_params_reads_injected_names():
    params = runner.notebook_params("ci", {"tau": 0.1, "n": 7, "In": [], "_": None,
                                           "runner": runner, "print": print}, chdir=False)
    assert params["tau"] == 0.1 and params["n"] == 7 and params["preset"] == "ci"
    assert params["epochs"] == presets.PRESETS["ci"]["epochs"]


@pytest.mark.parametrize("preset, names, words", [
    ("ci", {"n": 17}, ["'n'", "17", "16"]),
    ("ci", {"tau": 1.5}, ["'tau'", "(0.0, 1.0)"]),
    ("ci", {"tau": 0.0}, ["'tau'", "(0.0, 1.0)"]),
    ("ci", {"n": "many"}, ["'n'", "int"]),
    ("nope", {}, ["'nope'", "classroom", "default"]),
    ("ci", {"tua": 0.1}, ["'tua'", "tau"]),
    ("ci", {"baseline": "grey"}, ["'baseline'", "zero", "blur"]),
])
def test_notebook_params_names_the_bad_parameter(preset, names, words):
    with pytest.raises(runner.ParameterError) as err:
        runner.notebook_params(preset, names, chdir=False)
    for word in words:
        assert word in str(err.value)
    assert "ParameterError" in err.value._render_traceback_()[0]  # one line in a notebook


def test_notebook_list_follows_the_toc(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for name in ("01-a", "02-b"):
        nbformat.write(demo_notebook(), str(tmp_path / "notebooks" / f"{name}.ipynb"))
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/index\nparts:\n  - caption: X\n    chapters:\n"
        "      - file: book/experiments/02-b\n      - file: book/classroom\n"
        "      - file: book/experiments/01-a.ipynb\n")
    assert runner.notebook_list(tmp_path) == ["02-b", "01-a"]
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/experiments/03-c\n")
    with pytest.raises(FileNotFoundError, match="notebooks/03-c.ipynb"):
        runner.notebook_list(tmp_path)


def test_real_notebooks_are_stored_clean():
    """Every source notebook: no outputs, kernel python3, a `parameters` cell led by preset."""
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, \
                    f"{path.name}: stored with outputs"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs one cell tagged 'parameters'"
        first = [ln for ln in tagged[0].source.splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")][0]
        assert first.replace(" ", "").startswith("preset="), f"{path.name}: preset first"


def test_study_trains_then_analyzes_then_runs_the_book(monkeypatch):
    """The order only: training and analysis are replaced by recorders in sys.modules for this
    test (their real modules are tested by their own tests)."""
    calls = []
    for mod, fn in (("training", "train_study"), ("study", "compute_all")):
        fake = types.ModuleType(f"whypretrain.{mod}")
        setattr(fake, fn, lambda params, fn=fn: calls.append((fn, params["preset"])))
        monkeypatch.setitem(sys.modules, f"whypretrain.{mod}", fake)
    monkeypatch.setattr(runner, "run_book",
                        lambda preset, overrides, root: calls.append(("run_book", preset)) or 0)
    assert runner.study("ci", {"tau": "0.1"}) == 0
    assert calls == [("train_study", "ci"), ("compute_all", "ci"), ("run_book", "ci")]
    calls.clear()
    assert runner.study("ci", {"tau": "2"}) == 2 and calls == []  # bad value: nothing runs


# --- the runner end to end on the tiny book (slow: kernels and jupyter-book) -----------------
@pytest.mark.slow
def test_papermill_injects_parameters_and_book_builds(book):
    executed = nbformat.read(str(book / "book" / "experiments" / "demo.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "n = 5" in injected[0].source
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "n = 5 tau = 0.05" in text
    meta = executed.metadata["whypretrain"]
    assert meta["preset"] == "ci" and meta["overrides"] == {"n": 5} and len(meta["hash"]) == 64
    assert "widgets" in executed.metadata  # widget state, which myst-nb needs
    html = (book / "_build" / "html" / "book" / "experiments" / "demo.html").read_text()
    assert html.count('class="whypretrain-chart"') == 2 and "cdn.jsdelivr" not in html
    assert "_static/wp/widgets/embed-amd.js" in html and "_static/wp/require.js" in html
    assert not (book / "_build" / ".html.next").exists()


@pytest.mark.slow
def test_unchanged_notebook_is_skipped(book, capsys):
    target = book / "book" / "experiments" / "demo.ipynb"
    before = target.stat().st_mtime_ns
    status = runner.execute_notebooks(book, "ci", {"n": "5"})
    assert status == {"demo": "skipped"} and target.stat().st_mtime_ns == before
    assert "up to date, skipped" in capsys.readouterr().out
    # a different parameter value is a different hash
    other = runner.notebook_hash(book / "notebooks" / "demo.ipynb", presets.resolve("ci", {"n": 6}))
    assert other != json.loads(target.read_text())["metadata"]["whypretrain"]["hash"]


@pytest.mark.slow
def test_failing_notebook_names_itself_and_keeps_the_previous_book(book, capsys):
    target = book / "book" / "experiments" / "demo.ipynb"
    index = book / "_build" / "html" / "index.html"
    before = (target.read_bytes(), index.stat().st_mtime_ns)
    # an override out of range stops before any kernel starts, as in the CLI
    assert runner.run_book("ci", {"n": "17"}, book) == 1
    assert "'n'" in capsys.readouterr().err
    # a notebook that sets n = 17 itself stops in its first cell after the parameters
    nb = nbformat.read(str(book / "notebooks" / "demo.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\nn = 17"
    nbformat.write(nb, str(book / "notebooks" / "demo.ipynb"))
    try:
        assert runner.run_book("ci", {}, book) == 1
        message = capsys.readouterr().err
        assert "notebook demo" in message and "code cell 2 (In [3])" in message  # In [2]: injected
        assert "'n' = 17 is outside its range [1, 16]" in message
        assert (target.read_bytes(), index.stat().st_mtime_ns) == before
        assert (book / "_build" / ".partial" / "demo.ipynb").is_file()
    finally:
        cell.source = DEMO_CELLS[0][1]
        nbformat.write(nb, str(book / "notebooks" / "demo.ipynb"))


@pytest.mark.slow
def test_broken_page_fails_the_build_and_keeps_the_previous_book(book):
    index = book / "_build" / "html" / "index.html"
    before = index.stat().st_mtime_ns
    page = book / "book" / "index.md"
    text = page.read_text()
    page.write_text(text + "\nA link to {doc}`nowhere`.\n")
    try:
        with pytest.raises(runner.BuildError, match="nowhere"):
            runner.build_book(book)
        assert index.stat().st_mtime_ns == before
    finally:
        page.write_text(text)


@pytest.mark.slow
def test_reader_sees_charts_widget_and_math_offline(book, tmp_path):
    report = browser.check_book(book / "_build" / "html", screenshots=tmp_path,
                                shot_pages=["book/experiments/demo.html"])
    assert browser.outside_requests(report) == 0, browser.table(report)
    assert not browser.problems(report), browser.problems(report)
    pages = {p["page"]: p for p in report["pages"]}
    demo = pages["book/experiments/demo.html"]
    assert demo["charts"] == {"total": 2, "drawn": 2, "errors": []}
    assert demo["widgets"] == {"total": 1, "rendered": 1}
    assert demo["math"]["total"] == 2 and demo["math"]["rendered"] == 2
    assert pages["book/index.html"]["math"]["rendered"] == 1
    assert (tmp_path / "book__experiments__demo.png").stat().st_size > 10_000


def test_notebook_params_moves_to_the_repository_root(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: x\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    runner.notebook_params("ci", {})
    assert Path.cwd() == tmp_path.resolve()
