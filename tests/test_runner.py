"""Executing notebooks and building the book, on a tiny temporary book (its own _toc.yml and
one demo notebook, the real _config.yml and static files): papermill with injected parameters,
the hash skip, provenance in the executed copy, hidden setup cells, the status page, a failing
notebook that leaves the previous book in place, the build with -W; and the notebooks'
parameter check. The real notebook list of the repository plays no part, so notebooks can land
freely."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from html import unescape
from pathlib import Path

import nbformat
import pytest

from whypretrain.book import assets, build as book_mod, execute
from whypretrain import cli, layout, presets
from whypretrain.report import notebook
from whypretrain.errors import ParameterError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402  (tests/browser.py: the reader's check)

REPO = Path(__file__).resolve().parents[1]

DEMO_CELLS = [
    ("code", 'preset = "ci"  # a preset name; any parameter of presets.PARAMS may follow',
     ["parameters"]),
    ("code", "from whypretrain.report import notebook, charts\n"
             "params = notebook.notebook_params(preset, globals())\n"
             "charts.setup()", ["setup"]),
    ("code", "print('n =', params['n'], 'tau =', params['tau'])", []),
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
    assets.ensure_assets(REPO, quiet=True)
    (root / "book").mkdir(parents=True)
    (root / "notebooks").mkdir()
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book" / "static", root / "book" / "static")
    (root / "book" / "_assets").symlink_to(REPO / "book" / "_assets", target_is_directory=True)
    (root / "book" / "index.md").write_text(
        "# A tiny book\n\nInline math $a^2 + b^2 = c^2$ and the {doc}`experiments/demo` page.\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/index\nchapters:\n"
                                   "  - file: book/experiments/demo\n"
                                   "  - file: book/status\n")
    nbformat.write(demo_notebook(), str(root / "notebooks" / "demo.ipynb"))
    return root


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The tiny book, executed once with `-p n 5` and built."""
    root = make_book(tmp_path_factory.mktemp("book"))
    status = cli.book("ci", {"n": "5"}, root, check_study=False)  # the demo reads no study
    assert status == 0
    return root


@pytest.fixture
def own_book(book, tmp_path):
    """A copy of the built tiny book, for a test that changes or rebuilds it (the module's
    ``book`` stays as built)."""
    copy = tmp_path / "own"
    shutil.copytree(book, copy, symlinks=True)
    return copy


# --- the notebooks' parameter check (fast) ---------------------------------------------------
def test_notebook_params_reads_injected_names():
    params = notebook.notebook_params("ci", {"tau": 0.1, "n": 7, "In": [], "_": None,
                                             "notebook": notebook, "print": print})
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
    with pytest.raises(ParameterError) as err:
        notebook.notebook_params(preset, names)
    for word in words:
        assert word in str(err.value)
    assert "ParameterError" in err.value._render_traceback_()[0]  # one line in a notebook


def test_notebook_params_reads_folders_from_the_repository_root(tmp_path, monkeypatch):
    """Jupyter starts a kernel in notebooks/: runs/ and results/ must still be the repository's,
    and the kernel's working directory is not changed."""
    (tmp_path / "_toc.yml").write_text("root: x\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    data_root = str(tmp_path.parent / f"{tmp_path.name}-data")  # absolute, outside the root
    params = notebook.notebook_params("ci", {"data_root": data_root})
    assert Path.cwd() == (tmp_path / "notebooks").resolve()
    assert params["workdir"] == str(tmp_path.resolve())
    assert params["data_root"] == data_root  # an absolute path stays as given
    # outside any repository a relative folder stays relative to the working directory
    elsewhere = tmp_path.parent / f"{tmp_path.name}-outside"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert notebook.anchor_paths(presets.resolve("ci"))["workdir"] == "."


def test_notebook_list_follows_the_toc(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for name in ("01-a", "02-b"):
        nbformat.write(demo_notebook(), str(tmp_path / "notebooks" / f"{name}.ipynb"))
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/index\nparts:\n  - caption: X\n    chapters:\n"
        "      - file: book/experiments/02-b\n      - file: book/classroom\n"
        "      - file: book/experiments/01-a.ipynb\n")
    assert layout.notebook_list(tmp_path) == ["02-b", "01-a"]
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/experiments/03-c\n")
    with pytest.raises(FileNotFoundError, match="notebooks/03-c.ipynb"):
        layout.notebook_list(tmp_path)
    assert layout.notebook_list(tmp_path, check=False) == ["03-c"]


def _cells(*specs):
    """Cells from (type, tags, source) triples."""
    out = []
    for kind, tags, source in specs:
        cell = (nbformat.v4.new_code_cell(source) if kind == "code"
                else nbformat.v4.new_markdown_cell(source))
        if tags:
            cell.metadata["tags"] = list(tags)
        out.append(cell)
    return out


def test_setup_cells_are_the_tagged_ones():
    cells = _cells(("markdown", [], "# Title"), ("code", ["setup"], "import x"),
                   ("code", ["parameters"], "preset = 'ci'"),
                   ("code", ["injected-parameters"], "preset = 'ci'"),
                   ("code", [], "params = notebook.notebook_params(preset, globals())"),
                   ("code", [], "chart()"))
    # with a `setup` tag, only tagged cells are hidden: the untagged notebook_params cell shows
    assert execute.setup_cells(cells) == [1, 2, 3]


def test_setup_cells_without_a_setup_tag():
    """Notebooks written before the `setup` tag: code before the parameters cell, and the
    notebook_params call right after it, are setup; the story's cells are not."""
    cells = _cells(("markdown", [], "# Title"), ("code", [], "import x"),
                   ("code", ["parameters"], "preset = 'ci'"),
                   ("code", ["injected-parameters"], "preset = 'ci'"),
                   ("code", [], "params = notebook.notebook_params(preset, globals())"),
                   ("code", [], "chart()"), ("code", [], "notebook_params_table()"))
    assert execute.setup_cells(cells) == [1, 2, 3, 4]
    cells[4].source = "chart(params)"  # the cell after the parameters is the story: shown
    assert execute.setup_cells(cells) == [1, 2, 3]
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    execute.hide_setup(execute.hide_setup(nb))  # twice: the tag is added once
    assert [c.metadata.get("tags", []).count("remove-cell") for c in nb.cells] == \
        [0, 1, 1, 1, 0, 0, 0]
    assert nb.cells[2].metadata["tags"] == ["parameters", "remove-cell"]


def test_environment_names_code_libraries_and_machine():
    env = execute.environment(REPO)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=60).stdout.strip()
    assert env["code"]["commit"] == head and isinstance(env["code"]["dirty"], bool)
    assert set(execute.VERSIONS) <= set(env["versions"])
    assert env["versions"]["torch"] and env["versions"]["papermill"]
    assert env["machine"]["cores"] >= 1 and env["machine"]["cpu"]


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
        assert execute.setup_cells(nb.cells), f"{path.name}: no setup cell to hide"


def test_study_trains_then_analyzes_then_runs_the_book(monkeypatch):
    """The order only: the steps are replaced by recorders (each is tested on its own)."""
    calls = []
    for step in ("train", "analyze_all"):
        monkeypatch.setattr(cli, step, lambda params, step=step: calls.append(
            (step, params["preset"], params["tau"])))
    monkeypatch.setattr(cli, "book",
                        lambda preset, overrides, root: calls.append(("book", preset)) or 0)
    assert cli.study("ci", {"tau": "0.1"}) == 0
    assert calls == [("train", "ci", 0.1), ("analyze_all", "ci", 0.1), ("book", "ci")]
    calls.clear()
    with pytest.raises(ParameterError, match="'tau'"):  # bad value: nothing runs
        cli.study("ci", {"tau": "2"})
    assert calls == []
    assert cli.main(["study", "--preset", "ci", "--set", "tau=2"]) == 2 and calls == []


# --- end to end on the tiny book (slow: kernels and jupyter-book) ----------------------------
@pytest.mark.slow
def test_papermill_injects_parameters_and_book_builds(book):
    executed = nbformat.read(str(book / "book" / "experiments" / "demo.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "n = 5" in injected[0].source
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "n = 5 tau = 0.05" in text
    assert "widgets" in executed.metadata  # widget state, which myst-nb needs
    html = (book / "_build" / "html" / "book" / "experiments" / "demo.html").read_text()
    assert html.count('class="whypretrain-chart"') == 2 and "cdn.jsdelivr" not in html
    assert "_static/wp/widgets/embed-amd.js" in html and "_static/wp/require.js" in html
    assert not (book / "_build" / ".html.next").exists()
    # the footer's years run to this one
    year = time.gmtime().tm_year
    assert f"2024-{year}" in html or (year == 2024 and "2024" in html)


@pytest.mark.slow
def test_executed_copy_records_how_it_was_made(book):
    meta = execute.stored_meta(book / "book" / "experiments" / "demo.ipynb")
    assert meta["preset"] == "ci" and meta["overrides"] == {"n": 5} and len(meta["hash"]) == 64
    assert meta["params"]["n"] == 5 and meta["params"]["tau"] == presets.PARAMS["tau"].default
    assert isinstance(meta["wall_s"], float) and meta["wall_s"] > 0
    assert meta["code"] == execute.code_version(book)
    assert meta["versions"]["whypretrain"] and meta["machine"]["cores"] >= 1
    # the status page shows them
    # as a reader sees it: the page writes "@" as "&#64;" (a CPU's name may hold one)
    status = unescape((book / "_build" / "html" / "book" / "status.html").read_text())
    commit = meta["code"]["commit"]
    assert commit and commit[:12] in status
    assert "n=5" in status and meta["versions"]["torch"] in status
    assert meta["machine"]["cpu"] in status


@pytest.mark.slow
def test_setup_and_parameter_cells_are_hidden_from_readers(book):
    source = nbformat.read(str(book / "notebooks" / "demo.ipynb"), as_version=4)
    assert not any("remove-cell" in c.metadata.get("tags", []) for c in source.cells)
    executed = nbformat.read(str(book / "book" / "experiments" / "demo.ipynb"), as_version=4)
    hidden = [c for c in executed.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert len(hidden) == 3  # parameters, injected parameters, setup: kept in the notebook
    html = (book / "_build" / "html" / "book" / "experiments" / "demo.html").read_text()
    assert "notebook_params" not in html and "preset" not in html
    assert "&#39;whypretrain&#39;" not in html and "'whypretrain'" not in html  # charts.setup()
    assert "n = 5 tau = 0.05" in html


@pytest.mark.slow
def test_unchanged_notebook_is_skipped(own_book, capsys):
    target = own_book / "book" / "experiments" / "demo.ipynb"
    before = target.stat().st_mtime_ns
    status = execute.execute_notebooks(own_book, "ci", {"n": "5"})
    assert status == {"demo": "skipped"} and target.stat().st_mtime_ns == before
    assert "up to date, skipped" in capsys.readouterr().out
    # a different parameter value is a different hash
    other = execute.notebook_hash(own_book / "notebooks" / "demo.ipynb",
                                  presets.resolve("ci", {"n": 6}))
    assert other != json.loads(target.read_text())["metadata"]["whypretrain"]["hash"]


@pytest.mark.slow
def test_failing_notebook_names_itself_and_keeps_the_previous_book(own_book, capsys):
    target = own_book / "book" / "experiments" / "demo.ipynb"
    index = own_book / "_build" / "html" / "index.html"
    before = (target.read_bytes(), index.stat().st_mtime_ns)
    # an override out of range stops before any kernel starts, as in the CLI
    assert cli.main(["book", "--root", str(own_book), "--preset", "ci", "--set", "n=17"]) == 2
    assert "'n'" in capsys.readouterr().err
    # a notebook that sets n = 17 itself stops in its first cell after the parameters
    nb = nbformat.read(str(own_book / "notebooks" / "demo.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\nn = 17"
    nbformat.write(nb, str(own_book / "notebooks" / "demo.ipynb"))
    assert cli.book("ci", {}, own_book, check_study=False) == 1
    message = capsys.readouterr().err
    assert "notebook demo" in message and "code cell 2 (In [3])" in message  # In [2]: injected
    assert "'n' = 17 is outside its range; allowed: [1, 16]" in message
    assert (target.read_bytes(), index.stat().st_mtime_ns) == before
    assert (own_book / "_build" / ".partial" / "demo.ipynb").is_file()


@pytest.mark.slow
def test_broken_page_fails_the_build_and_keeps_the_previous_book(own_book):
    index = own_book / "_build" / "html" / "index.html"
    before = index.stat().st_mtime_ns
    page = own_book / "book" / "index.md"
    text = page.read_text()
    page.write_text(text + "\nA link to {doc}`nowhere`.\n")
    with pytest.raises(book_mod.BuildError, match="nowhere"):
        book_mod.build_book(own_book)
    assert index.stat().st_mtime_ns == before


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
    assert "book/status.html" in pages
    assert (tmp_path / "book__experiments__demo.png").stat().st_size > 10_000
